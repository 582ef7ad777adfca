"""Vector and DistributedObj conflict exactly where the paper's Tables 3-4 say."""

import os

import pytest

from nfos import _core
from twoproc import TwoProcs

NF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conflict_nf.py")


@pytest.fixture
def two():
    t = TwoProcs(NF)
    yield t
    t.close()


def test_vector_same_index_conflicts_other_index_does_not(two):
    vec = two.nf.state.vec

    def write(i):
        def f():
            vec[i] = vec[i] + 1
        return f

    assert two.run_pair(write(1), write(2)) == (True, True)
    assert two.run_pair(write(3), write(3)) == (False, True)
    cause, sid, index, own_op, other_op, other_slot, *_ = two.conflicts()[-1]
    assert (sid, index, own_op, other_op, other_slot) == (vec._struct_id, 3, "write", "write", 1)


def test_distributed_updates_never_conflict(two):
    c = two.nf.state.counters

    def bump():
        c.update().n += 1

    assert two.run_pair(bump, bump) == (True, True)
    _core.tx_begin(_core.TX_STM, 0)
    assert c.read().n == 2
    _core.tx_commit()


def test_distributed_merge_conflicts_with_an_update(two):
    c, other = two.nf.state.counters, two.nf.state.other

    def read_and_write():
        c.read()          # staleness 0: merges every replica
        other[0] = 1      # a writing transaction must validate what it read

    def bump():
        c.update().n += 1

    assert two.run_pair(read_and_write, bump) == (False, True)
    cause, sid, index, own_op, other_op, other_slot, *_ = two.conflicts()[-1]
    assert (sid, own_op, other_op, other_slot) == (c._struct_id, "read", "update", 1)


def test_staleness_avoids_the_merge_conflict():
    t = TwoProcs(NF, params=["staleness=1s"])
    try:
        c, other = t.nf.state.counters, t.nf.state.other

        def read_and_write():
            assert c.read().n == 0   # served from the cache merged by the prelude
            other[0] = 1

        def bump():
            c.update().n += 1

        # the prelude merges once (cache fresh for 1 s of virtual time, which stands still)
        assert t.run_pair(read_and_write, bump, prelude=lambda: c.read()) == (True, True)
        # without the warm cache the merge reads the replicas, and conflicts

        def merge_and_write():
            c.read()
            other[0] = 2

        assert t.run_pair(merge_and_write, bump) == (False, True)
    finally:
        t.close()
