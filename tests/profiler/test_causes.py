"""Each conflict cause, forced deterministically, is named with its structure, lines and recipe."""

import json
import os

import jsonschema
import pytest

from nfos import _core
from nfos.profiler import analyze, render_html, schema, to_json
from nfos.structures.base import registry
from twoproc import TwoProcs

NF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profile_nf.py")
LINE = {"vec": 27, "merge": 31, "update": 36, "map": 40, "allocate": 44, "refresh": 52}


def profile_of(two: TwoProcs):
    recs = two.conflicts()
    stats = {"nf": "profiled", "workers": 1, "transactions": len(recs) * 2, "commits": len(recs),
             "aborts": len(recs), "abort_rate": 0.5, "imbalance": 1.0,
             "per_worker": [{"packets": 0, "transactions": len(recs) * 2, "aborts": len(recs)}]}
    return analyze(stats, recs, 0, registry, NF, dict(two.nf.params))


def in_tx(fn, *args):
    _core.tx_begin(_core.TX_STM, 0)
    r = fn(*args)
    assert _core.tx_commit()
    return r


@pytest.fixture
def two():
    t = TwoProcs(NF, profile=True)
    yield t
    t.close()


def only_cause(p):
    assert len(p.causes) == 1, [(c.structure, c.ops, c.cause) for c in p.causes]
    return p.causes[0]


def test_vector_same_element(two):
    m = two.session.module
    assert two.run_pair(lambda: m.vec_bump(5), lambda: m.vec_bump(5)) == (False, True)
    c = only_cause(profile_of(two))
    assert (c.structure, c.ops) == ("Vector 'vec'", "write vs write")
    assert c.created_at == "profile_nf.py:18"
    assert c.cause == "two transactions used the same element and at least one wrote it: [5]"
    assert "DistributedObj" in c.recipe and c.parameter == "DistributedObj"
    assert c.lines == [LINE["vec"]]


def test_distributed_read_vs_update(two):
    m = two.session.module
    assert two.run_pair(m.merge_and_write, m.update) == (False, True)
    p = profile_of(two)
    c = only_cause(p)
    assert (c.structure, c.ops, c.parameter) == ("DistributedObj 'counters'", "read vs update", "max_staleness")
    assert "raise max_staleness of 'counters' (profile_nf.py:20), now 0s" in c.recipe
    assert c.recipe.endswith("now 0s, set by --param staleness")
    assert c.lines == [LINE["merge"], LINE["update"]]
    assert [(r.line, r.code) for r in p.lines] == [(31, "nf.state.counters.read()                 # line 31"),
                                                   (36, "nf.state.counters.update().n += 1        # line 36")]


def test_map_same_key(two):
    m = two.session.module
    assert two.run_pair(lambda: m.map_set(7), lambda: m.map_set(7)) == (False, True)
    c = only_cause(profile_of(two))
    assert (c.structure, c.ops) == ("Map 'table'", "set vs set")
    assert c.cause == "two transactions used the same key and at least one wrote it"
    assert "DistributedObj" in c.recipe


def test_map_collision(two):
    m = two.session.module
    table = two.nf.state.table
    k2 = next(k for k in range(8, 10_000) if table.bucket_of(k) == table.bucket_of(7))
    assert two.run_pair(lambda: m.map_set(7), lambda: m.map_set(k2)) == (False, True)
    c = only_cause(profile_of(two))
    assert c.cause == f"different keys collide in one bucket: bucket {table.bucket_of(7)}"
    assert "more buckets (now 8, set by --param buckets) or another hash (now crc32c: try mult" in c.recipe
    assert c.parameter == "buckets"
    assert c.lines == [LINE["map"]]


def test_allocator_pool_exhausted(two):
    m = two.session.module
    # The control slot's pool starts empty: its first allocation steals half of worker 0's pool.
    in_tx(m.allocate)
    # Worker 0 empties the rest of its pool, then must steal from the control slot's pool
    # while the control slot allocates from that same pool.
    assert two.run_pair(m.allocate, m.allocate, prelude=lambda: [m.allocate() for _ in range(4)]) == (False, True)
    c = only_cause(profile_of(two))
    assert (c.structure, c.ops, c.parameter) == ("Allocator 'pool'", "allocate vs allocate", "capacity")
    assert c.cause == "a worker's pool ran dry and it took indexes from another pool"
    assert c.recipe == "over-provision capacity of 'pool' (profile_nf.py:22), now 8"


def test_allocator_refreshes_of_one_index(two):
    m = two.session.module
    assert two.run_pair(lambda: m.refresh(1), lambda: m.refresh(1),
                        prelude=lambda: [m.lease() for _ in range(3)]) == (False, True)
    c = only_cause(profile_of(two))
    assert c.structure == "Allocator 'leases'" and c.parameter == "refresh_interval"
    assert c.ops == "refresh vs refresh"
    assert c.cause == "refreshes of the same index (its lease cell) or of neighbours in an expiry list"
    assert c.recipe == "raise refresh_interval of 'leases' (profile_nf.py:23), now 0s"
    assert c.lines == [LINE["refresh"]]


def test_allocator_refreshes_of_other_indexes_touch_the_list_once_per_sweep(two):
    """A refresh writes its cell; it moves the index in its pool's expiry list only once the
    lease has moved a sweep period (1 s for a 100 s lease) past the list's key."""
    m = two.session.module
    t0 = 10**12
    _core.set_clock(t0)
    prelude = lambda: [m.lease() for _ in range(3)]   # noqa: E731  indexes 0, 1, 2 (the tail)
    assert two.run_pair(lambda: m.refresh(1), lambda: m.refresh(0), prelude=prelude) == (True, True)
    assert profile_of(two).causes == []

    def later(i):
        _core.set_clock(t0 + 2 * 10**9)
        m.refresh(i)

    assert two.run_pair(lambda: later(1), lambda: later(0)) == (False, True)
    c = only_cause(profile_of(two))
    assert (c.structure, c.ops, c.parameter) == ("Allocator 'leases'", "refresh vs refresh", "refresh_interval")
    assert c.cause.startswith("refreshes ") and "expiry list" in c.cause   # met on a neighbour cell or the head


def test_report_validates_against_the_schema_and_renders(two, tmp_path):
    m = two.session.module
    two.run_pair(m.merge_and_write, m.update)
    two.run_pair(lambda: m.vec_bump(1), lambda: m.vec_bump(1))
    two.run_pair(lambda: m.vec_bump(2), lambda: m.vec_bump(2))
    p = profile_of(two)
    doc = json.loads(json.dumps(to_json(p)))
    jsonschema.validate(doc, schema())
    assert [c["aborts"] for c in doc["causes"]] == [2, 1]          # ranked
    assert doc["causes"][0]["structure"] == "Vector 'vec'"
    assert doc["causes"][0]["cause"].endswith(": [1], [2]")
    page = render_html(p)
    assert page.startswith("<!doctype html>") and "Vector &#x27;vec&#x27;" in page and "<svg" in page
