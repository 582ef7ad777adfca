"""The fuzz targets (issue 13, point 5): a short run of each in the default suite (the
checkout's build), and the 1M-input runs under AddressSanitizer + UBSan (slow; the figures
are in docs/reliability.md):

    python tests/fuzz/run_fuzz.py --runs 1000000 --asan --json build/fuzz-1m.json
"""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("atheris", reason="the fuzzers need atheris: pip install -e '.[fuzz]'")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import run_fuzz  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src")


@pytest.mark.parametrize("target", run_fuzz.TARGETS)
def test_short_fuzz_run(target, tmp_path):
    r = run_fuzz.run_target(target, 20_000, 2048, SRC, False, str(tmp_path), None)
    assert (r["crashes"], r["sanitizer_reports"]) == (0, 0), r["tail"]
    assert r["inputs"] >= 20_000


@pytest.mark.slow
def test_a_million_inputs_per_target_under_asan_and_ubsan(tmp_path):
    build = str(tmp_path / "asan")
    run_fuzz.build_asan(build)
    for target in run_fuzz.TARGETS:
        r = run_fuzz.run_target(target, 1_000_000, 2048, build, True, str(tmp_path / "artifacts"), None)
        assert (r["crashes"], r["sanitizer_reports"]) == (0, 0), r["tail"]
        assert r["inputs"] >= 1_000_000 and r["peak_rss_mb"] < 2048
