"""nfos.Counter: exact totals in every mode; adds never conflict; a merging read conflicts with
an add, and the profiler names the cause and the recipe (raise max_staleness)."""

import os

import pytest

import frames as F
from nfos import _core
from nfos.profiler import analyze
from nfos.structures.base import registry
from nfos.testing import Harness
from twoproc import TwoProcs

NF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "counter_nf.py")


def traffic(n):
    """n UDP frames from n hosts (RSS spreads them), of 72..(72 + n % 40) bytes."""
    return [F.udp_frame(f"10.{i // 250}.{i % 250}.1", "192.0.2.1", 1000 + i, 53, bytes(30 + i % 40))
            for i in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_totals_are_exact(workers):
    frames = traffic(300)
    with Harness(NF, workers=workers) as h:
        out = h.send_many([("lan", f) for f in frames])
        assert sorted(f for d, f in out if d == "wan") == sorted(frames)
        st = h.nf.state
        assert h.transact(lambda: (st.packets.value(), st.bytes.read())) == (300, sum(len(f) for f in frames))
        reads = [int.from_bytes(f, "big") for d, f in out if d == "lan"]
        assert len(reads) == sum(1 for f in frames if len(f) % 3 == 0) and max(reads) <= 300
        stats = h.stats()
        if workers:
            assert min(w["packets"] for w in stats["per_worker"]) > 0, stats["per_worker"]
        else:
            assert reads == sorted(reads)   # one process: each read sees every earlier add


def test_adds_and_values():
    with Harness(NF) as h:
        c = h.nf.state.packets
        h.transact(lambda: (c.add(), c.add(41), c.add(-2)))
        assert h.transact(c.value) == 40
        with pytest.raises(RuntimeError, match="inside a handler"):
            c.value()
        with pytest.raises(TypeError):
            h.transact(lambda: c.add("x"))
        assert h.transact(c.read) == 40 and "Counter" in repr(c)


@pytest.fixture
def two():
    t = TwoProcs(NF, profile=True)
    yield t
    t.close()


def test_adds_never_conflict(two):
    m = two.session.module
    assert two.run_pair(m.add, m.add) == (True, True)
    _core.tx_begin(_core.TX_STM, 0)
    assert two.nf.state.packets.value() == 10
    _core.tx_commit()


def profile_of(two):
    recs = two.conflicts()
    stats = {"nf": "counted", "workers": 1, "transactions": 2, "commits": 1, "aborts": len(recs),
             "abort_rate": 0.5, "imbalance": 1.0, "per_worker": [{"packets": 0, "transactions": 2, "aborts": 1}]}
    return analyze(stats, recs, 0, registry, NF, dict(two.nf.params))


def test_a_merging_read_conflicts_with_an_add_and_the_profiler_says_why(two):
    m = two.session.module
    assert two.run_pair(m.read_and_write, m.add) == (False, True)
    p = profile_of(two)
    assert len(p.causes) == 1, p.causes
    c = p.causes[0]
    assert (c.structure, c.created_at, c.ops, c.parameter) == ("Counter 'packets'", "counter_nf.py:11",
                                                              "read vs add", "max_staleness")
    assert c.cause == "a read had to sum every shard (its cache was older than max_staleness) " \
                      "while another worker added to one"
    assert c.recipe == "raise max_staleness of 'packets' (counter_nf.py:11), now 0s, set by --param staleness"
    assert c.lines == [26, 31]


def test_the_recipe_works():
    two = TwoProcs(NF, params=["staleness=1s"], profile=True)
    try:
        m = two.session.module
        # the child's cache is warm (its own earlier read): within max_staleness a read merges nothing
        assert two.run_pair(m.read_and_write, m.add, prelude=m.warm) == (True, True)
        assert two.conflicts() == []
    finally:
        two.close()
