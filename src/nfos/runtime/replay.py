"""Replay a capture through an NF: the `nfos run --in` path.

The whole trace is copied into the arena and steered (software RSS) into
per-worker RX rings before the workers start (saturation mode), so the
measured phase is processing only.  Virtual time is the capture's
timestamps; clock ticks in every ring let idle workers expire their sets.
Periodic handlers run in the workers at barriers at their due times, and no
worker runs more than ``max_drift_ns`` of virtual time ahead of another (see
nfos/runtime/session.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nfos import _core
from nfos.io.capture import Trace
from nfos.runtime.progress import Phases
from nfos.runtime.session import MAX_DRIFT_NS, OutputSink, Session
from nfos.runtime.verify import (
    collect_records,
    output_digests,
    record_header,
    records_capacity,
    slot_output_digests,
    structure_digests,
    write_record,
)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the replay; ``stats`` is its summary up to there (``interrupted``:
    true, ``unprocessed``: the packets queued and not processed, so ``packets_in + unprocessed``
    is the trace's length)."""

    def __init__(self, stats: dict[str, Any]) -> None:
        super().__init__("interrupted")
        self.stats = stats


@dataclass
class RunResult:
    stats: dict[str, Any]
    outputs: dict[str, list[bytes]] = field(default_factory=dict)   # when keep_output
    profile: Any = None   # nfos.profiler.Profile when profiling
    slots: list[dict[str, Any]] = field(default_factory=list)   # every worker's counters, internal ones too
    migrated: list[tuple[int, int]] = field(default_factory=list)   # per worker: sets moved in, dropped


def check_memory(trace: Trace, nslots: int, nbytes: int | None = None) -> None:
    """The trace lives in shared memory (RAM, not /dev/shm): refuse clearly if it cannot fit."""
    need = (sum(map(len, trace.frames)) if nbytes is None else nbytes) + 32 * len(trace) * 2 + (64 << 20) * nslots
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return
    if need > avail:
        raise MemoryError(f"the trace needs about {need / 2**30:.1f} GiB of shared memory and only "
                          f"{avail / 2**30:.1f} GiB is available: replay a shorter capture")


def trace_devices(trace: Trace, nf_name: str, devices: list[str]) -> list[int]:
    """Each frame's device as an index into the NF's ``devices`` (the trace names its own)."""
    if trace.dev_names and trace.dev_names != devices[: len(trace.dev_names)]:
        unknown = [d for d in trace.dev_names if d not in devices]
        if unknown:
            raise ValueError(f"the trace has device(s) {', '.join(unknown)} that NF '{nf_name}' does not "
                             f"have (its devices: {', '.join(devices)})")
        remap = [devices.index(d) for d in trace.dev_names]
        return [remap[d] for d in trace.devs]
    return list(trace.devs)


