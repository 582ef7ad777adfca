"""The runtime engine: one loaded NF, its arena and its processes.

    control process ── loads the NF, runs @nf.init, owns the arena, forks the
    │                  workers, runs the exit handler (live: and the periodic
    │                  handlers), drains output, checks the workers, collects
    │                  the counters
    ├── worker 0       each: its own interpreter, RX ring, packet-set table
    └── worker N-1

A :class:`Session` makes every ``_core`` call of a run's lifecycle.  The
drivers only choose the time source and the I/O:

    replay   (runtime/replay.py)   capture timestamps; the whole trace steered into the RX rings
    paced    (runtime/paced.py)    monotonic clock; a pool of frames queued at a rate
    live     (runtime/live.py)     monotonic clock; AF_PACKET sockets opened in each worker
    Harness  (nfos/testing.py)     virtual seconds; frames injected one at a time

Lifecycle: ``Session(...)`` loads the NF into a fresh arena → :meth:`~Session.init`
runs ``@nf.init`` → feed (:meth:`~Session.load_trace`, or :meth:`~Session.open_rings`
then :meth:`~Session.inject` / :meth:`~Session.load_pool`) → :meth:`~Session.start`
forks the workers → the driver's loop (:meth:`~Session.drain`,
:meth:`~Session.run_periodics`, :meth:`~Session.check_workers`: a dead worker is
recovered and replaced, ...) →
:meth:`~Session.run_exit_handler` → :meth:`~Session.summarize` → :meth:`~Session.close`.

``workers=0`` is the sequential reference mode: one process, no STM, the
same C loop with direct writes (and an undo log so a raising handler still
loses only its packet).  Slots: workers are 0..N-1 and the control process
is N; in sequential mode everything is slot 0.

Virtual time (``sync=True``: replay and the Harness): periodic handlers run in
the workers, at a barrier at their due time T (every worker has processed all
its packets before T and none after; the lowest-numbered worker with input
left runs them alone), and no worker runs more than ``max_drift_ns`` of
virtual time ahead of another.  Live and paced runs pass ``sync=False``: the
control process runs periodic handlers on the monotonic clock.

While a session is open, ``sys.stdout`` and ``sys.stderr`` are proxies
(:mod:`nfos.runtime.streams`): what a handler prints is written once, when its
transaction commits.

Process-wide state is the session's: the NF's structure registry (with their
housekeeping and the worker count they are built for) is ``Session.registry``,
and the structures being created find it through ``nfos.structures.base.current()``.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import time
import traceback
from array import array
from collections.abc import Callable, Sequence
from types import ModuleType, TracebackType
from typing import Any

from nfos import _core
from nfos.check import check_file
from nfos.io.capture import PcapWriter
from nfos.nf import NF, NFError
from nfos.params import ParamError
from nfos.runtime import streams
from nfos.structures.base import Registry, release, set_current

DEFAULT_ARENA = 64 << 30   # virtual; pages are backed only when touched
TX_RING_BYTES = 8 << 20
RUN_BUDGET = 1 << 16       # RX descriptors per call of the loop in the sequential mode
MAX_DRIFT_NS = 1_000_000   # the drift horizon Δ: how far in virtual time a worker may run ahead

Output = tuple[str, bytes]   # (device, frame)


class LoadError(Exception):
    """The NF file cannot be loaded; the message is one line naming the file (and line)."""


class WorkerDied(RuntimeError):
    """A worker process died and was not replaced (its slot died ``RESPAWN_LIMIT`` times within
    ``RESPAWN_WINDOW_S``, or a session made not to respawn); its shared-state commit was completed or discarded."""


#: a worker asked to stop that is still in one handler call after this long is killed
STUCK_GRACE_S = 0.3

#: a worker slot that dies this many times within RESPAWN_WINDOW_S seconds stops the run
#: (a handler that kills its process, e.g. os._exit) instead of being respawned again
RESPAWN_LIMIT = 5
RESPAWN_WINDOW_S = 10.0


def handler_name(kind: str, fn: Any) -> str:
    """``@nf.packet on_packet (nf.py:42)``: a handler as the watchdog names it (the line of its
    ``def``, after any decorators)."""
    import linecache

    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    if code is None:
        return f"{kind} {name}"
    line = code.co_firstlineno
    for k in range(line, line + 50):   # a decorated function's first line is its first decorator
        text = linecache.getline(code.co_filename, k).lstrip()
        if not text:
            break
        if not text.startswith("@"):
            line = k
            break
    return f"{kind} {name} ({os.path.basename(code.co_filename)}:{line})"


def _nf_frame(tb: TracebackType | None, nf_file: str) -> tuple[str, int]:
    """The innermost traceback frame in the NF file (else the innermost frame)."""
    best = None
    for frame, lineno in traceback.walk_tb(tb):
        if best is None or os.path.abspath(frame.f_code.co_filename) == nf_file:
            best = (frame.f_code.co_filename, lineno)
    return best or ("?", 0)


def load_module(path: str, name: str, check: bool = True, shown_as: str | None = None) -> tuple[ModuleType, NF]:
    """Import the NF file as a fresh module ``name``; returns (module, NF); errors name `shown_as`."""
    shown = shown_as or path
    if not os.path.isfile(path):
        raise LoadError(f"{shown}: no such NF file")
    if check:
        findings = check_file(shown if os.path.isfile(shown) else path)
        if findings:
            more = f" (and {len(findings) - 1} more; run 'nfos check {shown}')" if len(findings) > 1 else ""
            raise LoadError(f"{findings[0]}{more}")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{shown}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise LoadError(f"{shown}:{e.lineno}: syntax error: {e.msg}") from None
    except (NFError, ValueError, TypeError) as e:
        where = _nf_frame(e.__traceback__, os.path.abspath(path))
        raise LoadError(f"{os.path.basename(where[0])}:{where[1]}: {e}") from None
    except Exception as e:
        where = _nf_frame(e.__traceback__, os.path.abspath(path))
        raise LoadError(f"{os.path.basename(where[0])}:{where[1]}: {type(e).__name__}: {e}") from None
    nfs = [v for v in vars(module).values() if isinstance(v, NF)]
    if len(nfs) != 1:
        raise LoadError(f"{shown}: an NF file defines exactly one nfos.NF(...); found {len(nfs)}")
    return module, nfs[0]


# ----------------------------------------------------------------- counters
#: one slot's counters (a worker's, or the control process's), keyed by the names of
#: ``_core.COUNTERS`` (counters.def): an int, a per-device list, or {abort cause: n}
SlotCounters = dict[str, Any]


def read_counters(slot: int) -> SlotCounters:
    """The counters of ``slot``, as counters.def names them."""
    return _core.slot_stats(slot)


# ------------------------------------------------------------------- output
class OutputSink:
    """Where the frames a run sends go: ``out_dir/<device>.pcap`` and/or kept in memory (``keep``).

    Without either, output is not collected at all (the session is made with
    ``collect_output=False`` and has no sink)."""

    def __init__(self, devices: Sequence[str], out_dir: str | None = None, keep: bool = False) -> None:
        self.devices = list(devices)
        self.keep = keep
        self.kept: list[Output] = []   # (device, frame) in the order drained
        self.kept_slots: list[int] | None = None   # a list: the slot each kept frame came from
        self.writers: list[PcapWriter] = []
        self.paths: list[str] = []
        self.bytes_written = 0         # pcap records (headers included)
        self.seconds = 0.0             # spent writing them
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            self.paths = [os.path.join(out_dir, f"{d}.pcap") for d in devices]
            self.writers = [PcapWriter(p) for p in self.paths]

    @property
    def pcap_only(self) -> bool:
        """Only files to write: the fast path, pcap records built in C, one write per device."""
        return bool(self.writers) and not self.keep

    def frame(self, mask: int, frame: bytes, time_ns: int, wire_len: int | None = None, slot: int = -1) -> None:
        """One frame sent on every device whose bit is set in ``mask`` (``wire_len``: its length on
        the wire, when a capture cut it) by ``slot``."""
        for i, d in enumerate(self.devices):
            if mask >> i & 1:
                if self.writers:
                    self.writers[i].write(frame, time_ns, wire_len)
                    self.bytes_written += 16 + len(frame)
                if self.keep:
                    self.kept.append((d, frame))
                    if self.kept_slots is not None:
                        self.kept_slots.append(slot)

    def take(self) -> list[Output]:
        """The frames kept since the last call, in order."""
        out, self.kept = self.kept, []
        return out

    def by_device(self) -> dict[str, list[bytes]]:
        """The frames kept, per device."""
        out: dict[str, list[bytes]] = {d: [] for d in self.devices}
        for d, frame in self.kept:
            out[d].append(frame)
        return out

    def close(self) -> None:
        for w in self.writers:
            w.close()


ConflictRecord = tuple[Any, ...]


class ConflictLog:
    """Drains the slots' conflict records while a profiled run goes on."""

    def __init__(self, nslots: int) -> None:
        self.cursors = [0] * nslots
        self.records: list[ConflictRecord] = []
        self.lost = 0

    def drain(self) -> None:
        for s, since in enumerate(self.cursors):
            recs, self.cursors[s], lost = _core.conflicts(s, since)
            self.records += recs
            self.lost += lost


