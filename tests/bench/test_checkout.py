"""`nfos bench` finds the harness in a source checkout (walking up from the current directory,
then from the installed package's source), and outside one says in one line what it needs."""

from __future__ import annotations

import os
import subprocess
import sys

import nfos
from nfos.cli import find_checkout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_found_from_a_folder_below_the_checkout(tmp_path, monkeypatch):
    (tmp_path / "bench" / "harness").mkdir(parents=True)
    (tmp_path / "bench" / "harness" / "__init__.py").write_text("")
    below = tmp_path / "results" / "today"
    below.mkdir(parents=True)
    monkeypatch.chdir(below)
    assert find_checkout() == str(tmp_path)


def test_found_from_the_package_source_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = os.path.abspath(nfos.__file__).startswith(ROOT + os.sep)
    assert find_checkout() == (ROOT if here else None)


def test_outside_a_checkout_one_line_and_exit_2(tmp_path):
    code = "import nfos.cli as c; c.find_checkout = lambda: None; c.main()"
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(nfos.__file__)))   # the nfos under test
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pkg, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code, "bench", "--quick"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfos: error: nfos bench runs in a source checkout")
    assert "bench/harness" in lines[0] and "pip install -e '.[bench]'" in lines[0]
