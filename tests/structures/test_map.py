"""Map: dict semantics from any worker, and conflicts at exactly bucket granularity."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nfos
from nfos import _core
from nfos.testing import Harness
from twoproc import TwoProcs

HERE = os.path.dirname(os.path.abspath(__file__))
MAP_NF = os.path.join(HERE, "map_nf.py")
OPS_NF = os.path.join(HERE, "map_ops_nf.py")


@pytest.fixture
def two():
    t = TwoProcs(MAP_NF)
    yield t
    t.close()


def keys_in_buckets(m, same: bool):
    """Two keys whose buckets are equal (same=True) or differ."""
    first = (0x0A000001, 1000)
    b = m.bucket_of(first)
    for port in range(1001, 5000):
        k = (0x0A000001, port)
        if (m.bucket_of(k) == b) == same:
            return first, k
    raise AssertionError("no such key")


@pytest.mark.parametrize("same_bucket", [True, False])
def test_conflict_exactly_when_keys_share_a_bucket(two, same_bucket):
    m = two.nf.state.m
    k1, k2 = keys_in_buckets(m, same_bucket)
    assert k1 != k2

    def child():
        m.set(k1).count = 1

    def parent():
        m.set(k2).count = 2

    child_ok, parent_ok = two.run_pair(child, parent)
    assert parent_ok
    assert child_ok is (not same_bucket)
    if same_bucket:
        cause, sid, index, own_op, other_op, other_slot, *_ = two.conflicts()[-1]
        assert (sid, index) == (m._struct_id, m.bucket_of(k1))
        assert (own_op, other_op, other_slot) == ("set", "set", 1)
        assert cause in ("validation", "locked")


def test_get_conflicts_with_set_of_the_same_key_only_when_writing(two):
    m = two.nf.state.m
    k1, k2 = keys_in_buckets(m, True)
    # a read-only transaction never aborts: its snapshot stays consistent
    ok, _ = two.run_pair(lambda: m.get(k1), lambda: m.set(k1))
    assert ok
    # a get followed by a write elsewhere must abort when the key was changed meanwhile
    ok, _ = two.run_pair(lambda: (m.get(k1), two.nf.state.ints.set(7, 1)), lambda: m.set(k1))
    assert not ok


def test_same_key_conflict_is_recorded_as_same_key(two):
    m = two.nf.state.m
    k = (0x0A000009, 99)
    two.run_pair(lambda: m.set(k), lambda: m.set(k))
    rec = two.conflicts()[-1]
    own_detail, other_detail = rec[-2], rec[-1]
    assert own_detail == other_detail != 0   # both sides wrote the key with this hash


def test_more_buckets_remove_the_collision():
    t = TwoProcs(MAP_NF, params=["buckets=1"])
    try:
        m = t.nf.state.m
        assert m.buckets == 1
        ok, _ = t.run_pair(lambda: m.set((1, 1)), lambda: m.set((2, 2)))
        assert not ok   # one bucket: every pair of keys collides
    finally:
        t.close()


def test_full_bucket_raises_mapfull_and_keeps_entries():
    t = TwoProcs(MAP_NF, params=["buckets=1"])
    try:
        m = t.nf.state.m
        from nfos import _core

        _core.tx_begin(_core.TX_DIRECT, 0)
        for i in range(m.slots_per_bucket):
            m.set((i, i)).count = i
        with pytest.raises(nfos.MapFull, match="bucket 0 is full"):
            m.set((99, 99))
        assert isinstance(nfos.MapFull("x"), nfos.TableFull)
        assert sorted((k, v.count) for k, v in m.items()) == [((i, i), i) for i in range(m.slots_per_bucket)]
        _core.tx_commit()
    finally:
        t.close()


OPS = st.lists(st.tuples(st.sampled_from(["set", "get", "delete"]), st.integers(0, 40), st.integers(-5, 5)),
               min_size=1, max_size=120)


@settings(max_examples=12, deadline=None)
@given(OPS)
def test_map_ops_from_two_workers_equal_a_dict(ops):
    """Each op is a packet steered to one of two workers; sent one at a time, the
    serial order is the send order, so results must equal a dict's."""
    from .map_ops import op_frame, parse_reply

    with Harness(OPS_NF, workers=2) as h:
        ref: dict[int, int] = {}
        for op, k, v in ops:
            out = h.send("a", op_frame(op, k, v))
            got = parse_reply(out)
            if op == "set":
                ref[k] = v
                assert got is None
            elif op == "get":
                assert got == ref.get(k, "missing")
            else:
                assert got == (k in ref)
                ref.pop(k, None)
        assert dict(h.transact(lambda: h.nf.state.m.items())) == ref
        workers_used = sum(1 for w in h.stats()["per_worker"] if w["packets"])
        assert workers_used == len({_core.steer_frame(op_frame(*o), 0)[0] for o in ops})   # as RSS spreads them
