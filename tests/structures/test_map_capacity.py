"""Issue 10.5: a Map's capacity is the number of entries it accepts, exactly, with any number of
workers (per-worker entry budgets, as the Allocator's pools); deleting frees room; a worker whose
budget ran dry steals, and the profiler says so with the recipe "over-provision capacity"."""

from __future__ import annotations

import pytest

import nfos
from frames import udp_frame
from nfos import _core
from nfos.profiler import analyze
from nfos.structures.base import registry
from nfos.testing import Harness
from twoproc import TwoProcs

# dport 1xxx inserts key xxx, 2xxx deletes it; the reply (on wan) says what happened
SMALL = """
import nfos

nf = nfos.NF("small_map", devices=["lan", "wan"], params={"capacity": 4})


@nf.init
def setup(p):
    nf.state.m = nfos.Map(nfos.u32, nfos.u32, p.capacity)


@nf.orphan
def op(pkt):
    port = pkt.udp.dport
    key = port % 1000
    try:
        if port < 2000:
            nf.state.m[key] = key
            nf.emit(b"ok", "wan")
        else:
            nf.emit(b"deleted" if nf.state.m.delete(key) else b"absent", "wan")
    except nfos.MapFull as e:
        nf.emit(b"full: " + str(e).encode(), "wan")
"""


def op(h: Harness, port: int, src: int) -> bytes:
    out = h.send("lan", udp_frame(src=f"10.6.{src}.1", dst="192.0.2.9", sport=7, dport=port))
    assert len(out) == 1, out
    return out[0][1]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_map_of_capacity_4_holds_exactly_4(write_nf, workers):
    with Harness(write_nf(SMALL), workers=workers) as h:
        m = h.nf.state.m
        assert m.capacity == 4 and m.buckets == 4 and m.slots_per_bucket == 8   # room for 32 in buckets
        srcs = list(range(12))   # inserts from both workers (orphans are spread by addresses)
        used = {_core.steer_frame(udp_frame(src=f"10.6.{s}.1", dst="192.0.2.9", sport=7, dport=1000), 0)[0]
                for s in srcs[:5]}
        if workers:
            assert used == {0, 1}
        for k in range(4):
            assert op(h, 1000 + k, srcs[k]) == b"ok"
        assert op(h, 1004, srcs[4]) == b"full: Map 'm' is full (capacity 4 entries)"
        assert op(h, 1001, srcs[5]) == b"ok"   # an existing key: an update, no new entry
        assert h.transact(lambda: len(m)) == 4
        assert op(h, 2002, srcs[6]) == b"deleted"   # deleting frees room ...
        assert h.transact(lambda: len(m)) == 3
        assert op(h, 1007, srcs[7]) == b"ok"        # ... for one more key
        assert op(h, 1008, srcs[8]) == b"full: Map 'm' is full (capacity 4 entries)"
        assert sorted(h.transact(lambda: [k for k, _v in m.items()])) == [0, 1, 3, 7]
        assert h.stats()["handler_errors"] == 0


def test_a_map_is_true_and_has_a_length_outside_handlers_only_in_a_transaction(write_nf):
    with Harness(write_nf(SMALL), workers=0) as h:
        m = h.nf.state.m
        assert bool(m) is True   # no transaction needed: not len(m) == 0
        assert h.transact(lambda: len(m)) == 0
        with pytest.raises(RuntimeError):
            len(m)


def test_a_budget_that_ran_dry_steals_and_the_profiler_says_over_provision(write_nf):
    two = TwoProcs(write_nf(SMALL), profile=True)   # one worker (slot 0) and the control slot: budgets 2 + 2
    try:
        m = two.nf.state.m
        # the child fills its own budget (2), then inserts a third key: it must take entries from the
        # control slot's budget while the parent inserts into that same budget
        ok = two.run_pair(lambda: m.set(12, 12), lambda: m.set(13, 13),
                          prelude=lambda: [m.set(10, 10), m.set(11, 11)])
        assert ok == (False, True)
        recs = two.conflicts()
        stats = {"nf": "small_map", "workers": 1, "transactions": 2, "commits": 1, "aborts": len(recs),
                 "abort_rate": 0.5, "imbalance": 1.0, "per_worker": [{"packets": 0, "transactions": 2, "aborts": 1}]}
        p = analyze(stats, recs, 0, registry, two.session.path, dict(two.nf.params))
    finally:
        two.close()
    assert len(p.causes) == 1, p.causes
    c = p.causes[0]
    assert (c.structure, c.ops, c.parameter) == ("Map 'm'", "set vs set", "capacity")
    assert c.cause == "a worker's entry budget ran dry and it took entries from another's: budget of slot 1"
    assert c.recipe == "over-provision capacity of 'm' (nf.py:8), now 4, set by --param capacity"


def test_mapfull_is_a_tablefull():
    assert issubclass(nfos.MapFull, nfos.TableFull)
