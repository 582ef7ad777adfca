"""Memory: PSS and peak RSS of all the NF's processes at 0, 1 and N workers.

    python bench/bench_memory.py --workers 1,2 --packets 300000 --out bench/results/2core

Writes memory.json (and memory.png with matplotlib) in --out; `nfos bench` runs this and the
other measurements in one pass (see docs/benchmarks.md).
"""

from nfos.bench import script_main

if __name__ == "__main__":
    script_main("memory", doc=__doc__)
