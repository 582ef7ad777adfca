"""Batching: the example NFs with batches of 1 vs 32 packets per transaction (the paper: +34%).

    python bench/bench_batching.py --workers 1,2 --packets 300000 --out bench/results/2core

Writes batching.json (and batching.png with matplotlib) in --out; `nfos bench` runs this and the
other measurements in one pass (see docs/benchmarks.md).
"""

from nfos.bench import script_main

if __name__ == "__main__":
    script_main("batching", doc=__doc__)
