"""Replay a capture through an NF: the `nfos run --in` path.

The whole trace is copied into the arena and steered (software RSS) into
per-worker RX rings before the workers start (saturation mode), so the
measured phase is processing only.  Virtual time is the capture's
timestamps; clock ticks in every ring let idle workers expire their sets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nfos import _core
from nfos.io.capture import PcapWriter, Trace
from nfos.runtime.session import TX_RING_BYTES, Session
from nfos.structures.base import internal_periodics


@dataclass
class RunResult:
    stats: dict[str, Any]
    outputs: dict[str, list[bytes]] = field(default_factory=dict)   # when keep_output
    profile: Any = None   # nfos.profiler.Profile when profiling


class ConflictLog:
    """Drains the workers' conflict records while a profiled run goes on."""

    def __init__(self, nslots: int) -> None:
        self.cursors = [0] * nslots
        self.records: list[tuple] = []
        self.lost = 0

    def drain(self) -> None:
        for s, since in enumerate(self.cursors):
            recs, self.cursors[s], lost = _core.conflicts(s, since)
            self.records += recs
            self.lost += lost


def summarize(session: Session, wall_s: float, packets: int, extra: dict[str, Any] | None = None,
              live: bool = False) -> dict[str, Any]:
    """The stats JSON: the counters of ``_core.COUNTERS`` (counters.def) summed over the processes,
    derived figures, and the per-worker rows; ``live`` adds the live-interface counters."""
    rows = session.slot_stats()
    ctl = session.control_stats()
    devs = session.nf.devices
    every = rows + ([ctl] if ctl else [])
    shown = {"sum", "live"} if live else {"sum"}
    row_key = _core.COUNTER_ALIASES["per_worker"]

    def public(value: Any) -> Any:   # a per-device list as {device: n}
        return {d: value[i] for i, d in enumerate(devs)} if isinstance(value, list) else value

    def total(name: str) -> Any:
        first = every[0][name]
        if isinstance(first, dict):
            return {k: sum(r[name][k] for r in every) for k in first}
        if isinstance(first, list):
            return public([sum(r[name][i] for r in every) for i in range(len(first))])
        return sum(r[name] for r in every)

    out: dict[str, Any] = {"nf": session.nf.name, "workers": session.workers}
    out.update({name: total(name) for name, _n, agg, _doc in _core.COUNTERS if agg in shown})
    tx_ns = sum(r["stm_sampled_tx_ns"] for r in every)
    counts = [r["packets_in"] for r in rows]
    mean = sum(counts) / len(counts) if counts else 0
    out.update({
        "abort_rate": out["aborts"] / out["transactions"] if out["transactions"] else 0.0,
        "wall_s": wall_s,
        "throughput_pps": packets / wall_s if wall_s > 0 else 0.0,
        "stm_share_of_transaction_time": sum(r["stm_sampled_stm_ns"] for r in every) / tx_ns if tx_ns else None,
        "imbalance": max(counts) / mean if mean else 1.0,
        "per_worker": [
            {"worker": i, **{row_key.get(name, name): public(r[name]) for name, _n, agg, _doc in _core.COUNTERS
                             if agg in shown or agg == "gauge"},
             "busy_s": r["busy_ns"] / 1e9}
            for i, r in enumerate(rows)
        ],
    })
    out.update(extra or {})
    return out


def check_memory(trace: Trace, nslots: int) -> None:
    """The trace lives in shared memory (RAM, not /dev/shm): refuse clearly if it cannot fit."""
    need = sum(len(f) for f in trace.frames) + 32 * len(trace) * 2 + (64 << 20) * nslots
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return
    if need > avail:
        raise MemoryError(f"the trace needs about {need / 2**30:.1f} GiB of shared memory and only "
                          f"{avail / 2**30:.1f} GiB is available: replay a shorter capture")


class OutputSink:
    """Writes what leaves each device to DIR/<device>.pcap, and/or keeps it in memory."""

    def __init__(self, devices: Sequence[str], out_dir: str | None, keep: bool) -> None:
        self.devices = list(devices)
        self.keep = keep
        self.frames: dict[str, list[bytes]] = {d: [] for d in devices}
        self.writers: list[PcapWriter] = []
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            self.writers = [PcapWriter(os.path.join(out_dir, f"{d}.pcap")) for d in devices]

    def drain(self, slots: range) -> int:
        n = 0
        if not self.keep:   # fast path: pcap records built in C, one write per device
            for s in slots:
                for w, blob in zip(self.writers, _core.drain_tx_pcap(s, len(self.devices)), strict=True):
                    if blob:
                        w.write_records(blob)
                        n += 1
            return n
        for s in slots:
            for mask, frame, t, _indev in _core.drain_tx(s):
                for i, d in enumerate(self.devices):
                    if mask >> i & 1:
                        if self.writers:
                            self.writers[i].write(frame, t)
                        if self.keep:
                            self.frames[d].append(frame)
                        n += 1
        return n

    def close(self) -> None:
        for w in self.writers:
            w.close()


