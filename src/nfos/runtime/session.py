"""A loaded NF and its processes: the control-plane side of a run.

    control process ── loads the NF, runs @nf.init, owns the arena, forks the
    │                  workers, runs periodic and exit handlers, drains output
    ├── worker 0       each: its own interpreter, RX ring, packet-set table
    └── worker N-1

``workers=0`` is the sequential reference mode: one process, no STM, the
same C loop with direct writes (and an undo log so a raising handler still
loses only its packet).  Slots: workers are 0..N-1 and the control process
is N; in sequential mode everything is slot 0.
"""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from nfos import _core
from nfos.check import check_file
from nfos.nf import NF, NFError
from nfos.params import ParamError
from nfos.structures import allocator
from nfos.structures.base import housekeeping, internal_periodics, registry

DEFAULT_ARENA = 64 << 30   # virtual; pages are backed only when touched
TX_RING_BYTES = 8 << 20
_loaded_count = 0


class LoadError(Exception):
    """The NF file cannot be loaded; the message is one line naming the file (and line)."""


def _nf_frame(tb: Any, nf_file: str) -> tuple[str, int]:
    """The innermost traceback frame in the NF file (else the innermost frame)."""
    best = None
    for frame, lineno in traceback.walk_tb(tb):
        if best is None or os.path.abspath(frame.f_code.co_filename) == nf_file:
            best = (frame.f_code.co_filename, lineno)
    return best or ("?", 0)


def load_module(path: str, check: bool = True, shown_as: str | None = None):
    """Import the NF file as a fresh module and return (module, NF); errors name `shown_as`."""
    global _loaded_count
    shown = shown_as or path
    if not os.path.isfile(path):
        raise LoadError(f"{shown}: no such NF file")
    if check:
        findings = check_file(shown if os.path.isfile(shown) else path)
        if findings:
            more = f" (and {len(findings) - 1} more; run 'nfos check {shown}')" if len(findings) > 1 else ""
            raise LoadError(f"{findings[0]}{more}")
    _loaded_count += 1
    name = f"nfos_nf_{_loaded_count}_{os.path.splitext(os.path.basename(path))[0]}"
    spec = importlib.util.spec_from_file_location(name, path)
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