def lap_ns(times_ns: Sequence[int]) -> int:
    """How much later each lap of a replayed trace is: its span plus one mean gap."""
    if not times_ns:
        return 1
    span = times_ns[-1] - times_ns[0]
    return span + max(1, span // max(1, len(times_ns) - 1))


def replay(nf_path: str, trace: Trace | Callable[[list[str]], Trace], workers: int = 0, params: dict[str, str] | Sequence[str] | None = None,
           out_dir: str | None = None, keep_output: bool = False, batch: int = 32,
           progress: Callable[[int, int], None] | None = None, check: bool = True,
           profile: bool = False, phases: Phases | None = None, max_drift_ns: int = MAX_DRIFT_NS,
           watchdog: float = 0.0, laps: int = 1, cpus: Sequence[int] | None = None,
           rebalance_ns: int = 0, max_moves: int = 16, record_commits: str | None = None,
           record_inputs: Sequence[str] = ()) -> RunResult:
    """Run ``trace`` through the NF at ``nf_path``; returns the stats (and outputs if kept).

    ``trace`` may be a callable that gets the NF's device names and returns the
    trace (so a pcap can be read onto the NF's first device).  ``progress(done, total)``
    follows the processing; ``phases`` hears of each phase (steering into the workers,
    processing, writing output: nfos.runtime.progress).  ``watchdog``: name a worker
    stuck in one handler call that long on stderr (0: off).  Ctrl-C (a
    KeyboardInterrupt) during the processing stops the workers at once and raises
    :class:`Interrupted` with the summary so far.

    ``laps`` > 1 replays the trace that many times, each lap later by the trace's span (a
    long saturation run from a short trace: the rings are walked again, memory stays that of
    one trace; packet-set state carries over from lap to lap).  ``cpus``: pin worker i to
    ``cpus[i % len(cpus)]``.  ``rebalance_ns`` > 0: RSS++ rebalancing every that many ns of
    trace time (Session.load_trace); the output stays that of the sequential run, the packet
    sets moving with their buckets.

    ``record_commits``: write every committed transaction, in the order the serial equivalent
    runs them, and the output and final state digests to that file (nfos.runtime.verify;
    ``record_inputs``: the capture files, named in it for ``nfos verify``).
    """
    if laps < 1:
        raise ValueError("laps must be >= 1")
    ph = phases or Phases()
    if record_commits and (laps > 1 or rebalance_ns):
        raise ValueError("--record-commits records a replay of one lap without rebalancing")
    keep_output = keep_output or bool(record_commits)
    collect = bool(out_dir) or keep_output
    session = Session(nf_path, workers, params, batch=batch, collect_output=collect, check=check, profile=profile,
                      max_drift_ns=max_drift_ns, watchdog=watchdog, cpus=cpus)
    try:
        nf = session.nf
        if callable(trace):
            trace = trace(list(nf.devices))
        devs = trace_devices(trace, nf.name, list(nf.devices))
        nbytes = sum(map(len, trace.frames))
        check_memory(trace, session.nslots, nbytes)
        start = trace.times_ns[0] if len(trace) else 0
        session.init(start_time_ns=start)
        if record_commits:
            _core.record_commits(records_capacity(len(trace)))
        into = "the sequential worker" if session.local else \
            f"{session.workers} worker{'s' if session.workers != 1 else ''}"
        ph.start("steering", f"steering into {into}", len(trace), nbytes)
        per_worker = session.load_trace(trace.frames, trace.times_ns, devs, progress=ph.update,
                                        wire_lens=trace.wire_lens, rebalance_ns=rebalance_ns, max_moves=max_moves,
                                        warm=laps > 1)
        ph.finish(len(trace), nbytes)
        if laps > 1:
            session.set_laps(laps, lap_ns(trace.times_ns))
            per_worker = [n * laps for n in per_worker]
            nbytes *= laps
        if collect:
            session.sink = OutputSink(nf.devices, out_dir, keep_output)
            if record_commits:
                session.sink.kept_slots = []
        total = len(trace) * laps

        def processed(done: int) -> None:
            done = min(done, total)   # (RX descriptors: clock ticks too)
            ph.update(done)
            if progress:
                progress(done, total)

        ph.start("processing", "processing", total, nbytes)
        t0 = time.perf_counter()
        try:
            session.start()
            if session.local:
                while True:
                    n = session.run_local()
                    session.drain()
                    processed(session.packets_done())
                    if n < 0:
                        break
            else:
                _wait_parallel(session, processed, total)
                session.join_workers()   # they report their memory use as they leave
        except KeyboardInterrupt:
            session.halt()   # now, mid-batch; a worker stuck in a handler is killed
            session.drain()
            raise Interrupted(session.summarize(time.perf_counter() - t0, total, {
                "packets_per_worker_steered": per_worker, "warnings": list(trace.warnings),
                "interrupted": True, "unprocessed": session.unprocessed()})) from None
        wall = session.processing_seconds() or (time.perf_counter() - t0)
        ph.finish(sum(r["packets_in"] for r in session.slot_counters()), nbytes)
        if session.sink is not None and session.sink.writers:
            ph.start("writing output", "writing output", unit="frames")
        session.drain()
        exit_clock = max(c["clock_ns"] for c in session.slot_counters())
        session.run_exit_handler()
        session.drain()
        if record_commits:
            recs, lost = collect_records(session.nslots)
            write_record(record_commits, record_header(nf_path, params, record_inputs, workers, batch, len(trace)),
                         recs, {"lost": lost, "exit_clock": exit_clock,
                                "outputs": output_digests(session.sink.by_device() if session.sink else {}),
                                "slot_outputs": slot_output_digests(_kept_by_slot(session.sink)),
                                "structures": structure_digests(session.registry)})
        if session.sink is not None and session.sink.writers:
            session.sink.close()
            ph.finish(sum(sum(r["packets_out"]) for r in session.slot_counters() + _control(session)),
                      session.sink.bytes_written, f" to {', '.join(session.sink.paths)}", seconds=session.sink.seconds)
        stats = session.summarize(wall, total, {"packets_per_worker_steered": per_worker,
                                                "clock_ticks": session.clock_ticks, "warnings": []})
        stats["warnings"] = list(trace.warnings) + run_warnings(stats)
        report = session.profile_report(stats) if profile else None
        outputs = session.sink.by_device() if (session.sink and keep_output) else {}
        return RunResult(stats, outputs, report, session.slot_counters(), session.migrated())
    finally:
        session.close()


def run_warnings(stats: dict[str, Any]) -> list[str]:
    """What the user should know about how the trace was replayed (one line each)."""
    out = []
    if stats.get("cut"):
        out.append(f"{stats['cut']:,} frame(s) were cut by the capture's snap length (captured bytes < wire "
                   "length): those whose headers were captured were processed (pkt.len is the wire length) and "
                   "are written out as captured; the others count as malformed (cut)")
    if stats.get("time_reordered"):
        out.append(f"{stats['time_reordered']:,} frame(s) had a timestamp earlier than a frame before them (the "
                   "capture's clock went back): each was processed at the latest time before it "
                   "(time_reordered; the clock never goes back)")
    if stats.get("respawns"):
        out.append(f"{stats['respawns']:,} worker(s) died and were respawned; the {stats.get('packets_lost', 0):,} "
                   "frame(s) of their batches in flight were lost (packets_lost: not processed, not sent)")
    return out


def _kept_by_slot(sink: OutputSink | None) -> list[tuple[int, str, bytes]]:
    """(slot, device, frame) of every frame kept, in the order drained."""
    if sink is None or sink.kept_slots is None:
        return []
    return [(s, d, f) for s, (d, f) in zip(sink.kept_slots, sink.kept, strict=True)]


def _control(session: Session) -> list[dict[str, Any]]:
    ctl = session.control_counters()
    return [ctl] if ctl else []


def _wait_parallel(session: Session, progress: Callable[[int], None], total: int) -> None:
    """Until every worker has processed its ring: drain output, report progress, collect conflict
    records, watch the workers.  (Without virtual time, the control process would run the periodic
    handlers at the slowest worker's clock; with it, the workers run them at barriers.)"""
    periodic = bool(session.periodics()) and not session.periodics_in_workers
    pause = 0.002 if session.sink or periodic or session.profile else 0.005
    while True:
        done = session.workers_finished()
        session.drain()
        if periodic:   # periodic handlers follow the slowest worker's virtual clock
            clock = session.slowest_clock()
            if clock is not None:
                session.run_periodics(clock)
        progress(session.packets_done())
        session.drain_conflicts()
        if done:
            return
        session.check_workers()
        time.sleep(pause)
