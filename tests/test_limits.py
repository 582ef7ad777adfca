"""Sizes beyond what the C core counts (32 bits) are one-line errors, never a wrap or a hang.

Regression (issue "Nothing lost", adversarial testing of 19f15bb): ``--param
capacity=2147483649`` looped forever while sizing the packet-set table, and a
capacity of 2**32 + 1 silently became 1.
"""

import subprocess
import sys

import pytest

import nfos
from conftest import EXAMPLES
from nfos.structures.base import MAX_COUNT


@pytest.mark.parametrize("make", [
    lambda n: nfos.Vector(nfos.u8, n),
    lambda n: nfos.Map(nfos.u32, nfos.u32, n),
    lambda n: nfos.Allocator(n),
], ids=["Vector", "Map", "Allocator"])
@pytest.mark.parametrize("n", [MAX_COUNT + 1, 2**32 + 1])
def test_structure_sizes_past_31_bits_are_refused(make, n):
    with pytest.raises(ValueError, match=rf"must be at most 2,147,483,647, got {n:,}$"):
        make(n)


def test_map_buckets_past_31_bits_are_refused():
    with pytest.raises(ValueError, match=r"^Map buckets must be at most 2,147,483,648, got 4,294,967,296$"):
        nfos.Map(nfos.u32, nfos.u32, 16, buckets=2**32)


@pytest.mark.parametrize("capacity", ["2147483648", "4294967297"])
def test_packet_set_capacity_past_31_bits_is_a_one_line_error(capacity, tmp_path):
    trace = tmp_path / "t.pcapng"
    subprocess.run([sys.executable, "-m", "nfos", "gen", "caida", "--packets", "10", "--out", str(trace)],
                   check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "nfos", "run", str(EXAMPLES / "firewall.py"), "--in", str(trace),
                        "--workers", "0", "--param", f"capacity={capacity}", "-q"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"packet-set capacity must be at most 2,147,483,647, got {int(capacity):,}" in lines[0]


def test_stats_json_into_a_missing_directory_fails_before_the_run(tmp_path):
    """Regression: the error used to be a traceback after the whole run."""
    trace = tmp_path / "t.pcapng"
    subprocess.run([sys.executable, "-m", "nfos", "gen", "caida", "--packets", "10", "--out", str(trace)],
                   check=True, capture_output=True)
    missing = tmp_path / "no" / "such" / "s.json"
    r = subprocess.run([sys.executable, "-m", "nfos", "run", str(EXAMPLES / "firewall.py"), "--in", str(trace),
                        "--workers", "0", "--stats-json", str(missing), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        f"nfos: error: --stats-json {missing}: directory {missing.parent} does not exist"]
    assert not (tmp_path / "out").exists()   # nothing ran
