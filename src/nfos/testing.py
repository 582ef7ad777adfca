"""Unit-test an NF: push frames in, get the frames it sends out (the VPP/BESS way).

    from nfos.testing import Harness

    with Harness("examples/firewall.py", workers=2) as h:
        out = h.send("lan", frame)          # [(device, frame bytes), ...] after commit
        assert out == [("wan", frame)]
        h.advance(61)                       # 61 s of virtual time: expiries and periodic handlers run
        assert h.send("wan", reply) == []

The same test runs in the sequential reference mode (``workers=0``) and with N
worker processes; frames are steered to workers exactly as in ``nfos run``.
Times are seconds of virtual time starting at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nfos.nf import NF
from nfos.runtime.session import Output, OutputSink, Session

RING_SLOTS = 1 << 16
TX_BYTES = 8 << 20

__all__ = ["Harness", "Output"]


class Harness:
    """Run an NF file in a test: ``Harness(nf_path, workers=0, params={...})``, a context manager."""

    def __init__(self, nf_path: str, workers: int = 0, params: dict[str, object] | Sequence[str] | None = None,
                 batch: int = 32, check: bool = True) -> None:
        self.nf_path = nf_path
        self.workers = workers
        self.params = {k: str(v) for k, v in params.items()} if isinstance(params, dict) else params
        self.batch = batch
        self.check = check
        self.session: Session | None = None
        self._clock_ns = 0
        self._periodic = False

    # ---------------------------------------------------------- lifecycle
    def __enter__(self) -> Harness:
        s = Session(self.nf_path, self.workers, self.params, batch=self.batch, collect_output=True,
                    check=self.check)
        try:
            s.init(start_time_ns=0)
            s.open_rings(RING_SLOTS, TX_BYTES)
            s.sink = OutputSink(s.nf.devices, keep=True)
            s.start()
        except BaseException:
            s.close()
            raise
        self.session = s
        self._periodic = bool(s.periodics())
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
            self._set_time(t)
            if not s.local and self._periodic:   # as in sequential mode: periodic work due by then runs first
                for slot, seq in waits.items():
                    s.wait_rx(slot, seq)
                s.set_clock(self._clock_ns)
                s.run_periodics(self._clock_ns)
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
        for slot in range(1 if s.local else s.workers):
            s.wait_rx(slot, s.tick(slot, self._clock_ns))
        if not s.local:
            s.set_clock(self._clock_ns)
            s.run_periodics(self._clock_ns)
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

    def _set_time(self, t: float | None) -> None:
        if t is None:
            return
        ns = int(round(t * 1e9))
        if ns < self._clock_ns:
            raise ValueError(f"time {t} s is earlier than the clock ({self.now} s)")
        self._clock_ns = ns

    def _drain(self) -> list[Output]:
        s = self._s()
        s.drain()
        return s.sink.take() if s.sink is not None else []
