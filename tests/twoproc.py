"""Two processes stepping through transactions in a controlled order.

`TwoProcs(nf_path)` loads an NF with one worker slot plus the control slot;
`run_pair(first, second)` runs `first()` in a transaction in a forked child
(slot 0) up to its commit, then `second()` in a transaction in the parent
(committed), then lets the child commit, and returns (child committed?,
parent committed?).  So the child's transaction overlaps the parent's
completely: a conflict must abort the child.
"""

from __future__ import annotations

import os

from nfos import _core
from nfos.runtime.session import Session


class TwoProcs:
    def __init__(self, nf_path: str, params=None, profile: bool = False):
        self.session = Session(nf_path, workers=1, params=params, collect_output=False, profile=profile)
        self.session.init()
        self.nf = self.session.nf

    def close(self):
        self.session.close()

    def run_pair(self, first, second, prelude=None) -> tuple[bool, bool]:
        r1, w1 = os.pipe()   # child -> parent: "opened"
        r2, w2 = os.pipe()   # parent -> child: "commit now"
        r3, w3 = os.pipe()   # child -> parent: result
        pid = os.fork()
        if pid == 0:
            ok = b"0"
            try:
                _core.set_slot(0)
                if prelude is not None:   # its own committed transaction, before the overlap
                    _core.tx_begin(_core.TX_STM, 0)
                    prelude()
                    _core.tx_commit()
                _core.tx_begin(_core.TX_STM, 0)
                try:
                    first()
                    os.write(w1, b"x")
                    os.read(r2, 1)
                    ok = b"1" if _core.tx_commit() else b"0"
                except BaseException:
                    _core.tx_abort()
                    os.write(w1, b"x")
                    ok = b"e"
            finally:
                os.write(w3, ok)
                os._exit(0)
        os.read(r1, 1)
        _core.tx_begin(_core.TX_STM, 0)
        try:
            second()
            parent_ok = _core.tx_commit()
        except BaseException:
            _core.tx_abort()
            raise
        os.write(w2, b"x")
        child = os.read(r3, 1)
        os.waitpid(pid, 0)
        for fd in (r1, w1, r2, w2, r3, w3):
            os.close(fd)
        assert child != b"e", "the child's transaction raised"
        return child == b"1", parent_ok

    def conflicts(self) -> list[tuple]:
        return _core.conflicts(0)[0]
