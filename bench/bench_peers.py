"""nfos vs the Python peers: the plain sequential ones and the multiprocessing ones for NAT and bridge.

    python bench/bench_peers.py --workers 1,2 --packets 300000 --out bench/results/2core

Writes peers.json (and peers.png with matplotlib) in --out; `nfos bench` runs this and the
other measurements in one pass (see docs/benchmarks.md).
"""

from nfos.bench import script_main

if __name__ == "__main__":
    script_main("peers", doc=__doc__)
