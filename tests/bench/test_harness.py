"""`nfos bench` end to end on tiny traces (the --quick smoke test): it exits 0, writes one JSON
per measurement with the documented keys, and `--plot` draws the figures.  Timing is never
asserted: only the shape of the results and their internal consistency."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import harness as bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = {"kind", "machine", "date", "command", "packets", "repeat", "workers", "oversubscription"}
MACHINE = {"cpus", "cpu_model", "kernel", "python", "machine"}
NO_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None; from nfos.cli import main; main()"


def nfos(*args: str, block_matplotlib: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", NO_MATPLOTLIB] if block_matplotlib else [sys.executable, "-m", "nfos"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick"
    r = nfos("bench", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout


@pytest.fixture(scope="module")
def docs(quick):
    out, _ = quick
    return {m: json.loads((out / f"{m}.json").read_text()) for m in bench.MEASURES}


def test_quick_writes_one_json_per_measurement(quick, docs):
    out, stdout = quick
    assert sorted(p.name for p in out.glob("*.json")) == sorted(f"{m}.json" for m in bench.MEASURES)
    kinds = {m: d["kind"] for m, d in docs.items()}
    assert kinds == {"throughput": "throughput_vs_workers", "batching": "batching", "stm_overhead": "stm_overhead",
                     "latency": "latency", "memory": "memory", "peers": "peers"}
    for d in docs.values():
        assert HEADER <= set(d) and MACHINE <= set(d["machine"])
        assert d["packets"] == bench.QUICK_PACKETS and d["workers"] == [1, 2] and d["command"].startswith("nfos bench")
    for name in bench.NFS:   # the table names every NF
        assert name in stdout


def test_throughput_points(docs):
    d = docs["throughput"]
    assert set(d["nfs"]) == set(bench.NFS)
    cpus = d["machine"]["cpus"]
    for name, row in d["nfs"].items():
        assert [p["workers"] for p in row["points"]] == [0, 1, 2]
        for p in row["points"]:
            assert {"workers", "batch", "pps", "runs_pps", "abort_rate", "loss", "processes", "oversubscribed",
                    "speedup_vs_1", "efficiency", "vs_peer", "vs_mp_peer"} <= set(p)
            assert p["pps"] > 0 and 0 <= p["abort_rate"] <= 1 and p["loss"] == 0
            assert p["processes"] == (1 if p["workers"] == 0 else p["workers"] + 1)
            assert p["oversubscribed"] == (p["processes"] > cpus)
        assert row["points"][1]["speedup_vs_1"] == 1.0
        nf = bench.NFS[name]
        assert bool(row.get("peer")) == bool(nf.peer) and bool(row.get("mp_peer")) == bool(nf.mp_peer)
        if nf.mp_peer:
            assert [q["workers"] for q in row["mp_peer"]["points"]] == [1, 2]
            for p in row["points"][1:]:
                q = row["mp_peer"]["points"][p["workers"] - 1]
                assert p["vs_mp_peer"] == pytest.approx(p["pps"] / q["pps"])
    assert d["oversubscription"]["max_processes"] == 3
    assert d["oversubscription"]["oversubscribed"] == (3 > cpus)


def test_derived_measurements(docs):
    b = docs["batching"]
    assert b["paper_gain"] == 1.34 and set(b["geomean_speedup"]) == {"1", "2"}
    for row in b["nfs"].values():
        assert [p["workers"] for p in row["points"]] == [1, 2]
        for p in row["points"]:
            assert p["speedup"] == pytest.approx(p["pps_batch32"] / p["pps_batch1"])
    s = docs["stm_overhead"]
    assert set(s["nfs"]) == set(bench.NFS) and set(s["stm_time_share_1w"]) == set(bench.NFS)
    assert all(v is None or 0 < v < 1 for v in s["stm_time_share_1w"].values())
    for row in s["nfs"].values():
        assert row["ratio_1w_over_seq"] == pytest.approx(row["pps_1w"] / row["pps_seq"])
    lat = docs["latency"]
    cpus = lat["machine"]["cpus"]
    assert lat["status"] in ("measured", "partial", "not_measured") and lat["method"]
    assert set(lat["nfs"]) == set(bench.NFS)
    for row in lat["nfs"].values():
        assert [p["workers"] for p in row["points"]] == [1, 2]
        for p in row["points"]:
            if p["workers"] + 1 > cpus:   # the generator needs a CPU of its own
                assert p["status"] == "not_measured"
                assert p["reason"] == f"not measured: no spare core for the generator ({cpus} CPUs)"
                continue
            assert p["status"] in ("measured", "no_rate") and 1 <= len(p["tries"]) <= 3
            for t in p["tries"]:
                assert t["achieved_rate_pps"] > 0 and 0 <= t["loss"] <= 1
            if p["status"] == "measured":
                assert 0 < p["max_rate_pps"] <= p["search_hi_pps"] and p["loss_at_max_rate"] < 0.001
                for key, frac in (("at_50pct", 0.5), ("at_90pct", 0.9)):
                    r = p[key]
                    assert r["rate_pps"] == pytest.approx(frac * p["max_rate_pps"])
                    assert set(r["latency_us"]) == {"p50", "p99", "p99.9"} and 0 <= r["loss"] <= 1
                    if r["timed"]:
                        assert r["latency_us"]["p50"] <= r["latency_us"]["p99"] <= r["latency_us"]["p99.9"]
                        assert r["cdf_ns"][-1][1] == pytest.approx(1.0)
    if cpus <= 2:
        assert lat["status"] == "partial" and "no spare core for the generator (2 CPUs)" in lat["reason"]
    m = docs["memory"]
    for name, row in m["nfs"].items():
        assert [p["workers"] for p in row["points"]] == [0, 1, 2]
        for p in row["points"]:
            assert p["total_rss_kb"] > 0 and p["samples"] >= 1 and p["baseline_rss_kb"] > 0
            if os.path.exists("/proc/self/smaps_rollup"):
                assert p["total_pss_kb"] > 0 and p["baseline_pss_kb"] > 0
            assert len(p["worker_pss_kb"]) <= max(1, p["workers"])
        assert bool(row.get("mp_peer")) == bool(bench.NFS[name].mp_peer)
    p = docs["peers"]
    assert set(p["nfs"]) == {n for n, nf in bench.NFS.items() if nf.peer or nf.mp_peer}
    assert all(r["plain"]["pps"] > 0 for r in p["nfs"].values())


def test_plot_writes_a_png_per_result(quick, tmp_path):
    pytest.importorskip("matplotlib")
    out, _ = quick
    # and the committed recipe case studies (bench/case_studies.py)
    case = os.path.join(ROOT, "bench", "results", "case-studies-2core", "case_studies.json")
    (tmp_path / "case_studies.json").write_text(open(case).read())
    for m in bench.MEASURES:
        (tmp_path / f"{m}.json").write_text((out / f"{m}.json").read_text())
    (tmp_path / "notes.json").write_text('{"not": "a result"}')
    r = nfos("bench", "--plot", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted([f"{m}.png" for m in bench.MEASURES] + ["case_studies.png"])
    for p in tmp_path.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_plot_says_so_and_quick_still_works(quick, tmp_path):
    out, _ = quick
    r = nfos("bench", "--plot", str(out), block_matplotlib=True)
    assert r.returncode != 0 and "matplotlib is not installed" in r.stderr and "Traceback" not in r.stderr
    r = nfos("bench", "--quick", "--nf", "firewall", "--measure", "throughput,latency", "--out", str(tmp_path),
             block_matplotlib=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "figures skipped: matplotlib is not installed" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency.json", "throughput.json"]


def test_bad_arguments_are_one_line_errors(tmp_path):
    r = nfos("bench", "--quick", "--nf", "nosuch")
    assert r.returncode == 2 and "unknown NF nosuch" in r.stderr and "Traceback" not in r.stderr
    r = nfos("bench", "--quick", "--workers", "0,2")
    assert r.returncode == 2 and ">= 1" in r.stderr
    r = nfos("bench", "--quick", "--measure", "speed")
    assert r.returncode == 2 and "unknown measurement speed" in r.stderr
