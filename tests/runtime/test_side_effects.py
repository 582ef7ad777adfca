"""Issue 10.2 and 10.3: the exit handler runs once, with nothing to conflict with; a transaction
too large for the descriptor runs irrevocably at once; print() and logging inside a handler
appear exactly once per committed execution, also when attempts abort."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from frames import udp_frame
from nfos.io.capture import write_pcapng
from nfos.testing import Harness

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")


def nfos_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "nfos", "run", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def trace_file(tmp_path, n: int, sources: int = 20) -> str:
    frames = [udp_frame(src=f"10.3.{i % sources}.1", dst="192.0.2.9", sport=100 + i % sources, dport=7,
                        payload=i.to_bytes(4, "big")) for i in range(n)]
    path = tmp_path / "t.pcapng"
    write_pcapng(path, ["lan", "wan"], frames, [i * 1_000_000 for i in range(n)], [0] * n)
    return str(path)


# ------------------------------------------------------------------ the exit handler
SCAN_AT_EXIT = """
import nfos

nf = nfos.NF("scan_at_exit", devices=["lan", "wan"])


@nf.init
def setup(p):
    nf.state.m = nfos.Map(nfos.u32, nfos.u32, 65536)   # 65,536 buckets
    for k in range(500):
        nf.state.m[k] = k


@nf.orphan
def forward(pkt):
    pkt.send("wan")


@nf.exit
def summary():
    print("exit: scanning")
    n = len(nf.state.m.items())
    print(f"exit: {n} entries")
    nf.emit(b"EXIT" + n.to_bytes(4, "big"), "wan")
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_the_exit_handler_scans_a_big_map_once_without_aborting(write_nf, tmp_path, workers):
    stats = tmp_path / "s.json"
    r = nfos_run(write_nf(SCAN_AT_EXIT), "--in", trace_file(tmp_path, 200), "--workers", str(workers), "-q",
                 "--stats-json", str(stats))
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("exit:")]
    assert lines == ["exit: scanning", "exit: 500 entries"]   # once each: no retry printed twice
    s = json.loads(stats.read_text())
    assert s["aborts"] == 0 and s["irrevocable"] == 0, (s["aborts"], s["aborts_by_cause"])
    assert s["packets_out"]["wan"] == 200 + 1


RAISE_AT_EXIT = """
import nfos

nf = nfos.NF("raise_at_exit", devices=["lan", "wan"])


@nf.init
def setup(p):
    nf.state.v = nfos.Vector(nfos.u32, 1)


@nf.exit
def summary():
    nf.state.v[0] = 7
    print("exit ran")
    raise ValueError("boom")
"""


