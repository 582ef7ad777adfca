"""The price of transactions: 1 worker vs the sequential mode (--workers 0).

    python bench/bench_stm.py --workers 1,2 --packets 300000 --out bench/results/2core

Writes stm_overhead.json (and stm_overhead.png with matplotlib) in --out; `nfos bench` runs this and the
other measurements in one pass (see docs/benchmarks.md).
"""

from nfos.bench import script_main

if __name__ == "__main__":
    script_main("stm_overhead", doc=__doc__)
