"""Shared fixtures: the tests directory on sys.path (``import frames``) and the checkout
(``import bench.harness``), NF files, processes."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
NF_DIR = TESTS_DIR / "nf" / "nfs"
EXAMPLES = REPO / "examples"

if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
if str(REPO) not in sys.path:   # the benchmark harness: import bench.harness
    sys.path.append(str(REPO))


def nf_path(name: str) -> str:
    """Path of an NF file under tests/nf/nfs/."""
    p = NF_DIR / name
    assert p.is_file(), p
    return str(p)


@pytest.fixture
def write_nf(tmp_path):
    """``write_nf(source, name="nf.py") -> path``: write a small NF file (dedented) into tmp_path."""

    def write(source: str, name: str = "nf.py") -> str:
        p = tmp_path / name
        p.write_text(textwrap.dedent(source).lstrip("\n"))
        return str(p)

    return write


def processes_with(marker: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``marker`` (via /proc)."""
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            pids.append(int(entry))
    return sorted(pids)


def children_of(pid: int) -> list[int]:
    """PIDs of live (non-zombie) processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.append(int(entry))
    return sorted(out)


def shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def pytest_collection_modifyitems(config, items):
    """Soak and benchmark runs (``-m slow``) take as long as they take: no per-test timeout."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(0))
