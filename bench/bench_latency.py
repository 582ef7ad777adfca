"""Paced mode and latency percentiles (p50/p99/p99.9): writes what is and is not measured, and why.

    python bench/bench_latency.py --workers 1,2 --packets 300000 --out bench/results/2core

Writes latency.json (and latency.png with matplotlib) in --out; `nfos bench` runs this and the
other measurements in one pass (see docs/benchmarks.md).
"""

from nfos.bench import script_main

if __name__ == "__main__":
    script_main("latency", doc=__doc__)
