"""`nfos bench --measure barrier --quick`: the periodic barriers' measurement runs, writes its JSON
with the documented keys and draws it; never a timing (issue 10.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import harness as bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = {"kind", "machine", "date", "command", "packets", "repeat", "workers", "oversubscription"}


def nfos(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nfos", *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_the_barrier_measurement_runs_only_when_named(tmp_path):
    r = nfos("bench", "--quick", "--measure", "barrier", "--workers", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "barrier" not in bench.MEASURES   # "all" (and --quick's set) stays as it was
    d = json.loads((tmp_path / "barrier.json").read_text())
    assert d["kind"] == "barrier" and HEADER <= set(d)
    assert d["trace_rate_pps"] == 100_000 and d["trace_packets"] > bench.QUICK_PACKETS
    got = [(p["workers"], p["period"]) for p in d["points"]]
    assert got == [(0, "none"), (0, "1s"), (0, "1ms"), (2, "unbounded"), (2, "none"), (2, "1s"), (2, "1ms")]
    span_ns = int(round(d["virtual_s"] * 1e9))
    for p in d["points"]:
        assert p["pps"] > 0 and p["abort_rate"] == 0
        assert p["barriers"] == {"1s": span_ns // 1_000_000_000, "1ms": span_ns // 1_000_000}.get(p["period"], 0)
        none = next(q for q in d["points"] if q["workers"] == p["workers"] and q["period"] == "none")
        assert p["ratio_vs_none"] == pytest.approx(p["pps"] / none["pps"])
    assert "firewall" in r.stdout and "barriers" in r.stdout
    if (tmp_path / "barrier.png").exists():   # with matplotlib
        assert (tmp_path / "barrier.png").stat().st_size > 0
