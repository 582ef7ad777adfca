"""``sys.stdout`` and ``sys.stderr`` while an NF is loaded: side effects once per commit.

A handler may abort and run again (a conflict, a batch split, a retry), so a
``print()`` or ``logging`` call made inside it must not reach the real stream
before the transaction commits.  While a session is open, ``sys.stdout`` and
``sys.stderr`` are :class:`TxStream` proxies (installed before the NF module is
imported, so a ``logging.StreamHandler`` created at import time writes through
one): text written inside a transaction that may still abort is buffered with
the transaction's output (``_core.tx_text``), written to the real stream at
commit, in commit order, and discarded by an abort.  Outside such a
transaction (the runtime itself, ``@nf.init``), text is written through at
once.  Forked workers inherit the proxies.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from nfos import _core

STDOUT, STDERR, FLUSH = 1, 2, 4   # the stream numbers of _core.tx_text (worker_loop.h)


class TxStream:
    """A text stream that defers what handlers write to their transaction's commit."""

    def __init__(self, real: TextIO, stream: int) -> None:
        self._real = real
        self._stream = stream

    @property
    def real(self) -> TextIO:
        """The stream this proxy writes to."""
        return self._real

    def write(self, text: str) -> int:
        if isinstance(text, str) and text and _core.tx_text(self._stream, text):
            return len(text)
        return self._real.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _core.tx_text(self._stream | FLUSH, ""):
            return   # flushed after the text, at commit
        self._real.flush()

    def __getattr__(self, name: str) -> Any:   # encoding, fileno, isatty, buffer, ...
        return getattr(self._real, name)

    def __repr__(self) -> str:
        return f"<nfos.TxStream over {self._real!r}>"


Saved = tuple[Any, Any, Any, Any]   # (real stdout, proxy, real stderr, proxy)


def install() -> Saved:
    """Put proxies in front of sys.stdout and sys.stderr (unless they are proxies already)."""
    out = err = None
    if sys.stdout is not None and not isinstance(sys.stdout, TxStream):
        out = TxStream(sys.stdout, STDOUT)
    if sys.stderr is not None and not isinstance(sys.stderr, TxStream):
        err = TxStream(sys.stderr, STDERR)
    saved = (sys.stdout, out, sys.stderr, err)
    if out is not None:
        sys.stdout = out
    if err is not None:
        sys.stderr = err
    return saved


def restore(saved: Saved) -> None:
    """Undo :func:`install` where its proxies are still in place."""
    real_out, out, real_err, err = saved
    if out is not None and sys.stdout is out:
        sys.stdout = real_out
    if err is not None and sys.stderr is err:
        sys.stderr = real_err


def real(stream: Any) -> Any:
    """The stream under any proxies (the runtime's own messages bypass the buffering)."""
    while isinstance(stream, TxStream):
        stream = stream.real
    return stream