def test_an_exit_handler_that_raises_is_logged_once_and_the_run_goes_on(write_nf, tmp_path):
    r = nfos_run(write_nf(RAISE_AT_EXIT), "--in", trace_file(tmp_path, 20), "--workers", "2", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("nfos: @nf.exit error at nf.py:") == 1, r.stderr
    assert "ValueError: boom" in r.stderr and "the run goes on" in r.stderr
    assert "exit ran" not in r.stdout   # its transaction rolled back: its print too


# ------------------------------------------------------- too large for one transaction
SCAN_PER_PACKET = """
import nfos

nf = nfos.NF("scan_per_packet", devices=["lan", "wan"])


@nf.init
def setup(p):
    nf.state.m = nfos.Map(nfos.u32, nfos.u32, 65536)
    nf.state.m[1] = 1


@nf.orphan
def scan(pkt):
    if len(nf.state.m.items()) == 1:
        pkt.send("wan")
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_a_single_packet_too_large_runs_irrevocably_at_once(write_nf, workers):
    frames = [udp_frame(src=f"10.4.{i}.1", dst="192.0.2.9", sport=9, dport=9) for i in range(6)]
    with Harness(write_nf(SCAN_PER_PACKET), workers=workers, batch=1) as h:
        for f in frames:
            assert h.send("lan", f) == [("wan", f)]
        s = h.stats()
    if workers == 0:   # direct mode: nothing is too large
        assert s["aborts"] == 0
    else:   # one abort per packet (too_large), then alone: not after 8 aborts
        assert s["aborts"] == s["aborts_by_cause"]["too_large"] == len(frames)
        assert s["irrevocable"] == len(frames) and s["batch_splits"] == 0


def test_a_batch_too_large_splits_at_once(write_nf):
    frames = [udp_frame(src=f"10.4.{i}.1", dst="192.0.2.7", sport=9, dport=9) for i in range(8)]
    with Harness(write_nf(SCAN_PER_PACKET), workers=1, batch=8) as h:
        out = h.send_many([("lan", f) for f in frames])
        s = h.stats()
    assert sorted(f for _d, f in out) == sorted(frames)
    # 8 -> 4+4 -> 2+2+2+2 -> 1 x 8: one abort per node of the split tree (2k - 1 for a batch of k),
    # one irrevocable per packet.  The worker may take the 8 frames as they arrive in more than one
    # batch (b of them: 8 - b splits, 16 - b aborts): never a retry of the same size
    assert s["aborts"] == s["aborts_by_cause"]["too_large"] == s["batch_splits"] + 8 <= 15
    assert s["irrevocable"] == 8


def test_a_control_process_transaction_goes_irrevocable_after_one_abort(write_nf):
    with Harness(write_nf(SCAN_PER_PACKET), workers=2) as h:
        assert h.transact(lambda: len(h.nf.state.m.items())) == 1
        ctl = h.session.control_counters()
    assert ctl is not None
    assert (ctl["aborts"], ctl["aborts_by_cause"]["too_large"], ctl["irrevocable"]) == (1, 1, 1)


# ------------------------------------------------------------------- print and logging
# Every packet reads and writes one hot Vector element (and waits between the two, so that the
# two workers' transactions overlap): attempts abort and run again; each prints and logs a line.
# Every 10th packet's first attempt also aborts on purpose after printing, so attempts abort
# even when the two workers did not overlap (a busy machine).
HOT_PRINTER = """
import logging
import time

import nfos

nf = nfos.NF("hot_printer", devices=["lan", "wan"])
log = logging.getLogger("hot_printer")
log.addHandler(logging.StreamHandler())   # created at import: it writes through nfos's sys.stderr
log.setLevel(logging.INFO)
log.propagate = False


class Attempts:   # this process's attempts per packet: never rolled back (on purpose)

    def __init__(self):
        self.seen = {}

    def bump(self, i):
        self.seen[i] = self.seen.get(i, 0) + 1
        return self.seen[i]


ATTEMPTS = Attempts()


@nf.init
def setup(p):
    nf.state.hot = nfos.Vector(nfos.u64, 1)


@nf.orphan
def count(pkt):
    i = int.from_bytes(pkt.payload[:4], "big")
    n = nf.state.hot[0]
    print(f"packet {i}")
    log.info("logged %d", i)
    if i % 10 == 0 and ATTEMPTS.bump(i) == 1:
        raise nfos.TransactionAborted("forced")   # what this attempt printed must not appear
    t = time.perf_counter()
    while time.perf_counter() - t < 0.0002:
        pass
    nf.state.hot[0] = n + 1


@nf.exit
def total():
    print(f"total {nf.state.hot[0]}")
"""


def test_print_and_logging_appear_once_per_commit_under_aborts(write_nf, tmp_path):
    n = 300
    trace = trace_file(tmp_path, n, sources=16)
    path = write_nf(HOT_PRINTER)
    for _attempt in range(3):   # aborts need the two workers to overlap: a busy moment can prevent it
        stats = tmp_path / "s.json"
        r = nfos_run(path, "--in", trace, "--workers", "2", "--batch", "2", "-q", "--stats-json", str(stats))
        assert r.returncode == 0, r.stderr
        s = json.loads(stats.read_text())
        printed = [line for line in r.stdout.splitlines() if line.startswith("packet ")]
        logged = [line for line in r.stderr.splitlines() if line.startswith("logged ")]
        assert sorted(printed) == sorted(f"packet {i}" for i in range(n)), "a line is missing or repeated"
        assert sorted(logged) == sorted(f"logged {i}" for i in range(n)), "a log line is missing or repeated"
        assert f"total {n}" in r.stdout.splitlines()
        if s["aborts"] > 0:
            break
    assert s["aborts"] > 0, "no attempt aborted: the test did not exercise the buffering"


def test_in_process_a_print_appears_at_commit_and_not_for_a_failed_attempt(write_nf, capsys):
    src = """
    import nfos

    nf = nfos.NF("p", devices=["lan", "wan"])

    @nf.orphan
    def f(pkt):
        print(f"handled {pkt.udp.dport}")
        if pkt.udp.dport == 13:
            raise RuntimeError("no")
    """
    with Harness(write_nf(src), workers=0) as h:
        h.send("lan", udp_frame(dport=12))
        h.send("lan", udp_frame(dport=13))
        h.send("lan", udp_frame(dport=14))
    out = capsys.readouterr()
    assert out.out.splitlines() == ["handled 12", "handled 14"]   # 13's attempt rolled back, its print too
    assert "RuntimeError: no" in out.err
    assert sys.stdout is not None and type(sys.stdout).__name__ != "TxStream"   # the session put it back