class Session:
    """Load an NF into a fresh arena, run its init, and (with workers) fork them.

    ``start_time_ns`` is the virtual clock when init runs (the first packet's
    time in a replay).  The caller feeds RX rings (``_core.load_trace`` or
    ``_core.inject``) and calls :meth:`start`.
    """

    def __init__(self, nf_path: str, workers: int = 0, params: dict[str, str] | Sequence[str] | None = None,
                 batch: int = 32, collect_output: bool = True, arena_size: int = DEFAULT_ARENA,
                 check: bool = True, profile: bool = False, busy_poll: bool = False) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0 (0 = sequential reference mode)")
        if not 1 <= batch <= _core.BATCH_MAX:
            raise ValueError(f"batch must be 1..{_core.BATCH_MAX}")
        self.path = os.path.abspath(nf_path)
        self.workers = workers
        self.batch = batch
        self.collect_output = collect_output
        self.profile = profile
        self.busy_poll = busy_poll   # workers never sleep when idle (paced and live traffic)
        self.local = workers == 0
        self.nslots = 1 if self.local else workers + 1
        self.control_slot = 0 if self.local else workers
        self.procs: list[multiprocessing.Process] = []
        # Called as worker_setup(slot) in each forked worker before it starts
        # (live mode opens the worker's sockets there); None: nothing.
        self.worker_setup: Callable[[int], None] | None = None
        self.started = False
        self.closed = False
        registry.clear()
        housekeeping.clear()
        _core.arena_create(arena_size, self.nslots)
        allocator.workers_hint = workers
        try:
            _core.set_slot(self.control_slot)
            self.module, self.nf = load_module(self.path, check, shown_as=nf_path)
            try:
                self.nf.resolve(params or {})
            except (ParamError, NFError) as e:
                raise LoadError(f"{nf_path}: {e}") from None
            _core.set_devices(self.nf.devices)
        except BaseException:
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
        nf.state.__dict__["_frozen"] = True
        sets = nf.sets
        base = start_time_ns if periodic_base_ns is None else periodic_base_ns
        handlers = {
            "new_packet_set": nf.handlers.new_packet_set,
            "packet": nf.handlers.packet,
            "expired": nf.handlers.expired,
            "orphan": nf.handlers.orphan,
            "error": self.report_error,
            "periodic": [(fn, iv, base + iv) for fn, iv in nf.handlers.periodic + internal_periodics()],
        }
        state_type = sets.state if sets else None
        _core.configure(
            nworkers=self.workers, defs=nf.key_definitions(), proto_mask=nf.proto_mask(),
            state_type=state_type, state_size=state_type.__nfos_size__ if state_type else 8,
            capacity=sets.capacity if sets else 1, expiry_ns=sets.expiry_ns if sets else 0,
            batch=self.batch, handlers=handlers, collect_output=self.collect_output, local=self.local,
            rss_key=None, profile=self.profile, nf_file=self.path)
        self.tick_ns = self._tick_interval()

    def _tick_interval(self) -> int:
        """How often replay inserts clock ticks (expiry sweeps) into idle workers' rings."""
        sets = self.nf.sets
        candidates = [10_000_000]
        if sets and sets.expiry_ns:
            candidates.append(max(sets.expiry_ns // 8, 1000))
        return min(candidates)

    # ------------------------------------------------------------ workers
    def start(self) -> None:
        """Fork the workers (parallel mode) and let them run."""
        if not self.local:
            ctx = multiprocessing.get_context("fork")   # the arena is inherited, not pickled
            sys.stdout.flush()
            sys.stderr.flush()
            for slot in range(self.workers):
                p = ctx.Process(target=_worker_main, args=(slot, self.busy_poll, self.worker_setup),
                                name=f"nfos-worker-{slot}", daemon=True)
                p.start()
                self.procs.append(p)
        _core.signal_start(len(self.procs))
        self.started = True

    def processing_seconds(self) -> float | None:
        """From the first worker's first packet to the last worker's end of trace (the
        workers' own clocks), so fork, page-table set-up and polling are not counted."""
        rows = self.slot_stats()
        if self.local or not all(r["finish_ns"] and r["begin_ns"] for r in rows):
            return None
        return (max(r["finish_ns"] for r in rows) - min(r["begin_ns"] for r in rows)) / 1e9

    def join_workers(self, timeout: float = 5.0) -> None:
        """Wait for workers that finished their rings to exit (they record their memory first)."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))

    def dead_workers(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p.exitcode not in (None, 0)]

    def close(self) -> None:
        """Stop the workers, run @nf.exit, release the arena.  Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.started:
                _core.close_rx()
                _core.stop_workers()   # leave after the current batch, even mid-trace
            deadline = time.monotonic() + 3
            for p in self.procs:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join()
        finally:
            _core.arena_destroy()
            sys.modules.pop(self.module.__name__, None)

    def run_exit_handler(self) -> None:
        if self.nf.handlers.exit is None:
            return
        if not self.local:   # the exit handler sees the time the workers reached
            _core.set_clock(max(r["clock_ns"] for r in self.slot_stats()))
        try:
            _core.run_in_tx(self.nf.handlers.exit)
        except Exception as e:
            self._log_error(e, "@nf.exit")

    def kill_workers(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
        for p in self.procs:
            p.join()

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
        sys.stderr.write(
            f"nfos: {what} error at {os.path.basename(file)}:{line}: {type(exc).__name__}: {exc}\n"
            f"nfos: the packet was dropped; later errors at this line are only counted\n{tb}")
        sys.stderr.flush()

    # ------------------------------------------------------------ stats
    def slot_stats(self) -> list[dict[str, Any]]:
        n = 1 if self.local else self.workers
        return [_core.slot_stats(s) for s in range(n)]

    def control_stats(self) -> dict[str, Any] | None:
        return None if self.local else _core.slot_stats(self.control_slot)


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


def _worker_main(slot: int, busy_poll: bool = False, setup: Callable[[int], None] | None = None) -> None:
    """A forked worker: run the C loop on this slot's RX ring until it is closed and empty
    (live mode: until the control process stops it).  ``setup(slot)`` runs first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the control process handles Ctrl-C
    _core.die_with_parent()
    _core.attach(slot)
    if setup is not None:
        setup(slot)
    _core.prefault()
    _core.wait_start()
    idle = 0
    while True:
        n = _core.worker_run(1 << 20, 2000)
        if n < 0:
            break
        if n == 0 and not busy_poll:
            idle += 1
            time.sleep(0.0001 if idle < 100 else 0.001)
        else:
            idle = 0
    _core.record_memory(*memory_kb())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
