"""Unit-test an NF: push frames in, get the frames it sends out (the VPP/BESS way).

    from nfos.testing import Harness

    with Harness("examples/firewall.py", workers=2) as h:
        out = h.send("lan", frame)          # [(device, frame bytes), ...] after commit
        assert out == [("wan", frame)]
        h.advance(61)                       # 61 s of virtual time: expiries and periodic handlers run
        assert h.send("wan", reply) == []

The same test runs in the sequential reference mode (``workers=0``) and with N
worker processes; frames are steered to workers exactly as in ``nfos run``.
Times are seconds of virtual time starting at 0.  When a frame's ``time`` or
:meth:`Harness.advance` moves the clock, every worker gets a clock tick at the
new time, so periodic handlers run at their barrier (in a worker, seeing
exactly the packets before their due time, as in the sequential mode) and no
worker is left behind the drift horizon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nfos.nf import NF
from nfos.runtime.session import MAX_DRIFT_NS, Output, OutputSink, Session

RING_SLOTS = 1 << 16
TX_BYTES = 8 << 20

__all__ = ["Harness", "Output"]


class Harness:
    """Run an NF file in a test: ``Harness(nf_path, workers=0, params={...})``, a context manager."""

    def __init__(self, nf_path: str, workers: int = 0, params: dict[str, object] | Sequence[str] | None = None,
                 batch: int = 32, check: bool = True, max_drift: float = MAX_DRIFT_NS / 1e9) -> None:
        self.nf_path = nf_path
        self.workers = workers
        self.params = {k: str(v) for k, v in params.items()} if isinstance(params, dict) else params
        self.batch = batch
        self.check = check
        self.max_drift_ns = int(round(max_drift * 1e9))
        self.session: Session | None = None
        self._clock_ns = 0

    # ---------------------------------------------------------- lifecycle
    def __enter__(self) -> Harness:
        s = Session(self.nf_path, self.workers, self.params, batch=self.batch, collect_output=True,
                    check=self.check, max_drift_ns=self.max_drift_ns)
        try:
            s.init(start_time_ns=0)
            s.open_rings(RING_SLOTS, TX_BYTES)
            s.sink = OutputSink(s.nf.devices, keep=True)
            s.start()
        except BaseException:
            s.close()
            raise
        self.session = s
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    @property
    def nf(self) -> NF:
        """The loaded ``nfos.NF`` (its ``state`` holds the structures)."""
        return self._s().nf

    @property
    def now(self) -> float:
        """The virtual clock, in seconds."""
        return self._clock_ns / 1e9

    # ------------------------------------------------------------ traffic
    def send(self, dev: str, frame: Any, time: float | None = None) -> list[Output]:
        """Push one frame (bytes or a scapy packet) in on ``dev``; return what it caused."""
        return self.send_many([(dev, frame, time)])

    def send_many(self, items: Iterable[tuple[str, Any] | tuple[str, Any, float | None]]) -> list[Output]:
        """Push several frames (in order); return everything they caused once all committed."""
        s = self._s()
        waits: dict[int, int] = {}
        out: list[Output] = []
        for item in items:
            dev, frame = item[0], item[1]
            t = item[2] if len(item) > 2 else None
            devi = self._dev_index(dev)
            if self._set_time(t) and not s.local:   # every worker moves to the new time
                for slot in range(s.workers):
                    waits[slot] = s.tick(slot, self._clock_ns)
            slot, seq = s.inject(bytes(frame), devi, self._clock_ns)
            if s.local:
                s.wait_rx(slot, seq)
                out += self._drain()
            else:
                waits[slot] = seq
        for slot, seq in waits.items():
            s.wait_rx(slot, seq)
        return out + self._drain()

    def advance(self, seconds: float) -> list[Output]:
        """Move the virtual clock forward; run the expiries and periodic handlers that fall due."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        s = self._s()
        self._clock_ns += int(round(seconds * 1e9))
        seqs = [(slot, s.tick(slot, self._clock_ns)) for slot in range(1 if s.local else s.workers)]
        for slot, seq in seqs:
            s.wait_rx(slot, seq)
        if not s.local:
            s.set_clock(self._clock_ns)
        return self._drain()

    def transact(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in one transaction in the control process (to inspect state)."""
        s = self._s()
        s.set_clock(self._clock_ns)
        return s.run_in_tx(fn, *args)

    def stats(self) -> dict[str, Any]:
        """Counters so far, in the shape of ``nfos run --stats-json``."""
        return self._s().summarize(0.0, 0)

    # ------------------------------------------------------------ helpers
    def _s(self) -> Session:
        if self.session is None:
            raise RuntimeError("use the Harness as a context manager: with Harness(...) as h:")
        return self.session

    def _dev_index(self, dev: str | int) -> int:
        devices = self._s().nf.devices
        if isinstance(dev, int) and 0 <= dev < len(devices):
            return dev
        if dev in devices:
            return devices.index(dev)
        raise ValueError(f"unknown device {dev!r} (the NF's devices are {', '.join(devices)})")

    def _set_time(self, t: float | None) -> bool:
        """Move the clock to ``t`` seconds (None: stay); True if it moved."""
        if t is None:
            return False
        ns = int(round(t * 1e9))
        if ns < self._clock_ns:
            raise ValueError(f"time {t} s is earlier than the clock ({self.now} s)")
        moved = ns > self._clock_ns
        self._clock_ns = ns
        return moved

    def _drain(self) -> list[Output]:
        s = self._s()
        s.drain()
        return s.sink.take() if s.sink is not None else []
