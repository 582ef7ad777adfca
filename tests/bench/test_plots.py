"""The figures say what their JSON says (issue 12 point 6): stm_overhead.png's subtitle comes from
the JSON's STM time share (or its "not measured" note when it has none)."""

from __future__ import annotations

import json
import os

import pytest
from bench.harness.plots import plot_stm_overhead, stm_caption, stm_shares

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "bench", "results")


def load(*parts: str) -> dict:
    with open(os.path.join(RESULTS, *parts)) as f:
        return json.load(f)


def test_the_caption_gives_the_measured_share():
    doc = load("issue9-speed", "quick-after", "stm_overhead.json")
    shares = stm_shares(doc)
    assert shares == doc["stm_time_share_1w"] and shares
    caption = stm_caption(doc)
    assert "not measured" not in caption
    lo, hi = min(shares.values()), max(shares.values())
    assert f"{lo:.1%}" in caption and f"{hi:.1%}" in caption and "geomean" in caption


def test_the_caption_says_not_measured_only_when_the_json_does():
    doc = load("2core", "stm_overhead.json")
    assert doc["stm_time_share"] is None and not stm_shares(doc)
    assert stm_caption(doc).startswith("share of time in the STM: not measured")


def test_the_figure_is_drawn_with_the_share_panel(tmp_path):
    pytest.importorskip("matplotlib")
    doc = load("issue9-speed", "quick-after", "stm_overhead.json")
    png = plot_stm_overhead(doc, str(tmp_path / "stm_overhead.png"))
    assert open(png, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"
