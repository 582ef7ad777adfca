"""Where a replay is, for the user: reading, steering into the workers, processing, writing
output, done.

A :class:`Phases` reporter is told when each phase starts, how far it got (packets and bytes)
and when it finishes.  The base class only records the phases; :class:`PlainPhases` prints
one line per finished phase (no terminal: logs, CI, pipes), and ``nfos run`` on a terminal
draws a live progress line with rich instead (cli.py).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import IO

#: the phases of a replay, in order
PHASES = ("reading", "steering", "processing", "writing output", "done")


@dataclass
class Phase:
    name: str                  # one of PHASES
    label: str                 # what the user reads: "reading t.pcapng", "steering into 2 workers", ...
    unit: str = "packets"
    total: int | None = None   # units expected (None: unknown)
    total_bytes: int | None = None
    done: int = 0
    nbytes: int = 0
    started: float = 0.0       # time.monotonic()
    seconds: float = 0.0       # when finished: how long it took
    note: str = ""             # a tail for the phase's line (e.g. where output went)

    @property
    def mb(self) -> float:
        return self.nbytes / 1e6

    def rate(self) -> str:
        """MB/s, or "-" for a phase too short to measure."""
        elapsed = self.seconds or (time.monotonic() - self.started)
        return f"{self.mb / elapsed:,.1f} MB/s" if elapsed > 1e-4 else "- MB/s"

    def line(self) -> str:
        """The phase's one line: counts, bytes, time and MB/s."""
        if self.name == "done":
            return f"nfos: {self.label}: {self.done:,} {self.unit} in {self.seconds:.1f} s{self.note}"
        return (f"nfos: {self.label}: {self.done:,} {self.unit}, {self.mb:,.1f} MB in {self.seconds:.1f} s "
                f"({self.rate()}){self.note}")


class Phases:
    """Records the phases of a replay; shows nothing (subclasses do)."""

    def __init__(self) -> None:
        self.finished: list[Phase] = []
        self.current: Phase | None = None
        self.t0 = time.monotonic()

    def start(self, name: str, label: str, total: int | None = None, total_bytes: int | None = None,
              unit: str = "packets") -> None:
        if self.current is not None:
            self.finish()
        self.current = Phase(name, label, unit, total, total_bytes, started=time.monotonic())
        self.shown_start(self.current)

    def update(self, done: int, nbytes: int | None = None) -> None:
        """How far the current phase is; bytes default to the done share of its total bytes."""
        p = self.current
        if p is None:
            return
        p.done = done
        if nbytes is not None:
            p.nbytes = nbytes
        elif p.total and p.total_bytes is not None:
            p.nbytes = p.total_bytes * min(done, p.total) // p.total
        self.shown_update(p)

    def finish(self, done: int | None = None, nbytes: int | None = None, note: str = "",
               seconds: float | None = None) -> None:
        """The current phase is over (``seconds``: its time, when not the wall time since its start)."""
        p = self.current
        if p is None:
            return
        if done is not None:
            p.done = done
        if nbytes is not None:
            p.nbytes = nbytes
        elif p.total_bytes is not None and (p.total is None or p.done >= p.total):
            p.nbytes = p.total_bytes
        p.seconds = seconds if seconds else time.monotonic() - p.started
        p.note = note
        self.current = None
        self.finished.append(p)
        self.shown_finish(p)

    def done(self, packets: int, note: str = "") -> None:
        """The last phase: the whole run."""
        self.start("done", "done")
        p = self.current
        assert p is not None
        p.started = self.t0
        self.finish(packets, 0, note)

    def close(self) -> None:
        """Stop showing (an interrupted run)."""

    # what subclasses show
    def shown_start(self, p: Phase) -> None:
        pass

    def shown_update(self, p: Phase) -> None:
        pass

    def shown_finish(self, p: Phase) -> None:
        pass


class PlainPhases(Phases):
    """One line per finished phase, for a log: ``nfos: steering into 2 workers: 4,000,000 packets,
    256.0 MB in 1.2 s (213.3 MB/s)``."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = stream

    def shown_finish(self, p: Phase) -> None:
        out = self.stream or sys.stderr
        print(p.line(), file=out, flush=True)