def replay(nf_path: str, trace: Trace | Callable[[list[str]], Trace], workers: int = 0, params: dict[str, str] | Sequence[str] | None = None,
           out_dir: str | None = None, keep_output: bool = False, batch: int = 32,
           progress: Callable[[int, int], None] | None = None, check: bool = True,
           profile: bool = False) -> RunResult:
    """Run ``trace`` through the NF at ``nf_path``; returns the stats (and outputs if kept).

    ``trace`` may be a callable that gets the NF's device names and returns the
    trace (so a pcap can be read onto the NF's first device).
    """
    collect = bool(out_dir) or keep_output
    session = Session(nf_path, workers, params, batch=batch, collect_output=collect, check=check, profile=profile)
    sink = None
    log = ConflictLog(session.nslots) if profile else None
    try:
        nf = session.nf
        if callable(trace):
            trace = trace(list(nf.devices))
        if trace.dev_names and trace.dev_names != list(nf.devices)[: len(trace.dev_names)]:
            unknown = [d for d in trace.dev_names if d not in nf.devices]
            if unknown:
                raise ValueError(f"the trace has device(s) {', '.join(unknown)} that NF '{nf.name}' does not "
                                 f"have (its devices: {', '.join(nf.devices)})")
            remap = [nf.devices.index(d) for d in trace.dev_names]
            devs = [remap[d] for d in trace.devs]
        else:
            devs = trace.devs
        check_memory(trace, session.nslots)
        start = trace.times_ns[0] if len(trace) else 0
        session.init(start_time_ns=start)
        per_worker = _core.load_trace(trace.frames, trace.times_ns, list(devs), session.tick_ns,
                                      TX_RING_BYTES if collect else 64)
        sink = OutputSink(nf.devices, out_dir, keep_output) if collect else None
        total = len(trace)
        slots = range(session.nslots)
        t0 = time.perf_counter()
        session.start()
        if session.local:
            while True:
                n = _core.worker_run(65536, 0)
                if sink:
                    sink.drain(slots)
                if progress:
                    progress(_core.rx_done(0), total)
                if n < 0:
                    break
        else:
            _wait_parallel(session, sink, progress, total, log)
            session.join_workers()   # they report their memory use as they leave
        wall = session.processing_seconds() or (time.perf_counter() - t0)
        if sink:
            sink.drain(slots)
        session.run_exit_handler()
        if sink:
            sink.drain(slots)
        stats = summarize(session, wall, total, {"packets_per_worker_steered": per_worker,
                                                 "warnings": list(trace.warnings)})
        report = None
        if log is not None:
            from nfos.profiler import analyze
            from nfos.structures.base import registry

            log.drain()
            report = analyze(stats, log.records, log.lost, registry, session.path, dict(nf.params))
        return RunResult(stats, sink.frames if (sink and keep_output) else {}, report)
    finally:
        if sink:
            sink.close()
        session.close()


def _wait_parallel(session: Session, sink: OutputSink | None, progress, total: int,
                   log: ConflictLog | None = None) -> None:
    slots = range(session.nslots)
    workers = range(session.workers)
    periodic = bool(session.nf.handlers.periodic or internal_periodics())
    while True:
        done = all(_core.rx_finished(w) for w in workers)
        if sink:
            sink.drain(slots)
        if periodic:   # periodic handlers follow the slowest worker's virtual clock
            clocks = [_core.slot_stats(w)["clock_ns"] for w in workers if not _core.rx_finished(w)]
            if clocks:
                _core.run_periodics(min(clocks))
        if progress:
            progress(sum(_core.rx_done(w) for w in workers), total)
        if log is not None:
            log.drain()
        if done:
            return
        dead = session.dead_workers()
        if dead:
            for w in dead:
                _core.recover_slot(w)
            raise RuntimeError(f"worker {dead[0]} died (exit code {session.procs[dead[0]].exitcode}); "
                               "its shared-state commit was completed or discarded")
        time.sleep(0.002 if sink or periodic or log else 0.005)
