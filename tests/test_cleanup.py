"""A run leaves nothing behind: no worker processes, no /dev/shm entries; also when interrupted or killed.

Forked workers keep the control process's command line, so the tests find a
run's processes by a unique string in it: the run's tmp_path (the trace path).
"""

import os
import signal
import subprocess
import sys
import time

import frames as F
from conftest import EXAMPLES, children_of, nf_path, processes_with, shm_entries
from nfos.io import PcapWriter

FIREWALL = str(EXAMPLES / "firewall.py")
SLOW_NF = nf_path("slow.py")
INTERRUPTED = "nfos: error: interrupted; workers stopped, nothing left behind\n"


def write_trace(path, n):
    """n UDP frames from 64 hosts (RSS gives both workers some), 1 us apart."""
    with PcapWriter(path) as w:
        for i in range(n):
            w.write(F.udp_frame(f"10.0.{i % 64}.1", "192.0.2.1", 1000 + i % 64, 53), 1_000_000_000 + 1000 * i)
    return path


def start(*args):
    env = dict(os.environ, COLUMNS="1000")
    return subprocess.Popen([sys.executable, "-m", "nfos", "run", *map(str, args), "--workers", "2", "-q"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_workers(p, marker, timeout=20.0):
    """Wait until the control process has forked its 2 workers; returns their PIDs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = children_of(p.pid)
        if len(workers) == 2:
            # the scanner sees the control process and both workers by the marker
            assert processes_with(marker) == sorted([p.pid, *workers])
            return workers
        assert p.poll() is None, p.communicate()
        time.sleep(0.01)
    raise AssertionError("the workers did not start")


def wait_gone(marker, timeout):
    deadline = time.monotonic() + timeout
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    return processes_with(marker)


def kill_all(p, marker):
    if p.poll() is None:
        p.kill()
        p.wait()
    for pid in processes_with(marker):
        os.kill(pid, signal.SIGKILL)


def test_finished_run_leaves_nothing(tmp_path):
    trace = write_trace(tmp_path / "trace.pcap", 2000)
    shm_before, children_before = shm_entries(), children_of(os.getpid())
    r = subprocess.run([sys.executable, "-m", "nfos", "run", FIREWALL, "--in", trace, "--workers", "2",
                        "--out", tmp_path / "out", "-q"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(tmp_path / "out")) == 2
    assert processes_with(str(tmp_path)) == []
    assert processes_with("nfos-worker") == []
    assert children_of(os.getpid()) == children_before
    assert shm_entries() - shm_before == set()


def test_harness_with_workers_leaves_nothing():
    from nfos.testing import Harness

    shm_before, children_before = shm_entries(), children_of(os.getpid())
    with Harness(FIREWALL, workers=2) as h:
        assert len(children_of(os.getpid())) == len(children_before) + 2
        assert h.send("lan", F.udp_frame()) == [("wan", F.udp_frame())]
    assert children_of(os.getpid()) == children_before
    assert shm_entries() - shm_before == set()


def test_sigint_stops_the_run(tmp_path):
    # 2000 packets, 1 ms each: about 1 s of work per worker; the interrupt comes after 0.2 s
    marker = str(tmp_path)
    trace = write_trace(tmp_path / "trace.pcap", 2000)
    shm_before = shm_entries()
    p = start(SLOW_NF, "--in", trace, "--param", "delay=1ms")
    try:
        wait_for_workers(p, marker)
        time.sleep(0.2)
        assert p.poll() is None
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        assert (p.returncode, err, out) == (2, INTERRUPTED, "")
        assert wait_gone(marker, 2.0) == []
        assert shm_entries() - shm_before == set()
    finally:
        kill_all(p, marker)


def test_sigint_stops_the_workers_promptly(tmp_path):
    marker = str(tmp_path)
    trace = write_trace(tmp_path / "trace.pcap", 1000)
    p = start(SLOW_NF, "--in", trace, "--param", "delay=20ms")   # ~10 s of work per worker
    try:
        wait_for_workers(p, marker)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=2.0)
        except subprocess.TimeoutExpired:
            err = None
        assert err == INTERRUPTED
        assert p.returncode == 2
    finally:
        kill_all(p, marker)


def test_sigterm_is_an_interrupt(tmp_path):
    marker = str(tmp_path)
    trace = write_trace(tmp_path / "trace.pcap", 2000)
    p = start(SLOW_NF, "--in", trace, "--param", "delay=1ms")
    try:
        wait_for_workers(p, marker)
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        assert (p.returncode, err) == (2, INTERRUPTED)
        assert wait_gone(marker, 2.0) == []
    finally:
        kill_all(p, marker)


def test_workers_die_with_a_killed_control_process(tmp_path):
    marker = str(tmp_path)
    trace = write_trace(tmp_path / "trace.pcap", 1000)
    shm_before = shm_entries()
    p = start(SLOW_NF, "--in", trace, "--param", "delay=20ms")
    try:
        workers = wait_for_workers(p, marker)
        time.sleep(0.2)
        p.kill()
        p.wait()
        assert p.returncode == -signal.SIGKILL
        assert wait_gone(marker, 2.0) == []
        assert [w for w in workers if w in processes_with(marker)] == []
        assert shm_entries() - shm_before == set()
    finally:
        kill_all(p, marker)
