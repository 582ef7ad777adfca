"""Where a worker's time goes: `perf record` attached to every worker of one replay.

    python bench/perf_workers.py NF [--workers N] [--seconds 2] [--packets 300000] [--rebalance 5ms]
                                    [--top 25] [--out DIR]

Runs the NF of ``nfos bench`` (its trace and parameters) at N workers, pinned one per CPU,
for about ``--seconds`` of work per worker (laps), attaches ``perf record -g`` (software
clock: no hardware counters needed) to each worker process (named ``nfos-w<slot>``) once it
is up, and prints per worker the top symbols, with the runtime's own counters (CPU share of
the worker's busy time, minor page faults, preemptions, packets).  ``--out DIR`` keeps the
perf.data files.  Needs /usr/bin/perf (``perf_event_paranoid`` allowing it, or root).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "src"))
from bench.harness.configs import EXAMPLES, NFS, TRACES  # noqa: E402
from bench.harness.measure import default_cpus, laps_for  # noqa: E402
from nfos.params import Duration  # noqa: E402
from nfos.runtime.replay import replay  # noqa: E402


def worker_pids(n: int, timeout: float = 60.0) -> dict[int, int]:
    """slot -> pid of the processes named nfos-w<slot> (children of this process)."""
    found: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(found) < n and time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if comm.startswith("nfos-w") and ppid == os.getpid():
                found[int(comm[6:])] = int(pid)
        time.sleep(0.01)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nf", choices=list(NFS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--rebalance", default="0")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out")
    args = ap.parse_args()
    perf = shutil.which("perf")
    if not perf:
        sys.exit("perf is not installed")
    nf = NFS[args.nf]
    trace = TRACES[nf.trace](args.packets)
    path = os.path.join(EXAMPLES, nf.file)
    rate1 = replay(path, trace, workers=1, params=nf.params).stats["throughput_pps"]
    laps = laps_for(args.seconds, rate1, args.workers, len(trace))
    rebalance = int(Duration(args.rebalance)) if args.rebalance not in ("", "0") else 0
    out = args.out or tempfile.mkdtemp(prefix="nfos-perf-")
    os.makedirs(out, exist_ok=True)
    recorders: list[subprocess.Popen] = []

    def attach() -> None:
        for slot, pid in sorted(worker_pids(args.workers).items()):
            recorders.append(subprocess.Popen([perf, "record", "-g", "-F", "2000", "-p", str(pid), "-o",
                                               os.path.join(out, f"perf-w{slot}.data")],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    t = threading.Thread(target=attach, daemon=True)
    t.start()
    r = replay(path, trace, workers=args.workers, params=nf.params, laps=laps, cpus=default_cpus(),
               rebalance_ns=rebalance)
    t.join()
    for p in recorders:
        p.wait(timeout=30)
    print(f"{args.nf}: {args.workers} workers, {laps} laps of {len(trace):,} packets, "
          f"{r.stats['throughput_pps'] / 1e6:.3f} Mpps, imbalance {r.stats['imbalance']:.3f}")
    for slot, c in enumerate(r.slots):
        share = c["cpu_ns"] / c["busy_ns"] if c["busy_ns"] else 0
        print(f"\n== worker {slot}: {c['packets_in']:,} packets, busy {c['busy_ns'] / 1e9:.2f} s, CPU "
              f"{c['cpu_ns'] / 1e9:.2f} s ({share:.0%}), {c['cpu_ns'] / max(1, c['packets_in']):.0f} ns CPU/packet, "
              f"{c['minor_faults']} minor faults, {c['preempted']} preemptions")
        data = os.path.join(out, f"perf-w{slot}.data")
        if os.path.exists(data):
            rep = subprocess.run([perf, "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio",
                                  "-g", "none"], capture_output=True, text=True)
            lines = [ln for ln in rep.stdout.splitlines() if "%" in ln and not ln.startswith("#")]
            print("\n".join(lines[: args.top]))
    print(f"\nperf data: {out}")


if __name__ == "__main__":
    main()
