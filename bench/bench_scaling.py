"""Throughput vs workers for every example NF, with the sequential mode and the plain peers.

    python bench/bench_scaling.py --workers 1,2 --packets 300000 --out bench/results/scaling-2core.json

Writes the JSON and a PNG beside it (nfos.bench.plot_scaling).
"""

from __future__ import annotations

import argparse
import os

from nfos.bench import NFS, plot_scaling, sweep, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nf", default="all", help="comma-separated names, or all: " + ", ".join(NFS))
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    names = list(NFS) if a.nf == "all" else a.nf.split(",")
    doc = sweep(names, [int(w) for w in a.workers.split(",")], a.packets, a.repeat)
    doc["command"] = "python bench/bench_scaling.py " + " ".join(
        f"--{k} {v}" for k, v in vars(a).items())
    write_json(doc, a.out)
    try:
        print("wrote", plot_scaling(doc, os.path.splitext(a.out)[0] + ".png"))
    except ImportError:
        print("matplotlib not installed: JSON only")


if __name__ == "__main__":
    main()