# ------------------------------------------------------------------ session
class Session:
    """Load an NF into a fresh arena, run its init, fork its workers and run them (see the module doc)."""

    def __init__(self, nf_path: str, workers: int = 0, params: dict[str, str] | Sequence[str] | None = None,
                 batch: int = 32, collect_output: bool = True, arena_size: int = DEFAULT_ARENA,
                 check: bool = True, profile: bool = False, busy_poll: bool = False, sync: bool = True,
                 max_drift_ns: int = MAX_DRIFT_NS, watchdog: float = 0.0,
                 cpus: Sequence[int] | None = None) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0 (0 = sequential reference mode)")
        if not 1 <= batch <= _core.BATCH_MAX:
            raise ValueError(f"batch must be 1..{_core.BATCH_MAX}")
        if isinstance(max_drift_ns, bool) or not isinstance(max_drift_ns, int) or max_drift_ns < 0:
            raise ValueError(f"max_drift_ns must be an int >= 0, got {max_drift_ns!r}")
        self.path = os.path.abspath(nf_path)
        self.workers = workers
        self.batch = batch
        self.collect_output = collect_output
        self.profile = profile
        self.busy_poll = busy_poll   # workers never sleep when idle (paced and live traffic)
        self.sync = sync             # virtual time: periodic barriers and the drift horizon in the workers
        self.respawn = True          # a dead worker is replaced
        self.respawn_limit = RESPAWN_LIMIT   # deaths of one slot within RESPAWN_WINDOW_S that stop the run
        self.deaths: dict[int, list[float]] = {}   # per slot: when its workers died (the respawn policy)
        self.recoveries: list[dict[str, Any]] = []   # per respawn: slot, exit code, packets lost, seconds
        self._worker_setup: Callable[[int], None] | None = None
        self.max_drift_ns = max_drift_ns
        self.watchdog = watchdog     # seconds in one handler call before a worker is named (0: off)
        self.cpus = list(cpus) if cpus else None   # worker i runs on cpus[i % len(cpus)]
        self.local = workers == 0
        self.nslots = 1 if self.local else workers + 1
        self.control_slot = 0 if self.local else workers
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.registry = Registry(workers)   # the NF's structures, filled as they are created
        self.sink: OutputSink | None = None   # set by the driver when output is collected
        self.conflicts = ConflictLog(self.nslots) if profile else None
        self.tick_ns = 0
        self.clock_ticks = 0        # replay: clock ticks load_trace put in each RX ring
        self.time_reordered = 0     # replay: frames whose time went back (processed at the latest time)
        self.started = False
        self.closed = False
        self.frozen = False
        _core.arena_create(arena_size, self.nslots)
        set_current(self)
        # before the NF is imported: a logging handler it creates writes through the proxy
        self._streams = streams.install()
        try:
            _core.set_slot(self.control_slot)
            name = f"nfos_nf_{id(self):x}_{os.path.splitext(os.path.basename(self.path))[0]}"
            self.module, self.nf = load_module(self.path, name, check, shown_as=nf_path)
            try:
                self.nf.resolve(params or {})
            except (ParamError, NFError) as e:
                raise LoadError(f"{nf_path}: {e}") from None
            _core.set_devices(self.nf.devices)
        except BaseException:
            streams.restore(self._streams)
            release(self)
            _core.arena_destroy()
            raise

    # ------------------------------------------------------------ set-up
    def init(self, start_time_ns: int = 0, periodic_base_ns: int | None = None) -> None:
        """Run @nf.init (in a direct transaction) and hand the configuration to the C core."""
        nf = self.nf
        _core.set_clock(start_time_ns)
        if nf.handlers.init is not None:
            # No worker exists yet: init writes in place, without an undo log or size limit.
            _core.tx_begin(_core.TX_UNLOGGED, 0)
            try:
                nf.handlers.init(nf.params)
            except BaseException as e:
                _core.tx_abort()
                if isinstance(e, KeyboardInterrupt):
                    raise
                where = _nf_frame(e.__traceback__, self.path)
                raise LoadError(f"{os.path.basename(where[0])}:{where[1]}: @nf.init failed: "
                                f"{type(e).__name__}: {e}") from None
            _core.tx_commit()
        nf.state.freeze()
        # What init built lives as long as the NF: out of the collector's sight (gc.freeze), so
        # that no collection walks it (a pause of milliseconds, and copy-on-write faults of the
        # whole inherited heap in every worker).  close() unfreezes it.
        gc.collect()
        gc.freeze()
        self.frozen = True
        sets = nf.sets
        base = start_time_ns if periodic_base_ns is None else periodic_base_ns
        handlers = {
            "new_packet_set": nf.handlers.new_packet_set,
            "packet": nf.handlers.packet,
            "expired": nf.handlers.expired,
            "orphan": nf.handlers.orphan,
            "malformed": nf.handlers.malformed,
            "error": self.report_error,
            "periodic": [(fn, iv, base + iv) for fn, iv in self.periodics()],
        }
        state_type = sets.state if sets else None
        _core.configure(
            nworkers=self.workers, defs=nf.key_definitions(), proto_mask=nf.proto_mask(),
            state_type=state_type, state_size=state_type.__nfos_size__ if state_type else 8,
            capacity=sets.capacity if sets else 1, expiry_ns=sets.expiry_ns if sets else 0,
            batch=self.batch, handlers=handlers, collect_output=self.collect_output, local=self.local,
            rss_key=None, profile=self.profile, nf_file=self.path, sync=self.sync,
            max_drift_ns=self.max_drift_ns)
        self.tick_ns = self._tick_interval()

    def _tick_interval(self) -> int:
        """How often replay inserts clock ticks (expiry sweeps) into idle workers' rings."""
        sets = self.nf.sets
        candidates = [10_000_000]
        if sets and sets.expiry_ns:
            candidates.append(max(sets.expiry_ns // 8, 1000))
        return min(candidates)

    def periodics(self) -> list[tuple[Callable[[], object], int]]:
        """The NF's periodic handlers and its structures' housekeeping: (function, interval ns),
        in schedule order (a conflict record's periodic index is a place in this list)."""
        return self.nf.handlers.periodic + self.registry.periodics()

    @property
    def periodics_in_workers(self) -> bool:
        """Periodic handlers run in the workers' loop (at barriers, or in the sequential mode's
        one process), not in the control process."""
        return self.local or self.sync

    # ------------------------------------------------------------ feeding
    def load_trace(self, frames: list[bytes], times_ns: list[int], devs: list[int],
                   progress: Callable[[int], object] | None = None,
                   wire_lens: Sequence[int] | None = None, rebalance_ns: int = 0, max_moves: int = 16,
                   warm: bool = False) -> list[int]:
        """Replay: steer a whole trace into per-worker RX rings; returns the packets each worker got.

        Time never goes back: a frame earlier than one before it is processed at the latest
        time before it (counted: ``time_reordered``).  Clock ticks go every ``tick_ns`` of
        trace time while they can change something (within the sets' expiry of the latest
        frame, :meth:`tick_horizon`), and a jump forward gets one: ``self.clock_ticks`` says
        how many each ring got.  ``progress(frames_done)`` is called as the frames are copied.
        ``wire_lens``: each frame's length on the wire, where a capture's snap length cut it
        (empty or None: every frame whole).  ``rebalance_ns`` > 0: RSS++ moves up to
        ``max_moves`` indirection-table buckets every that many ns of trace time, from the
        busiest worker to the least busy (by the last epochs' packets), and the moved buckets'
        packet sets follow them at the epoch's boundary.  ``warm``: start from the table a
        first pass over the trace ended with (laps: each lap starts where the previous one
        ended)."""
        wire = None
        if wire_lens:
            wire = wire_lens if isinstance(wire_lens, array) and wire_lens.typecode == "I" else array("I", wire_lens)
        per_worker, self.clock_ticks, self.time_reordered = _core.load_trace(
            frames, times_ns, devs, self.tick_ns, TX_RING_BYTES if self.collect_output else 64,
            self.tick_horizon(), progress, wire, rebalance_ns, max_moves, warm)
        return per_worker

    def tick_horizon(self) -> int:
        """How long after the latest frame clock ticks can still expire a set (ns)."""
        sets = self.nf.sets
        return (sets.expiry_ns if sets else 0) + 2 * self.tick_ns

    def migrated(self) -> list[tuple[int, int]]:
        """Per worker: (packet sets moved in by rebalancing, dropped because its table was full)."""
        return [_core.migrated(w) for w in range(self.workers)]

    def set_laps(self, laps: int, lap_ns: int) -> None:
        """Replay: walk the loaded rings ``laps`` times, each lap ``lap_ns`` later."""
        _core.set_laps(laps, lap_ns)

    def open_rings(self, rx_slots: int, tx_bytes: int) -> None:
        """Streaming: empty RX rings of ``rx_slots`` descriptors per slot, TX rings of ``tx_bytes``."""
        _core.rings_setup([rx_slots] * self.nslots, tx_bytes)

    def inject(self, frame: bytes, dev: int, time_ns: int, wire_len: int = 0) -> tuple[int, int]:
        """Queue one frame (steered as in a replay); returns (worker slot, its RX sequence number).
        ``wire_len`` > len(frame): the frame was cut by a capture's snap length."""
        return _core.inject(frame, dev, time_ns, wire_len)

    def tick(self, slot: int, time_ns: int) -> int:
        """Queue a clock tick (expiry sweep) to ``slot``; returns its RX sequence number."""
        return _core.tick(slot, time_ns)

    def load_pool(self, frames: list[bytes], devs: list[int]) -> None:
        """Paced: the frames the generator cycles through."""
        _core.load_pool(frames, devs)

    def feed_paced(self, rate_pps: float, duration_s: float) -> tuple[int, int, int]:
        """Paced: queue the pool at ``rate_pps`` for ``duration_s`` (a full ring loses the
        frame); returns (queued, lost, skipped: due while the generator itself was descheduled,
        not offered)."""
        return _core.feed_paced(rate_pps, duration_s)

    def close_rx(self) -> None:
        """No more input: the workers leave once their rings are empty."""
        _core.close_rx()

    # ------------------------------------------------------------ workers
    def start(self, worker_setup: Callable[[int], None] | None = None) -> None:
        """Fork the workers (parallel mode) and let them run.  ``worker_setup(slot)`` runs first
        in each forked worker (live mode opens the worker's sockets there).  With ``watchdog``,
        a thread then watches the workers' handler calls (:meth:`handler_names`)."""
        if not self.local:
            self._worker_setup = worker_setup
            for slot in range(self.workers):
                self.procs.append(self._fork(slot))
        self.started = True
        if self.watchdog > 0:   # after the fork: a worker never has the thread
            _core.watchdog_start(self.watchdog, max(1, self.workers), self.handler_names())
        _core.signal_start(len(self.procs))

    def _fork(self, slot: int, resume: bool = False) -> multiprocessing.process.BaseProcess:
        """Fork the worker of ``slot`` (``resume``: the replacement of a dead one)."""
        ctx = multiprocessing.get_context("fork")   # the arena is inherited, not pickled
        sys.stdout.flush()
        sys.stderr.flush()
        cpu = self.cpus[slot % len(self.cpus)] if self.cpus else None
        p = ctx.Process(target=_worker_main, args=(slot, self.busy_poll, self._worker_setup, os.getpid(), cpu, resume),
                        name=f"nfos-worker-{slot}", daemon=True)
        p.start()
        return p

    def handler_names(self) -> dict[int, str]:
        """The watchdog's name of each handler code a slot's heartbeat can show (H_<KIND>, and
        H_PERIODIC + i for the schedule's handler i)."""
        names = {_core.H_TRANSACT: "a transaction of the control process"}
        for kind, fn in self.handler_functions().items():
            code = getattr(_core, f"H_{kind.upper()}")
            if kind == "periodic":
                names.update({code + i: handler_name("@nf.periodic", p) for i, p in enumerate(fn)})
            elif fn is not None:
                names[code] = handler_name(f"@nf.{kind}", fn)
        return names

    def run_local(self, budget: int = RUN_BUDGET) -> int:
        """Sequential mode: run the loop in this process on up to ``budget`` RX descriptors;
        returns how many it took, or -1 once the rings are closed and empty."""
        return _core.worker_run(budget, 0)

    def wait_rx(self, slot: int, seq: int) -> None:
        """Until ``slot`` has processed its RX ring up to ``seq`` (sequential mode: process it)."""
        if self.local:
            while _core.rx_done(0) < seq:
                _core.worker_run(RUN_BUDGET, 0)
            return
        spins = 0
        while _core.rx_done(slot) < seq:
            spins += 1
            if spins % 100 == 0:
                self.check_workers()
            time.sleep(0.00005 if spins < 2000 else 0.001)

    def packets_done(self) -> int:
        """RX descriptors the workers (sequential mode: this process) have processed."""
        return sum(_core.rx_done(w) for w in range(max(1, self.workers)))

    def workers_finished(self) -> bool:
        """Every worker has processed its closed RX ring to the end."""
        return all(_core.rx_finished(w) for w in range(self.workers))

    def progress(self) -> list[int]:
        """Each worker's published progress (replay barriers): every descriptor before it is
        processed; 2**64 - 1 once its ring is closed and drained."""
        return [_core.progress(w) for w in range(self.workers)]

    def slowest_clock(self) -> int | None:
        """The virtual clock of the slowest worker still running (None: all finished)."""
        clocks = [read_counters(w)["clock_ns"] for w in range(self.workers) if not _core.rx_finished(w)]
        return min(clocks) if clocks else None

    def dead_workers(self) -> list[int]:
        """Workers that died: killed, exited with an error, or exited with 0 before their RX ring
        was finished (a handler's ``os._exit(0)``)."""
        rings = self.respawn and self.started and not self.local
        return [i for i, p in enumerate(self.procs)
                if p.exitcode not in (None, 0) or (p.exitcode == 0 and rings and not _core.rx_finished(i))]

    def check_workers(self) -> None:
        """Replace every worker that died (:meth:`respawn_worker`); raise WorkerDied when one cannot
        be (a slot that died ``RESPAWN_LIMIT`` times within ``RESPAWN_WINDOW_S``, or a session
        made not to respawn).  Its half-done commit is completed or discarded first."""
        for w in self.dead_workers():
            self.respawn_worker(w)

    def respawn_worker(self, w: int) -> int:
        """Worker ``w`` died: complete or discard its commit, roll back its transaction's private
        writes, release its locks, skip the batch it had taken (its packets not committed are
        lost: counted in ``packets_lost``), and fork a new worker for the slot, which goes on
        from there with the same packet-set table and RX ring.  Returns the packets lost."""
        t0 = time.monotonic()
        p = self.procs[w]
        code = p.exitcode
        hb, _calls = _core.heartbeat(w)
        where = self.handler_names().get(hb) if hb else None
        deaths = [t for t in self.deaths.get(w, []) if t0 - t < RESPAWN_WINDOW_S] + [t0]
        self.deaths[w] = deaths
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if not self.respawn or len(deaths) >= self.respawn_limit:
            _core.recover_slot(w)
            if not self.respawn:
                raise WorkerDied(f"worker {w} died ({how}"
                                 f"{', in ' + where if where else ''}); its shared-state commit was completed or discarded")
            raise WorkerDied(f"worker {w} died {len(deaths)} times within {RESPAWN_WINDOW_S:.0f} s (last: {how}, "
                             f"in {where or 'no handler'}); not respawned again: the run stops")
        lost = _core.respawn(w)
        self.procs[w] = self._fork(w, resume=True)
        self.recoveries.append({"worker": w, "exit_code": code, "handler": where, "packets_lost": lost,
                                "seconds": time.monotonic() - t0})
        return lost

    def stop_workers(self) -> None:
        """Ask every worker to leave now, even mid-trace: a batch being processed is rolled back
        (its packets stay unprocessed)."""
        _core.stop_workers()

    def halt(self, timeout: float = 3.0) -> None:
        """Stop the workers and wait for them to exit; a worker still in one handler call
        ``STUCK_GRACE_S`` after the request (an endless loop) is killed, any other after
        ``timeout``.  A killed worker's half-done commit is completed or discarded."""
        if not self.started:
            return
        _core.close_rx()
        _core.stop_workers()
        t0 = time.monotonic()
        calls = {w: _core.heartbeat(w) for w in range(self.workers)}
        for w, p in enumerate(self.procs):
            while p.is_alive():
                waited = time.monotonic() - t0
                code, n = _core.heartbeat(w)
                if waited > timeout or (waited > STUCK_GRACE_S and code and (code, n) == calls[w]):
                    p.kill()
                    p.join()
                    _core.recover_slot(w)
                    break
                p.join(timeout=0.01)

    def unprocessed(self) -> int:
        """Packets queued for the workers (sequential mode: this process) and not processed."""
        return sum(_core.rx_pending(w) for w in range(max(1, self.workers)))

    def join_workers(self, timeout: float = 5.0) -> None:
        """Wait for workers that finished their rings to exit (they record their memory first)."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))

    def latency_histogram(self) -> list[int]:
        """Paced: the workers' queue-to-commit latency histograms, summed (see paced.bucket_low)."""
        hist = [0] * 640
        for w in range(self.workers):
            hist = [a + b for a, b in zip(hist, _core.latency_hist(w), strict=True)]
        return hist

    # --------------------------------------------------- the control process
    def set_clock(self, now_ns: int) -> None:
        """Advance the control process's clock (what ``nfos.now()`` says in its handlers)."""
        _core.set_clock(now_ns)

    def run_periodics(self, now_ns: int) -> None:
        """The control process runs the periodic handlers and housekeeping due by ``now_ns``, each
        in a transaction (live mode; with virtual time the workers run them at barriers)."""
        _core.run_periodics(now_ns)

    def run_in_tx(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in one transaction in the control process."""
        return _core.run_in_tx(fn, *args)

    def drain(self) -> None:
        """Move what every slot sent into the sink (nothing without one)."""
        sink = self.sink
        if sink is None:
            return
        t0 = time.perf_counter()
        if sink.pcap_only:
            ndevs = len(sink.devices)
            for s in range(self.nslots):
                for w, blob in zip(sink.writers, _core.drain_tx_pcap(s, ndevs), strict=True):
                    if blob:
                        w.write_records(blob)
                        sink.bytes_written += len(blob)
        else:
            for s in range(self.nslots):
                for mask, frame, t, _indev, wire in _core.drain_tx(s):
                    sink.frame(mask, frame, t, wire, s)
        if sink.writers:
            sink.seconds += time.perf_counter() - t0

    def drain_conflicts(self) -> None:
        """Profiling: collect the conflict records so far (the rings in the arena are bounded)."""
        if self.conflicts is not None:
            self.conflicts.drain()

    def run_exit_handler(self) -> None:
        """@nf.exit, once, after the workers have stopped: alone, in direct mode (nothing is left
        to conflict with: no STM, no retries).  An exception is logged and the run goes on."""
        if self.nf.handlers.exit is None:
            return
        if not self.local:   # the exit handler sees the time the workers reached
            _core.set_clock(max(c["clock_ns"] for c in self.slot_counters()))
            for w, p in enumerate(self.procs):
                if not p.is_alive():   # a dead worker's transaction flag must not hold it up
                    _core.recover_slot(w)
        try:
            _core.run_exit(self.nf.handlers.exit)
        except Exception as e:
            self._log_error(e, "@nf.exit")

    def close(self) -> None:
        """Stop the workers, release the arena and the output files.  Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        try:
            _core.watchdog_stop()
            if self.sink is not None:
                self.sink.close()
            self.halt()   # leave now, even mid-trace; a worker stuck in a handler is killed
            for p in self.procs:
                if p.is_alive():
                    p.kill()
                    p.join()
        finally:
            _core.arena_destroy()
            sys.modules.pop(self.module.__name__, None)
            streams.restore(self._streams)
            release(self)
            if self.frozen:
                gc.unfreeze()

    # ------------------------------------------------------------ errors
    def report_error(self, exc: BaseException) -> None:
        """Called by the C loop for a handler exception: log once per NF line."""
        file, line = _nf_frame(exc.__traceback__, self.path)
        key = int.from_bytes(hashlib.blake2b(f"{file}:{line}".encode(), digest_size=8).digest(), "little")
        if _core.first_error_at(key):
            self._log_error(exc, "handler")

    def _log_error(self, exc: BaseException, what: str) -> None:
        file, line = _nf_frame(exc.__traceback__, self.path)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        then = ("the run goes on" if what == "@nf.exit" else
                "the packet was dropped; later errors at this line are only counted")
        err = streams.real(sys.stderr)   # the runtime's own message: never buffered with a transaction
        err.write(f"nfos: {what} error at {os.path.basename(file)}:{line}: {type(exc).__name__}: {exc}\n"
                  f"nfos: {then}\n{tb}")
        err.flush()

    # ------------------------------------------------------------ stats
    def slot_counters(self) -> list[SlotCounters]:
        """The workers' counters (sequential mode: the one slot's)."""
        return [read_counters(s) for s in range(1 if self.local else self.workers)]

    def control_counters(self) -> SlotCounters | None:
        """The control process's counters (its periodic and exit handlers); None in sequential mode."""
        return None if self.local else read_counters(self.control_slot)

    def processing_seconds(self) -> float | None:
        """From the first worker's first packet to the last worker's end of trace (the
        workers' own clocks), so fork, page-table set-up and polling are not counted."""
        rows = self.slot_counters()
        if self.local or not all(r["finish_ns"] and r["begin_ns"] for r in rows):
            return None
        return (max(r["finish_ns"] for r in rows) - min(r["begin_ns"] for r in rows)) / 1e9

    def summarize(self, wall_s: float, packets: int, extra: dict[str, Any] | None = None,
                  live: bool = False) -> dict[str, Any]:
        """The stats JSON (``nfos run --stats-json``): the counters of ``_core.COUNTERS``
        (counters.def) summed over every slot, derived figures, and the per-worker rows;
        ``live`` adds the live-interface counters."""
        rows = self.slot_counters()
        ctl = self.control_counters()
        devs = self.nf.devices
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

        out: dict[str, Any] = {"nf": self.nf.name, "workers": self.workers}
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

    def profile_report(self, stats: dict[str, Any]) -> Any:
        """Profiling: the nfos.profiler.Profile of the run, from its stats and conflict records."""
        from nfos.profiler import analyze

        if self.conflicts is None:
            raise RuntimeError("profile_report() needs a session made with profile=True")
        self.conflicts.drain()
        log = self.conflicts
        return analyze(stats, log.records, log.lost, self.registry, self.path, dict(self.nf.params),
                       handlers=self.handler_functions())

    def handler_functions(self) -> dict[str, Any]:
        """The NF's handlers by handlers.def name; "periodic" is the schedule's list (the profiler
        names a transaction by its handler and line)."""
        h = self.nf.handlers
        return {"packet": h.packet, "new_packet_set": h.new_packet_set, "expired": h.expired,
                "orphan": h.orphan, "malformed": h.malformed, "exit": h.exit, "init": h.init,
                "periodic": [fn for fn, _iv in self.periodics()]}


def memory_kb() -> tuple[int, int]:
    """(peak RSS, current PSS) of this process in KiB; PSS splits shared pages fairly."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pss = 0
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
    except OSError:
        pass
    return peak, pss


#: A worker's garbage collection: never inside a handler (gc.disable()); the young generation
#: when the loop is idle and it holds more than GC_IDLE objects (older generations every
#: GC_OLDER-th time), or between runs of WORKER_BUDGET packets when it holds more than GC_BUSY.
GC_IDLE, GC_BUSY, GC_OLDER = 100, 20_000, 16
WORKER_BUDGET = 1 << 20


def _collect(young: int, gen: list[int]) -> None:
    if gc.get_count()[0] <= young:
        return
    gen[0] += 1
    gc.collect(2 if gen[0] % (GC_OLDER * GC_OLDER) == 0 else 1 if gen[0] % GC_OLDER == 0 else 0)


def _worker_main(slot: int, busy_poll: bool = False, setup: Callable[[int], None] | None = None,
                 parent: int = 0, cpu: int | None = None, resume: bool = False) -> None:
    """A forked worker: run the C loop on this slot's RX ring until it is closed and empty
    (live mode: until the control process stops it).  ``setup(slot)`` runs first; ``cpu``:
    the one CPU it runs on.  It dies with ``parent`` (the control process), also if that
    died before this line ran.  ``resume``: it replaces a dead worker of the slot and goes on
    where that one stopped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the control process handles Ctrl-C
    gc.disable()   # no collection pauses a handler: see _collect
    _core.die_with_parent(parent)
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except (OSError, AttributeError):
            pass   # not allowed (a cgroup without that CPU): run unpinned
    _core.attach(slot)
    if resume:
        _core.resume()
    _core.realtime(busy_poll)   # traffic as it comes: bounded expiry sweeps
    if setup is not None:
        setup(slot)
    if not resume:   # a replacement starts at once: the others may be waiting for it
        _core.prefault()
    _core.wait_start()
    idle = 0
    gen = [0]
    while True:
        n = _core.worker_run(WORKER_BUDGET, 2000)
        if n < 0:
            break
        _collect(GC_IDLE if n < WORKER_BUDGET else GC_BUSY, gen)
        if n == 0 and not busy_poll:
            idle += 1
            time.sleep(0.0001 if idle < 100 else 0.001)
        else:
            idle = 0
    _core.record_memory(*memory_kb())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
