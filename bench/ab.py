"""A/B speed of two source trees of nfos on one machine: is a refactor as fast as before?

    python bench/ab.py --a /path/to/old/checkout --b . --out bench/results/ab/<name>.json

Each tree's C core must be built in place (``python setup.py build_ext --inplace``); each
run is ``python -m nfos run`` in a subprocess with ``PYTHONPATH=<tree>/src``, so each side
runs exactly its own code.  For every example NF (its ``nfos bench`` trace and parameters) at
every worker count, the runs of A and B alternate (A B B A A B ...), so drift of the machine
hits both sides alike; each point is the saturation throughput of a whole trace (workers'
own clocks, loading excluded), or with ``--laps N`` of the trace replayed N times (a replay
in a subprocess of that tree, workers pinned one per CPU: points of seconds, not
milliseconds).  The result holds every run, the median of each side, the
ratio B/A of the medians and its spread (the ratios of the k-th fastest runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # this checkout's bench/
from bench.harness.configs import machine  # noqa: E402

#: name -> (example file, generator arguments, --param values); the `nfos bench` set
NFS: dict[str, tuple[str, list[str], list[str]]] = {
    "firewall": ("firewall.py", ["caida", "--flows", "20000", "--reverse", "0.5"], []),
    "policer": ("policer.py", ["caida", "--flows", "20000", "--reverse", "0.5"], []),
    "nat": ("nat.py", ["caida", "--flows", "20000", "--reverse", "0"], ["public_ips=57"]),
    "bridge": ("bridge.py", ["bridge", "--macs", "256", "--flow-packets", "2000"], ["refresh_interval=60s"]),
    "bridge_refresh0": ("bridge.py", ["bridge", "--macs", "256", "--flow-packets", "2000"], ["refresh_interval=0"]),
    "maglev": ("maglev.py", ["lb", "--backends", "3"], []),
    "anti_ddos_0.1ms": ("anti_ddos.py", ["antiddos"], ["staleness=0.1ms"]),
    "dummy_ro": ("dummy.py", ["caida", "--flows", "20000", "--reverse", "0.5"], ["mode=ro"]),
}


def nfos(tree: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.path.join(tree, "src"))
    return subprocess.run([sys.executable, "-m", "nfos", *args], env=env, capture_output=True, text=True,
                          check=True, timeout=600)


#: a replay in laps, run by each tree's own code (argv: NF file, trace, workers, laps, params...)
LAPS_RUN = """
import os, sys
from nfos.io.capture import read_capture
from nfos.runtime.replay import replay
nf, trace, workers, laps, *params = sys.argv[1:]
r = replay(nf, read_capture(trace), workers=int(workers), params=params, laps=int(laps),
           cpus=sorted(os.sched_getaffinity(0)) if int(workers) else None)
print(r.stats["throughput_pps"])
"""


def throughput(tree: str, nf: str, trace: str, workers: int, params: list[str], tmp: str, laps: int = 1) -> float:
    if laps > 1:
        env = dict(os.environ, PYTHONPATH=os.path.join(tree, "src"))
        out = subprocess.run([sys.executable, "-c", LAPS_RUN, os.path.join(tree, "examples", nf), trace, str(workers),
                              str(laps), *params], env=env, capture_output=True, text=True, check=True, timeout=600)
        return float(out.stdout.split()[-1])
    stats = os.path.join(tmp, "s.json")
    nfos(tree, "run", os.path.join(tree, "examples", nf), "--in", trace, "--workers", str(workers), "-q",
         "--stats-json", stats, *[a for p in params for a in ("--param", p)])
    with open(stats) as f:
        return float(json.load(f)["throughput_pps"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="the reference tree (before)")
    ap.add_argument("--b", default=ROOT, help="the tree under test (after) [default: this checkout]")
    ap.add_argument("--nf", default=",".join(NFS), help="NFs, comma-separated")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--packets", type=int, default=400_000)
    ap.add_argument("--repeat", type=int, default=6, help="runs per side and point (even: A B B A ...)")
    ap.add_argument("--laps", type=int, default=1, help="replay the trace this many times per run")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    trees = {"a": os.path.abspath(args.a), "b": os.path.abspath(args.b)}
    workers = [int(w) for w in args.workers.split(",")]
    doc: dict[str, object] = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "packets": args.packets, "laps": args.laps,
        "trees": {k: {"path": v, "commit": subprocess.run(["git", "-C", v, "rev-parse", "--short", "HEAD"],
                                                          capture_output=True, text=True).stdout.strip()}
                  for k, v in trees.items()},
        "points": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nf.split(","):
            nf, gen, params = NFS[name]
            trace = os.path.join(tmp, f"{name}.pcapng")
            nfos(trees["b"], "gen", *gen, "--packets", str(args.packets), "--out", trace)
            for w in workers:
                runs: dict[str, list[float]] = {"a": [], "b": []}
                order = ["a", "b", "b", "a"] * (args.repeat // 2 + 1)
                for side in order[: 2 * args.repeat]:
                    runs[side].append(throughput(trees[side], nf, trace, w, params, tmp, args.laps))
                ma, mb = statistics.median(runs["a"]), statistics.median(runs["b"])
                ranked = [b / a for a, b in zip(sorted(runs["a"]), sorted(runs["b"]), strict=True)]
                point = {"nf": name, "workers": w, "a_pps": runs["a"], "b_pps": runs["b"], "a_median": ma,
                         "b_median": mb, "ratio": mb / ma, "ratio_spread": [min(ranked), max(ranked)]}
                doc["points"].append(point)
                print(f"{name:16s} w={w}  A {ma / 1e6:6.3f}  B {mb / 1e6:6.3f} Mpps  B/A {mb / ma:5.3f} "
                      f"[{min(ranked):.3f} .. {max(ranked):.3f}]", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
