"""What this machine's CPUs give two independent processes: the ceiling of 2 ÷ 1 workers.

    python bench/ceiling.py [--nf firewall,policer] [--seconds 3] [--repeat 4] [--out FILE]

Per NF (its ``nfos bench`` trace and parameters), interleaved in rounds:

* ``alone``: nfos at 1 worker, the whole replay (control process and worker) pinned on the
  first CPU, the other CPU idle;
* ``pair``: two such replays at once, one pinned on each CPU: two independent processes
  that share nothing (no STM object, no clock line, no control process), so their summed
  rate over ``alone`` is what the two CPUs give any 2-worker runtime;
* ``two_workers``: nfos at 2 workers, pinned one per CPU (its control process unpinned);
* ``peer_alone`` and ``peer_pair``: the same for the NF's plain Python peer.

Every run does at least ``--seconds`` of work (the trace replayed in laps); rates are the
workers' own (nfos: its throughput; the peer: its run() calls).  ``ceiling`` is the median
pair sum over the median ``alone``; ``two_over_one`` is nfos at 2 workers over ``alone``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "src"))
from bench.harness.configs import EXAMPLES, NFS, TRACES, load_peer, machine  # noqa: E402

PACKETS = 300_000


def _child(kind: str, name: str, trace_file: str, cpu: int, laps: int) -> None:
    """One pinned run after a "go" on stdin; prints its rate (packets/s) as JSON."""
    os.sched_setaffinity(0, {cpu})
    nf = NFS[name]
    with open(trace_file, "rb") as f:
        trace = pickle.load(f)
    if kind == "peer":
        peer = load_peer(nf.peer)
    print("ready", flush=True)
    sys.stdin.readline()
    if kind == "nfos":
        from nfos.runtime.replay import replay
        r = replay(os.path.join(EXAMPLES, nf.file), trace, workers=1, params=nf.params, laps=laps, cpus=[cpu])
        pps = r.stats["throughput_pps"]
    else:
        t0 = time.perf_counter()
        for _ in range(laps):
            peer.run(trace.frames, trace.devs, trace.times_ns, **nf.peer_params)
        pps = laps * len(trace) / (time.perf_counter() - t0)
    print(json.dumps({"pps": pps}), flush=True)


def _concurrent(kind: str, name: str, trace_file: str, cpus: list[int], laps: int) -> list[float]:
    """Rates of len(cpus) pinned runs started together."""
    procs = [subprocess.Popen([sys.executable, __file__, "--child", kind, name, trace_file, str(c), str(laps)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for c in cpus]
    for p in procs:   # loaded and waiting
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        assert p.stdout is not None
        out.append(json.loads(p.stdout.readline())["pps"])
        p.wait()
    return out


def _two_workers(name: str, trace: Any, cpus: list[int], laps: int) -> float:
    from nfos.runtime.replay import replay
    nf = NFS[name]
    return replay(os.path.join(EXAMPLES, nf.file), trace, workers=2, params=nf.params, laps=laps,
                  cpus=cpus).stats["throughput_pps"]


def measure(name: str, seconds: float, repeat: int, cpus: list[int]) -> dict[str, Any]:
    nf = NFS[name]
    trace = TRACES[nf.trace](PACKETS)
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
        pickle.dump(trace, f)
        trace_file = f.name
    try:
        # laps for `seconds` of work: from one short run of each
        rate = _concurrent("nfos", name, trace_file, cpus[:1], 1)[0]
        laps = max(1, math.ceil(seconds * rate / PACKETS))
        peer_laps = 0
        if nf.peer:
            peer_laps = max(1, math.ceil(seconds * _concurrent("peer", name, trace_file, cpus[:1], 1)[0] / PACKETS))
        runs: dict[str, list[Any]] = {k: [] for k in ("alone", "pair", "two_workers", "peer_alone", "peer_pair")}
        for r in range(repeat):
            steps = [("alone", lambda: _concurrent("nfos", name, trace_file, cpus[:1], laps)[0]),
                     ("pair", lambda: _concurrent("nfos", name, trace_file, cpus[:2], laps)),
                     ("two_workers", lambda: _two_workers(name, trace, cpus[:2], 2 * laps))]
            if nf.peer:
                steps += [("peer_alone", lambda: _concurrent("peer", name, trace_file, cpus[:1], peer_laps)[0]),
                          ("peer_pair", lambda: _concurrent("peer", name, trace_file, cpus[:2], peer_laps))]
            if r % 2:
                steps.reverse()   # interleaved: A B C / C B A / ...
            for key, fn in steps:
                runs[key].append(fn())
                print(f"{name:10} round {r + 1}/{repeat}  {key:12} {runs[key][-1]}", file=sys.stderr)
    finally:
        os.unlink(trace_file)

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    alone, pair = med(runs["alone"]), med([sum(p) for p in runs["pair"]])
    out: dict[str, Any] = {"laps": laps, "packets_per_run": laps * PACKETS, "runs": runs,
                           "alone_pps": alone, "pair_sum_pps": pair, "two_workers_pps": med(runs["two_workers"]),
                           "ceiling": pair / alone, "two_over_one": med(runs["two_workers"]) / alone,
                           "pair_spread": [min(map(sum, runs["pair"])) / alone, max(map(sum, runs["pair"])) / alone],
                           "two_over_one_spread": [min(runs["two_workers"]) / alone, max(runs["two_workers"]) / alone]}
    if nf.peer:
        pa, pp = med(runs["peer_alone"]), med([sum(p) for p in runs["peer_pair"]])
        out |= {"peer_laps": peer_laps, "peer_alone_pps": pa, "peer_pair_sum_pps": pp, "peer_ceiling": pp / pa}
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, name, trace_file, cpu, laps = sys.argv[2:7]
        _child(kind, name, trace_file, int(cpu), int(laps))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nf", default="firewall,policer")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--out")
    a = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("bench/ceiling.py: needs 2 CPUs, this process may use " + str(cpus))
    result = {"machine": machine(), "command": "python bench/ceiling.py " + " ".join(sys.argv[1:]),
              "cpus": cpus[:2], "nfs": {}}
    for name in a.nf.split(","):
        r = measure(name, a.seconds, a.repeat, cpus)
        result["nfs"][name] = r
        peer = f"; plain peer: ceiling {r['peer_ceiling']:.2f}" if "peer_ceiling" in r else ""
        print(f"{name:10} 1 worker alone {r['alone_pps'] / 1e6:.3f} Mpps; two independent 1-worker replays: "
              f"x{r['ceiling']:.2f} [{r['pair_spread'][0]:.2f}-{r['pair_spread'][1]:.2f}]; nfos 2 workers: "
              f"x{r['two_over_one']:.2f} [{r['two_over_one_spread'][0]:.2f}-{r['two_over_one_spread'][1]:.2f}]{peer}")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
        print("wrote", a.out)


if __name__ == "__main__":
    main()
