"""The control process dies (issue 13, point 3): the workers notice within one second and exit;
nothing is left behind (processes, /dev/shm); a new run starts clean.  The live case (packet
sockets too) is in tests/live/test_live_reliability.py.

A worker asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), and then checks
that its parent is still the process that forked it: a parent that died before the request
took effect is not missed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import frames as F
from conftest import children_of, nf_path, processes_with, shm_entries
from nfos.io import PcapWriter

SLOW = nf_path("slow.py")


def write_trace(path, n):
    with PcapWriter(path) as w:
        for i in range(n):
            w.write(F.udp_frame(f"10.0.{i % 64}.1", "192.0.2.1", 1000 + i % 64, 53), 1_000_000_000 + 1000 * i)
    return str(path)


def wait_gone(marker: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    return processes_with(marker)


def test_sigkill_of_the_control_process_leaves_nothing_within_a_second(tmp_path):
    marker = str(tmp_path)
    trace = write_trace(tmp_path / "t.pcap", 1000)
    shm_before = shm_entries()
    p = subprocess.Popen([sys.executable, "-m", "nfos", "run", SLOW, "--in", trace, "--workers", "2",
                          "--param", "delay=20ms", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while len(children_of(p.pid)) < 2:
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)   # processing
        p.kill()
        p.wait()
        t0 = time.monotonic()
        assert wait_gone(marker, 1.0) == []
        assert time.monotonic() - t0 <= 1.0
        assert shm_entries() - shm_before == set()
    finally:
        if p.poll() is None:
            p.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
    # a new run starts clean
    r = subprocess.run([sys.executable, "-m", "nfos", "run", SLOW, "--in", trace, "--workers", "2",
                        "--param", "delay=0", "-q", "--out", tmp_path / "out"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert processes_with(marker) == []


RACE = textwrap.dedent("""
    import os, sys, time
    from nfos import _core
    r, w = os.pipe()
    if os.fork() == 0:             # the "control process", about to die
        parent = os.getpid()
        if os.fork() == 0:         # the "worker": slow to ask for its parent's death
            os.close(r)
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            time.sleep(0.5)        # its parent is gone by now: it was reparented
            _core.die_with_parent(parent)
            time.sleep(30)         # (not reached)
            os._exit(0)
        os._exit(0)                # the parent dies before the worker's request
    os.close(w)
    print(os.read(r, 64).decode(), flush=True)
""")


def test_a_parent_that_died_before_the_request_is_not_missed():
    r = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    worker = int(r.stdout.strip())
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{worker}") and time.monotonic() < deadline:
        try:
            with open(f"/proc/{worker}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.02)
    else:
        assert not os.path.exists(f"/proc/{worker}")
    assert time.monotonic() < deadline, "the orphaned worker did not leave"
