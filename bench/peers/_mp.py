"""What the hand-parallelised peers (mp_nat.py, mp_bridge.py) share: fork N processes over
flow-sharded input, start them together, time the processing phase, collect the outputs.

This is the scaffolding a Python developer writes around ``multiprocessing`` without nfos:
the parent splits the trace into per-process shards (a software RSS, like nfos's steering,
and like it not timed), forks N processes (``fork``: the shards and the shared-memory state
are inherited, not pickled), each process touches its shard, waits on a barrier, runs the
sequential loop on its shard, and sends its outputs back through a pipe.  The elapsed time
is the processing phase only: from the first process's start to the last one's end, on the
system-wide monotonic clock (as nfos's workers measure it), so fork, sharding and the
transfer of the outputs are excluded on both sides.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from nfos.runtime.session import memory_kb  # measurement only, not the peer's logic

HERE = os.path.dirname(os.path.abspath(__file__))

# process(frames, devs, times_ns) -> (outputs: one list of frames per device, counters)
Process = Callable[[list[bytes], list[int], list[int]], tuple[list[list[bytes]], dict[str, int]]]


def sibling(name: str):
    """Import bench/peers/<name>.py (the peers are loaded by path, not as a package)."""
    spec = importlib.util.spec_from_file_location(f"_peer_{name}", os.path.join(HERE, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _child(process: Process, shard: tuple[list[bytes], list[int], list[int]], barrier, conn,
           keep_output: bool) -> None:
    try:
        frames, devs, times = shard
        sum(map(len, frames))                     # touch the shard before the clock starts
        barrier.wait()
        t0 = time.perf_counter_ns()               # CLOCK_MONOTONIC: comparable across processes
        outputs, counters = process(frames, devs, times)
        t1 = time.perf_counter_ns()
        peak, pss = memory_kb()
        conn.send(("ok", t0, t1, outputs if keep_output else [len(o) for o in outputs], counters,
                   {"peak_rss_kb": peak, "pss_kb": pss, "packets": len(frames)}))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_sharded(process: Process, shards: Sequence[tuple[list[bytes], list[int], list[int]]],
                devices: Sequence[str], keep_output: bool = True,
                counters: dict[str, Any] | None = None) -> tuple[dict[str, list[bytes]], float]:
    """Fork one process per shard, run ``process`` on each, and merge: (outputs per device, seconds).

    Outputs are the concatenation of the processes' outputs (a multiset: the order across
    processes is arbitrary).  With ``keep_output=False`` the frames stay in the processes and
    ``counters`` gets ``out_<device>`` counts.  ``counters`` also gets the processes' own
    counters summed, and ``per_process`` (packets, peak RSS and PSS of each).
    """
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(shards))
    procs, conns = [], []
    for shard in shards:
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(process, shard, barrier, send, keep_output), daemon=True)
        p.start()
        send.close()
        procs.append(p)
        conns.append(recv)
    results = []
    try:
        for c in conns:   # receive before joining: a large output would block the child's pipe
            try:
                results.append(c.recv())
            except EOFError:
                results.append(("error", "the process died without an answer"))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [r[1] for r in results if r[0] != "ok"]
    if errors:
        raise RuntimeError("a peer process failed:\n" + errors[0])
    outputs: dict[str, list[bytes]] = {d: [] for d in devices}
    totals: dict[str, Any] = {f"out_{d}": 0 for d in devices}
    for _, _t0, _t1, outs, ctrs, _mem in results:
        for d, o in zip(devices, outs, strict=True):
            if keep_output:
                outputs[d] += o
                totals[f"out_{d}"] += len(o)
            else:
                totals[f"out_{d}"] += o
        for k, v in ctrs.items():
            totals[k] = totals.get(k, 0) + v
    totals["per_process"] = [r[5] for r in results]
    if counters is not None:
        counters.update(totals)
    elapsed = (max(r[2] for r in results) - min(r[1] for r in results)) / 1e9
    return outputs, elapsed


def split(frames: Sequence[bytes], devs: Sequence[int], times_ns: Sequence[int], workers: int,
          key: Callable[[bytes, int], bytes | None]) -> list[tuple[list[bytes], list[int], list[int]]]:
    """Flow-shard the trace: ``key(frame, dev)`` -> bytes hashed to a process (None: process 0).
    Each shard keeps the trace order."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    shards: list[tuple[list[bytes], list[int], list[int]]] = [([], [], []) for _ in range(workers)]
    for f, d, t in zip(frames, devs, times_ns, strict=True):
        k = key(f, d) if workers > 1 else None
        s = shards[zlib.crc32(k) % workers if k is not None else 0]
        s[0].append(f)
        s[1].append(d)
        s[2].append(t)
    return shards
