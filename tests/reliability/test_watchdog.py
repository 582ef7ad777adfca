"""A stuck handler does not freeze a run silently (issue 13, point 7): the watchdog names the
worker, the handler and its line after --watchdog seconds, and Ctrl-C still stops the run
within about a second (a worker stuck in a handler is killed after a short grace)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

import frames as F
from conftest import nf_path, processes_with
from nfos.io import PcapWriter

STUCK = nf_path("stuck.py")
INTERRUPTED = "nfos: error: interrupted; workers stopped, nothing left behind"


def def_line(path: str, name: str) -> int:
    with open(path) as f:
        return next(i for i, line in enumerate(f, 1) if line.startswith(f"def {name}("))


def write_trace(path, n=40):
    """n short UDP frames from 64 hosts, then a long one (the stuck handler's), then n more."""
    with PcapWriter(path) as w:
        t = 1_000_000_000
        for i in range(2 * n + 1):
            payload = b"x" * 200 if i == n else b""
            w.write(F.udp_frame(f"10.0.{i % 64}.1", "192.0.2.1", 1000 + i % 64, 53, payload), t + 1000 * i)
    return str(path)


class Run:
    """`nfos run ...` with its stderr read line by line in a thread."""

    def __init__(self, *args) -> None:
        env = dict(os.environ, COLUMNS="1000")
        self.p = subprocess.Popen([sys.executable, "-m", "nfos", "run", *map(str, args)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self.reader = threading.Thread(target=lambda: self.err.extend(line.rstrip("\n") for line in self.p.stderr),
                                       daemon=True)
        self.reader.start()

    def wait_line(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.err):
                if re.search(pattern, line):
                    return line
            assert self.p.poll() is None, self.err
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s: {self.err}")

    def stderr(self) -> list[str]:
        self.reader.join(timeout=5)
        return self.err

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stuck_handler_is_named_and_ctrl_c_stops_the_run(tmp_path, workers):
    marker = str(tmp_path)
    trace = write_trace(tmp_path / "t.pcap")
    run = Run(STUCK, "--in", trace, "--workers", workers, "--watchdog", "1", "-q")
    p = run.p
    try:
        line = run.wait_line(r"has been in", timeout=30)
        m = re.fullmatch(r"nfos: worker (\d+) has been in @nf\.orphan forward \(stuck\.py:(\d+)\) for (\d+) s", line)
        assert m, line
        assert int(m[2]) == def_line(STUCK, "forward")
        assert int(m[3]) >= 1 and int(m[1]) < max(1, workers)
        p.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        p.wait(timeout=10)
        assert time.monotonic() - t0 < 2.0   # "within a second"; generous on a loaded machine
        err = run.stderr()
        assert p.returncode == 2 and err[-1] == INTERRUPTED, err
        assert sum("has been in" in line for line in err) == 1   # named once per stuck call
        deadline = time.monotonic() + 2
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_with(marker) == []
    finally:
        run.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_no_watchdog_line_below_the_limit_or_when_off(tmp_path):
    trace = write_trace(tmp_path / "t.pcap")
    for limit in ("0", "30"):
        run = Run(STUCK, "--in", trace, "--workers", "0", "--watchdog", limit, "-q")
        try:
            time.sleep(2.0)
            run.p.send_signal(signal.SIGTERM)
            assert run.p.wait(timeout=10) == 2
            assert run.stderr() == [INTERRUPTED]
        finally:
            run.kill()


def test_heartbeat_and_names(write_nf):
    """The heartbeat a slot publishes per handler call, and the names the watchdog gives."""
    from nfos import _core
    from nfos.testing import Harness

    path = write_nf("""
        import nfos
        nf = nfos.NF("hb", devices=["lan", "wan"])
        seen = []

        @nf.orphan
        def forward(pkt):
            seen.append(nfos._core.heartbeat(0))
            pkt.send("wan")

        @nf.periodic(nfos.seconds(1))
        def tick():
            pass
    """)
    with Harness(path, workers=0, check=False) as h:   # (a list in a handler: the test's probe)
        h.send("lan", F.udp_frame())
        h.send("lan", F.udp_frame())
        seen = h.nf.handlers.orphan.__globals__["seen"]
        assert [code for code, _ in seen] == [_core.H_ORPHAN] * 2
        assert seen[1][1] == seen[0][1] + 1
        assert _core.heartbeat(0)[0] == 0   # between handlers
        names = h._s().handler_names()
        assert names[_core.H_ORPHAN] == f"@nf.orphan forward (nf.py:{def_line(path, 'forward')})"
        assert names[_core.H_PERIODIC] == f"@nf.periodic tick (nf.py:{def_line(path, 'tick')})"
