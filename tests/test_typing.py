"""Static typing: mypy is clean on src/nfos (strict on the public API: see [tool.mypy] in
pyproject.toml), and the stub of the C core, src/nfos/_core.pyi, matches the built module."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MYPYPATH=SRC, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_mypy_is_clean_on_the_package():
    r = run("mypy")   # files, strictness and the cache (.mypy_cache) come from pyproject.toml
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no issues found" in r.stdout


def test_core_stub_matches_the_built_module():
    """Every name of nfos._core is in the stub and every name in the stub exists, with the same kind."""
    r = run("mypy.stubtest", "nfos._core")
    assert r.returncode == 0, r.stdout + r.stderr
