"""Live runs that cannot start end with one line `nfos: error: ...` and exit status 2."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

FIREWALL = str(Path(__file__).resolve().parents[2] / "examples" / "firewall.py")


def nfos(lab, ns, *args, prefix=()):
    return lab.run(ns, *prefix, sys.executable, "-m", "nfos", "run", FIREWALL, *args, "--duration", "1", "-q",
                   check=False, timeout=30)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfos: error: "), r.stderr
    return lines[0]


def test_interface_errors_are_one_line(lab):
    box = lab.ns("N")
    lab.veth(box, "a0", box, "b0")
    assert "interface nope does not exist" in one_error_line(nfos(lab, box, "--iface", "lan=a0,wan=nope"))
    assert "the NF device 'wan' has no interface" in one_error_line(nfos(lab, box, "--iface", "lan=a0"))
    assert "interface a0 is given twice" in one_error_line(nfos(lab, box, "--iface", "lan=a0", "--iface", "wan=a0"))
    assert "device lan is given twice" in one_error_line(nfos(lab, box, "--iface", "lan=a0,lan=b0"))
    lab.sh("ip", "-n", box, "link", "set", "b0", "down")
    assert "interface b0 is down" in one_error_line(nfos(lab, box, "--iface", "lan=a0,wan=b0"))
    lab.sh("ip", "-n", box, "link", "set", "b0", "up", "mtu", "9000")
    assert "interface b0 has MTU 9000, larger than the ring frame size" in one_error_line(
        nfos(lab, box, "--iface", "lan=a0,wan=b0"))
    lab.sh("ip", "-n", box, "link", "set", "b0", "mtu", "1500")
    if shutil.which("setpriv"):   # root without CAP_NET_RAW
        line = one_error_line(nfos(lab, box, "--iface", "lan=a0,wan=b0",
                                   prefix=("setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw")))
        assert "need root or CAP_NET_RAW" in line
    r = nfos(lab, box, "--iface", "lan=a0,wan=b0", "--in", "x.pcap")
    assert "mutually exclusive" in one_error_line(r)


def test_duration_ctrl_c_and_kill_leave_nothing(lab, nfos_live):
    box = lab.ns("N")
    lab.veth(box, "a0", box, "b0")
    ifaces = {"lan": "a0", "wan": "b0"}
    run = nfos_live(box, "firewall.py", ifaces, workers=2, duration=0.5)
    run.wait_ready()
    assert run.proc.wait(timeout=20) == 0
    assert json.loads(run.stats_path.read_text())["stopped_by"] == "duration"
    assert lab.pids_in(box) == []

    run = nfos_live(box, "firewall.py", ifaces, workers=2)
    run.wait_ready()
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(timeout=20) == 0
    assert json.loads(run.stats_path.read_text())["stopped_by"] == "SIGINT"
    assert lab.pids_in(box) == []

    run = nfos_live(box, "firewall.py", ifaces, workers=2)
    run.wait_ready()
    assert len(lab.pids_in(box)) == 3   # the control process and its two workers
    run.proc.kill()                      # no orderly stop: the workers die with their parent
    run.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while lab.pids_in(box) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lab.pids_in(box) == []
