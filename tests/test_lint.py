"""The code base stays ruff clean (configuration in pyproject.toml)."""

import shutil
import subprocess
import sys

import pytest

ROOT = __file__.rsplit("/tests/", 1)[0]


@pytest.mark.skipif(shutil.which("ruff") is None and sys.modules.get("ruff") is None, reason="ruff not installed")
def test_ruff_clean():
    r = subprocess.run(["ruff", "check", "src", "tests", "examples", "bench"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
