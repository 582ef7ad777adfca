"""The in-place read path (issue 11): reads of Map, Vector, Counter and DistributedObj in an
STM transaction copy nothing, record views stay coherent with the transaction's own writes,
and a read that another slot's commit made stale aborts the transaction instead of being used."""

import os

import pytest

from nfos import _core
from twoproc import TwoProcs

HERE = os.path.dirname(os.path.abspath(__file__))
MAP_NF = os.path.join(HERE, "map_nf.py")


@pytest.fixture
def two():
    t = TwoProcs(MAP_NF)
    yield t
    t.close()


def in_stm(fn):
    """fn() in an STM transaction of worker slot 0 (this process), committed; its result."""
    _core.set_slot(0)
    _core.tx_begin(_core.TX_STM, 0)
    try:
        r = fn()
    except BaseException:
        _core.tx_abort()
        raise
    assert _core.tx_commit()
    return r


def test_two_views_of_one_entry_see_each_others_writes(two):
    m = two.nf.state.m
    in_stm(lambda: m.set((1, 2)))

    def body():
        a, b = m.get((1, 2)), m.get((1, 2))   # both read the bucket in place
        assert (a.count, b.count) == (0, 0)
        a.count = 7                           # the first write copies the bucket ...
        assert b.count == 7                   # ... and every view of it follows the copy
        b.tag = -3
        assert (a.count, a.tag) == (7, -3)
        m.set((1, 2)).count += 1              # a write through the Map itself
        assert (a.count, b.count) == (8, 8)
        assert m.get((1, 2)).count == 8

    in_stm(body)
    assert in_stm(lambda: (m.get((1, 2)).count, m.get((1, 2)).tag)) == (8, -3)


def test_a_view_read_after_its_transaction_is_refused(two):
    m = two.nf.state.m
    in_stm(lambda: m.set((3, 4)))
    v = in_stm(lambda: m.get((3, 4)))
    with pytest.raises(RuntimeError, match="finished transaction"):
        _ = v.count


def test_a_view_used_as_a_key_and_scalar_reads(two):
    st = two.nf.state
    in_stm(lambda: (st.ints.set(5, -9), st.expired.__setitem__(2, 4)))
    assert in_stm(lambda: (st.ints.get(5), st.ints.get(6, "none"), 5 in st.ints, 6 in st.ints,
                           st.expired[2], st.expired[3])) == (-9, "none", True, False, 4, 0)


def test_an_in_place_read_made_stale_by_a_commit_aborts_a_later_read(two):
    """The child reads a value in place; the parent commits a change to it; the child's
    reading the same field again must not return the new value in the same transaction."""
    m = two.nf.state.m
    in_stm(lambda: m.set((1, 1)))
    seen = []

    def child():
        v = m.get((1, 1))
        seen.append(v.count)
        os.write(w, b"x")    # let the parent commit (below) ...
        os.read(r2, 1)       # ... and wait for it
        seen.append(v.count)  # stale: must raise TransactionAborted, not read 5

    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            _core.set_slot(0)
            _core.tx_begin(_core.TX_STM, 0)
            try:
                child()
                code = 1   # read a changed value
            except BaseException as e:
                code = 0 if type(e).__name__ == "TransactionAborted" and seen == [0] else 2
                _core.tx_abort()
        finally:
            os._exit(code)
    os.read(r, 1)
    _core.set_slot(1)   # the control slot: another process's commit
    _core.tx_begin(_core.TX_STM, 0)
    m.get((1, 1)).count = 5
    assert _core.tx_commit()
    os.write(w2, b"x")
    _, status = os.waitpid(pid, 0)
    for fd in (r, w, r2, w2):
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_dropped_view_is_reused_and_a_kept_one_never_is(two):
    """Views are reused once nothing but the runtime holds them (as the Packet is): a view
    the handler keeps is never re-aimed at another record, in or after its transaction."""
    m = two.nf.state.m
    keys = [(k, k) for k in range(1, 41)]

    def fill():
        for k in keys:
            m.set(k).count = k[0]

    in_stm(fill)

    def body():
        a = m.get(keys[0])
        dropped = id(a)
        del a
        assert id(m.get(keys[1])) == dropped                # nothing held it: re-aimed
        kept = [m.get(k) for k in keys]                      # more views than the runtime keeps
        assert [v.count for v in kept] == [k[0] for k in keys]
        assert len({id(v) for v in kept}) == len(keys)      # each held view is its own
        return kept[0]

    old = in_stm(body)
    assert in_stm(lambda: [m.get(k).count for k in keys]) == [k[0] for k in keys]
    with pytest.raises(RuntimeError, match="finished transaction"):   # not re-aimed by that transaction
        _ = old.count
