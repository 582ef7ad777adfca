"""Paced mode: the paper's throughput method (§5.1) and per-packet latency.

The control process is the traffic generator: it queues a trace (cycling)
into the workers' RX rings at a fixed rate on the monotonic clock, and a full
ring is a loss, as a full NIC queue is.  The highest rate with < 0.1% loss
is found by binary search; latency is the time from queueing to commit,
histogrammed by the workers.  The generator needs a core of its own: with
more workers than CPUs - 1 the result says so instead of giving a number.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from nfos.io.capture import Trace
from nfos.runtime.session import Session

RING = 4096              # descriptors per worker RX ring, like a NIC queue
LOSS_TARGET = 0.001


def bucket_low(b: int) -> int:
    """Lower bound (ns) of a latency bucket (16 log-linear buckets per power of two)."""
    if b < 16:
        return b
    e, sub = 4 + (b - 16) // 16, (b - 16) % 16
    return (1 << e) | (sub << (e - 4))


def percentiles(hist: list[int], qs: Sequence[float]) -> dict[str, float | None]:
    total = sum(hist)
    out: dict[str, float | None] = {}
    for q in qs:
        if not total:
            out[f"p{q:g}"] = None
            continue
        target, acc = q / 100 * total, 0
        for b, c in enumerate(hist):
            acc += c
            if acc >= target:
                out[f"p{q:g}"] = bucket_low(b) / 1000.0   # microseconds
                break
    return out


def spare_core(workers: int) -> bool:
    return workers + 1 <= (os.cpu_count() or 1)


def placement(workers: int) -> tuple[int | None, list[int] | None]:
    """(the generator's CPU, the workers' CPUs): one CPU each, the generator on the first
    one this process may use; (None, None) when there are not enough for that."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(allowed) < workers + 1:
        return None, None
    return allowed[0], allowed[1: workers + 1]


WARMUP_MAX = 0.5   # seconds


def paced_run(nf_path: str, trace: Trace, workers: int, rate: float, duration: float = 0.5,
              params: Sequence[str] = (), warmup: float | None = None) -> dict[str, Any]:
    """Offer `rate` packets/s for `duration` seconds: loss, latency percentiles (µs), the
    latency histogram, and the rate the generator really achieved (it may fall behind).

    A warm-up at the same rate comes first, untimed: one pass over the pool (every flow and
    heartbeat seen once: packet sets created, Map entries and allocator leases taken, the
    first touch of their pages, an NF's start-up work such as Maglev's table builds), at
    most WARMUP_MAX seconds (``warmup`` sets it; 0: none).  Its packets are processed, then
    the timed part starts: the result is the steady state; the warm-up's own percentiles
    are kept as ``warmup``."""
    if warmup is None:
        warmup = min(WARMUP_MAX, len(trace) / rate) if rate > 0 else 0.0
    gen_cpu, worker_cpus = placement(workers)
    s = Session(nf_path, workers, list(params), collect_output=False, busy_poll=True, sync=False,
                cpus=worker_cpus)
    before = None
    try:
        s.init(start_time_ns=time.monotonic_ns())
        s.open_rings(RING, 64)
        s.load_pool(trace.frames, list(trace.devs))
        s.start()
        if gen_cpu is not None:   # the generator (this process) on a CPU of its own while it feeds
            before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {gen_cpu})
        warm: dict[str, Any] = {"duration_s": warmup}
        hist0 = [0] * 640
        if warmup > 0:
            wq, wl, _ = s.feed_paced(rate, warmup)
            deadline = time.monotonic() + 5   # until the workers have processed it
            while s.packets_done() < wq and time.monotonic() < deadline:
                time.sleep(0.0005)
            hist0 = s.latency_histogram()
            warm |= {"offered": wq + wl, "lost": wl, "latency_us": percentiles(hist0, (50, 99, 99.9))}
        t0 = time.monotonic()
        queued, lost, skipped = s.feed_paced(rate, duration)
        fed_s = time.monotonic() - t0
        if before is not None:
            os.sched_setaffinity(0, before)
            before = None
        s.close_rx()
        deadline = time.monotonic() + 10
        while not s.workers_finished() and time.monotonic() < deadline:
            time.sleep(0.001)
        hist = [a - b for a, b in zip(s.latency_histogram(), hist0, strict=True)]
        rows = s.slot_counters()
        sent = queued + lost
        offered = sent + skipped   # the schedule's packets; `skipped`: due while the generator was descheduled
        return {"rate_pps": rate, "duration_s": duration, "offered": offered, "sent": sent, "lost": lost,
                "generator_skipped": skipped,
                "loss": lost / sent if sent else 0.0, "timed": sum(hist),
                "achieved_rate_pps": sent / fed_s if fed_s > 0 else 0.0,
                "latency_us": percentiles(hist, (50, 99, 99.9)), "hist": hist,
                "cpus": {"generator": gen_cpu, "workers": worker_cpus}, "warmup": warm,
                # where a worker's time went: preemptions (another task on its CPU), page faults
                "preempted": [r["preempted"] for r in rows], "minor_faults": [r["minor_faults"] for r in rows],
                "cpu_share": [r["cpu_ns"] / r["busy_ns"] if r["busy_ns"] else None for r in rows]}
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
        s.close()


def max_rate(nf_path: str, trace: Trace, workers: int, params: Sequence[str] = (), hi: float = 20e6,
             steps: int = 10, duration: float = 0.3) -> dict[str, Any]:
    """Binary search (at most `steps` runs) for the highest rate with < 0.1% loss."""
    if workers < 1 or not spare_core(workers):
        return {"workers": workers, "max_rate_pps": None,
                "note": f"not measured: no spare core for the generator ({os.cpu_count()} CPUs, "
                        f"{workers} workers + 1 generator)"}
    lo, best, tries, generator_bound = 0.0, None, [], False
    for _ in range(steps):
        mid = (lo + hi) / 2
        r = paced_run(nf_path, trace, workers, mid, duration, params)
        reached = r["achieved_rate_pps"] >= 0.99 * mid
        tries.append({"rate_pps": mid, "loss": r["loss"], "achieved_rate_pps": r["achieved_rate_pps"]})
        if r["loss"] < LOSS_TARGET and reached:
            lo, best = mid, mid
        else:
            generator_bound |= r["loss"] < LOSS_TARGET and not reached
            hi = mid
    out: dict[str, Any] = {"workers": workers, "max_rate_pps": best, "tries": tries}
    if generator_bound:
        out["note"] = "the generator could not reach some rates: the maximum may be generator-bound"
    return out
