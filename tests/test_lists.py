"""One list per kind of name: abort causes, structure operations and counters are defined once
(src/nfos/_core/*.def), and the outputs and the docs follow them."""

from __future__ import annotations

import os
import re

from nfos import _core
from nfos.io.gen import gen_caida
from nfos.runtime.live import prometheus_families
from nfos.runtime.replay import replay
from nfos.testing import Harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIREWALL = os.path.join(ROOT, "examples", "firewall.py")


def names(text: str) -> list[str]:
    return re.findall(r"`([a-z_][a-z0-9_]*)`", text)


def by_agg(*aggs: str) -> list[str]:
    return [name for name, _n, agg, _doc in _core.COUNTERS if agg in aggs]


def readme_stats_json() -> dict[str, str]:
    """The bullets of README's "`--stats-json` holds:" list, by their first words."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = text.split("`--stats-json` holds:", 1)[1].split("\n\n", 2)[1]
    bullets = [" ".join(b.split()) for b in re.split(r"\n- ", "\n" + block) if b.strip()]
    return {b.split()[0].strip("`:"): b for b in bullets}


def test_the_c_lists_are_exported():
    assert [c for c, _doc in _core.ABORT_CAUSES] == ["locked", "validation", "snapshot", "too_large",
                                                     "handler_error"]
    assert _core.OPERATIONS[0] == ("", "none", "read")
    assert all(rw in ("read", "write") for _k, _n, rw in _core.OPERATIONS)
    assert len({n for n, *_ in _core.COUNTERS}) == len(_core.COUNTERS)
    assert {agg for _n, _l, agg, _d in _core.COUNTERS} == {"sum", "live", "gauge", "internal"}
    assert all(doc for *_x, doc in _core.COUNTERS)


def test_readme_stats_json_lists_the_counters():
    b = readme_stats_json()
    assert names(b["the"].split(":", 1)[1]) == by_agg("sum")
    assert names(b["live"]) == by_agg("live")
    row = b["per_worker"]
    alias = _core.COUNTER_ALIASES["per_worker"]
    assert all(f"`{name}` as `{a}`" in row for name, a in alias.items())
    gauges = names(row.split("gauges", 1)[1])
    assert gauges == [*by_agg("gauge"), "busy_s"]


def test_stats_json_has_exactly_the_documented_keys(tmp_path):
    b = readme_stats_json()
    derived = b["derived"]
    replay_extra = names(derived.split("replays add", 1)[1].split("live runs", 1)[0])
    live_extra = names(derived.split("live runs", 1)[1])
    base = names(derived.split(";", 1)[0])
    trace = gen_caida(600, 60, reverse=0.5, seed=3)
    stats = replay(FIREWALL, trace, workers=2).stats
    assert set(stats) == {*by_agg("sum"), *base, "per_worker", *replay_extra}
    row_key = _core.COUNTER_ALIASES["per_worker"]
    for row in stats["per_worker"]:
        assert set(row) == {"worker", *[row_key.get(n, n) for n in by_agg("sum", "gauge")], "busy_s"}
    assert set(stats["packets_out"]) == {"lan", "wan"}
    assert set(stats["aborts_by_cause"]) == {c for c, _ in _core.ABORT_CAUSES}
    assert stats["packets_in"] == len(trace) == sum(w["packets"] for w in stats["per_worker"])
    assert live_extra == ["mode", "interfaces", "stopped_by"]


def test_live_summaries_add_the_live_counters():
    with Harness(FIREWALL, workers=0) as h:
        stats = h.session.summarize(1.0, 0, live=True)
    assert set(by_agg("live")) <= set(stats) and set(by_agg("live")) <= set(stats["per_worker"][0])


def test_slot_stats_uses_the_list():
    with Harness(FIREWALL, workers=0):
        st = _core.slot_stats(0)
    assert list(st) == [n for n, *_ in _core.COUNTERS]
    assert len(st["packets_out"]) == 2 and set(st["aborts_by_cause"]) == {c for c, _ in _core.ABORT_CAUSES}


def test_profiler_doc_names_every_abort_cause():
    with open(os.path.join(ROOT, "docs", "profiler.md")) as f:
        text = f.read()
    table = text.split("## Abort causes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| (.+?) \|$", table, re.M)
    assert rows == list(_core.ABORT_CAUSES)


def test_prometheus_names_come_from_the_list():
    st = {n: ([7, 8] if length > 1 and length != len(_core.ABORT_CAUSES) else
              {c: 1 for c, _ in _core.ABORT_CAUSES} if length > 1 else 3)
          for n, length, _agg, _doc in _core.COUNTERS}
    fams = prometheus_families([st, st], ["lan", "wan"])
    alias = _core.COUNTER_ALIASES["prometheus"]
    want = [(f"nfos_{alias.get(n, n)}", "gauge" if agg == "gauge" else "counter")
            for n, _l, agg, _d in _core.COUNTERS if agg != "internal"]
    assert [(name, kind) for name, kind, *_ in fams] == want
    assert ("nfos_rx_packets", "counter") in want and ("nfos_ring_drops", "counter") in want   # pinned
    out = next(f for f in fams if f[0] == "nfos_packets_out")
    assert out[3] == ["worker", "device"] and (["1", "wan"], 8) in out[4]
    causes = next(f for f in fams if f[0] == "nfos_aborts_by_cause")
    assert causes[3] == ["worker", "cause"] and len(causes[4]) == 2 * len(_core.ABORT_CAUSES)


def test_every_structure_kind_is_a_plugin_the_profiler_asks():
    import importlib

    from nfos.structures.base import STRUCTURES

    analyze = importlib.import_module("nfos.profiler.analyze")

    kinds = {kind for kind, _name, _rw in _core.OPERATIONS if kind}
    assert kinds == set(STRUCTURES), "operations.def kinds and the structure classes differ"
    for kind, cls in STRUCTURES.items():
        assert cls.operations == tuple(n for k, n, _rw in _core.OPERATIONS if k == kind)
        assert "classify" in vars(cls), f"{cls.__name__} does not classify its conflicts"
    with open(analyze.__file__) as f:
        source = f.read()
    assert not [k for k in kinds if f'"{k}"' in source or f"'{k}'" in source], "analyze.py branches on a structure"
