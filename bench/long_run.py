"""Long runs are flat (issue 13, point 6): millions of packets through the NAT and the bridge
with expiry active, streamed (never the whole trace in memory), sampling every process's
memory and file descriptors, the arena's bump pointer and the allocators.

    python bench/long_run.py --nf nat,bridge --packets 10000000 --json bench/results/long-runs-2core/long_runs.json

The trace is a few generated pieces (different seeds: different flows / hosts) replayed one
after another with their timestamps shifted, so a piece's flows come back only after their
mappings, sessions and MAC leases expired (the timeouts are set short): the run keeps
creating and expiring state.  Frames are injected into the workers' rings (Session.inject:
the data ring is reused as they are consumed); each worker gets a clock tick after every
piece (its expiry sweep) and the control process runs the periodic housekeeping (the
allocators' lease reclaiming) at the trace's time.

Flat means, after a warm-up (the first `warmup` fraction of the packets): every process's
RSS within +-5 % of its mean, the same number of open file descriptors, the same arena
bump pointer (nothing allocated), and every allocator's allocated + free == capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, "src") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "src"))


@dataclass
class NFSpec:
    path: str
    params: list[str]
    allocators: tuple[str, ...]   # nf.state attributes that are Allocators
    piece: Any                    # (packets, seed) -> Trace

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]


def _nat_piece(packets: int, seed: int):
    from nfos.io.gen import gen_caida

    return gen_caida(packets * 2 // 3, max(1, packets // 30), reverse=0.5, rate=1e6, seed=seed)


def _bridge_piece(packets: int, seed: int):
    from nfos.io.gen_bridge import gen_bridge

    return gen_bridge(packets, macs=2048, flow_packets=50, rate=1e6, seed=seed)


SPECS = {
    # mappings live 50 ms of trace time; a piece of 100k packets is ~0.1 s
    "nat": NFSpec(os.path.join(ROOT, "examples", "nat.py"),
                  ["udp_timeout=50ms", "tcp_timeout=50ms", "refresh_interval=5ms", "public_ips=2"],
                  ("tcp_ports", "udp_ports"), _nat_piece),
    "bridge": NFSpec(os.path.join(ROOT, "examples", "bridge.py"),
                     ["validity=50ms", "refresh_interval=5ms", "capacity=16384"], ("leases",), _bridge_piece),
}


@dataclass
class Sample:
    packets: int
    seconds: float
    rss_kb: list[int]           # the control process, then each worker
    fds: list[int]
    arena_used: int
    allocators: dict[str, tuple[int, int, int]]   # name (and "name after expiry") -> (allocated, free, capacity)
    sets_live: int
    expired: int


@dataclass
class LongRun:
    nf: str
    workers: int
    packets: int
    samples: list[Sample] = field(default_factory=list)

    def after_warmup(self, warmup: float) -> list[Sample]:
        return [s for s in self.samples if s.packets >= warmup * self.packets]

    def verdict(self, warmup: float = 0.3, tolerance: float = 0.05) -> dict[str, Any]:
        """The flatness figures after the warm-up, and whether each holds."""
        rows = self.after_warmup(warmup)
        procs = len(rows[0].rss_kb)
        rss = []
        for p in range(procs):
            values = [r.rss_kb[p] for r in rows]
            mean = sum(values) / len(values)
            rss.append({"process": "control" if p == 0 else f"worker {p - 1}", "mean_kb": round(mean),
                        "min_kb": min(values), "max_kb": max(values),
                        "spread_pct": round(100 * max(abs(v - mean) for v in values) / mean, 2)})
        return {
            "nf": self.nf, "workers": self.workers, "packets": self.packets, "samples_after_warmup": len(rows),
            "rss": rss,
            "rss_flat": all(r["spread_pct"] <= 100 * tolerance for r in rss),
            "fds": sorted({tuple(r.fds) for r in rows}),
            "fds_flat": len({tuple(r.fds) for r in rows}) == 1,
            "arena_used": sorted({r.arena_used for r in rows}),
            "arena_flat": len({r.arena_used for r in rows}) == 1,
            "allocators_whole": all(a + f == c for r in self.samples for a, f, c in r.allocators.values()),
            "allocated_live": sorted({v[0] for r in rows for k, v in r.allocators.items() if "after" not in k}),
            "allocated_after_expiry": sorted({v[0] for r in rows for k, v in r.allocators.items() if "after" in k}),
            "sets_expired": rows[-1].expired,
        }


def long_run(nf: str, packets: int, workers: int = 2, piece: int = 100_000, samples: int = 25,
             seeds: int = 4, progress=None) -> LongRun:
    import psutil

    from nfos import _core
    from nfos.runtime.session import Session

    spec = SPECS[nf]
    pieces = []
    for seed in range(1, seeds + 1):
        tr = spec.piece(piece, seed)
        t0 = tr.times_ns[0]
        pieces.append((tr.frames, [t - t0 for t in tr.times_ns], list(tr.devs), tr.times_ns[-1] - t0))
    s = Session(spec.path, workers, spec.params, collect_output=False)
    result = LongRun(spec.name, workers, packets)
    try:
        s.init(start_time_ns=1_000_000_000)
        s.open_rings(1 << 16, 64)
        s.start()
        procs = [psutil.Process()] + [psutil.Process(p.pid) for p in s.procs]
        allocs = {name: getattr(s.nf.state, name) for name in spec.allocators}
        gap = 200_000_000   # 0.2 s of trace time between pieces: longer than every timeout
        base, sent, k, t_start = 1_000_000_000, 0, 0, time.monotonic()
        every = max(1, packets // samples)
        next_sample = every
        while sent < packets:
            frames, times, devs, span = pieces[k % seeds]
            k += 1
            n = min(len(frames), packets - sent)
            waits: dict[int, int] = {}
            inject = s.inject
            for i in range(n):
                slot, seq = inject(frames[i], devs[i], base + times[i])
                waits[slot] = seq
            for slot, seq in waits.items():
                s.wait_rx(slot, seq)
            sent += n
            sample = sent >= next_sample or sent >= packets
            if sample:   # the allocators while the piece's mappings / leases are live
                counts = {name: (*s.run_in_tx(a.counts), a.capacity) for name, a in allocs.items()}
            base += span + gap
            # each worker's expiry sweep, once the piece's state is idle: queued to every worker
            # before waiting on any (the drift horizon holds a worker's tick until the others reach it)
            ticks = [s.tick(w, base) for w in range(max(1, workers))]
            for w, seq in enumerate(ticks):
                s.wait_rx(w, seq)
            s.set_clock(base)
            s.run_periodics(base)   # the allocators' lease reclaiming
            if sample:
                next_sample += every
                counts.update({f"{name} after expiry": (*s.run_in_tx(a.counts), a.capacity)
                               for name, a in allocs.items()})
                rows = s.slot_counters()
                result.samples.append(Sample(
                    sent, round(time.monotonic() - t_start, 2), [p.memory_info().rss // 1024 for p in procs],
                    [p.num_fds() for p in procs], _core.arena_used(), counts,
                    sum(r["packet_sets_live"] for r in rows), sum(r["packet_sets_expired"] for r in rows)))
                if progress:
                    progress(result.samples[-1])
    finally:
        s.close()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nf", default="nat,bridge")
    ap.add_argument("--packets", type=int, default=10_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=0.3, help="fraction of the packets before the checks")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    out = []
    ok = True
    for nf in a.nf.split(","):
        def show(smp: Sample, nf: str = nf) -> None:
            print(f"  {nf} {smp.packets:>11,} pkts {smp.seconds:>7.1f} s  rss KiB {smp.rss_kb}  fds {smp.fds}  "
                  f"arena {smp.arena_used:,}  sets {smp.sets_live:,} expired {smp.expired:,}", flush=True)
        run = long_run(nf, a.packets, a.workers, progress=show)
        v = run.verdict(a.warmup)
        ok &= v["rss_flat"] and v["fds_flat"] and v["arena_flat"] and v["allocators_whole"]
        print(json.dumps(v), flush=True)
        out.append({"verdict": v, "samples": [vars(smp) for smp in run.samples]})
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
