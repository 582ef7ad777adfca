"""Live runs and issue 13: a killed control process leaves nothing (no worker, no packet socket);
least privilege (--user: every process drops to that user once its sockets are open, traffic
still flows; the metrics endpoint binds to 127.0.0.1 unless --metrics-addr says otherwise)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

import pytest

from .conftest import LAN_IP, WAN_IP

UDP_ECHO = r"""
import select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 30)
    if not r or sys.stdin in r:
        break
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

UDP_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 40000))
s.settimeout(2)
got = 0
for i in range(5):
    s.sendto(b"ping %d" % i, (sys.argv[2], 7007))
    try:
        got += s.recv(100) == b"ping %d" % i
    except OSError:
        pass
print(got)
"""


def packet_sockets(lab, ns: str) -> int:
    """AF_PACKET sockets open in the namespace (/proc/net/packet: a header line, then one each)."""
    return len(lab.run(ns, "cat", "/proc/net/packet").stdout.strip().splitlines()) - 1


def test_sigkill_of_a_live_control_process_leaves_no_worker_and_no_socket(lab, nfos_live):
    box = lab.ns("N")
    lab.veth(box, "a0", box, "b0")
    ifaces = {"lan": "a0", "wan": "b0"}
    assert packet_sockets(lab, box) == 0
    run = nfos_live(box, "firewall.py", ifaces, workers=2)
    run.wait_ready()
    assert len(lab.pids_in(box)) == 3
    assert packet_sockets(lab, box) >= 4   # a ring socket per worker and device, send-only ones
    run.proc.kill()                          # SIGKILL: no orderly stop
    run.proc.wait(timeout=10)
    t0 = time.monotonic()
    while (lab.pids_in(box) or packet_sockets(lab, box)) and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    assert lab.pids_in(box) == [] and packet_sockets(lab, box) == 0
    assert time.monotonic() - t0 < 1.0       # the workers noticed within a second

    run = nfos_live(box, "firewall.py", ifaces, workers=2)   # a new run starts clean
    run.wait_ready()
    assert run.stop()["workers"] == 2
    assert lab.pids_in(box) == [] and packet_sockets(lab, box) == 0


def uids(lab, ns: str) -> dict[int, int]:
    """{pid: real uid} of the processes in the namespace."""
    out = {}
    for pid in lab.pids_in(ns):
        with open(f"/proc/{pid}/status") as f:
            out[pid] = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
    return out


def test_user_drops_privileges_and_traffic_still_flows(wire, nfos_live):
    import pwd

    try:
        nobody = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user 'nobody'")
    lab = wire.lab
    metrics = importlib.util.find_spec("prometheus_client") is not None
    lab.addr(wire.box, "lan0", "198.51.100.1/24")   # an address on the veth, for the metrics check
    extra = ("--user", "nobody") + (("--metrics-port", "9464") if metrics else ())
    run = nfos_live(wire.box, "firewall.py", wire.ifaces, workers=2, extra=extra)
    echo = lab.spawn(wire.wan, sys.executable, "-c", UDP_ECHO, WAN_IP, "7007", stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert echo.stdout.readline().strip() == "ready"
    run.wait_ready()
    procs = uids(lab, wire.box)
    assert len(procs) == 3 and set(procs.values()) == {nobody}, procs   # the control process and its workers
    ps = lab.sh("ps", "-o", "user=", "-p", ",".join(map(str, procs))).stdout.split()
    assert ps == ["nobody"] * 3

    assert lab.python(wire.lan, UDP_CLIENT, LAN_IP, WAN_IP).stdout.strip() == "5"   # traffic still flows

    if metrics:   # loopback only, by default
        page = lab.run(wire.box, "curl", "-s", "-m", "5", "http://127.0.0.1:9464/metrics", check=False)
        assert page.returncode == 0 and "nfos_rx_packets_total" in page.stdout
        other = lab.run(wire.box, "curl", "-s", "-m", "5", "http://198.51.100.1:9464/metrics", check=False)
        assert other.returncode != 0   # connection refused

    stats = run.stop()
    echo.communicate(input="", timeout=10)
    assert stats["handler_errors"] == 0 and stats["packets_out"]["wan"] >= 5
    assert stats["per_worker"][0]["peak_rss_kb"] > 0   # the workers still read their own /proc
    assert lab.pids_in(wire.box) == []

    if metrics:   # told otherwise: every address
        run = nfos_live(wire.box, "firewall.py", wire.ifaces, workers=1,
                        extra=("--metrics-port", "9464", "--metrics-addr", "0.0.0.0"))
        run.wait_ready()
        page = lab.run(wire.box, "curl", "-s", "-m", "5", "http://198.51.100.1:9464/metrics", check=False)
        assert page.returncode == 0 and "nfos_rx_packets_total" in page.stdout
        run.stop()


def test_user_errors_are_one_line(lab):
    box = lab.ns("N")
    lab.veth(box, "a0", box, "b0")
    firewall = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "firewall.py")
    r = lab.run(box, sys.executable, "-m", "nfos", "run", firewall, "--iface", "lan=a0,wan=b0", "--user",
                "no-such-user-nfos", "--duration", "1", "-q", check=False, timeout=30)
    assert r.returncode == 2 and r.stderr.strip() == "nfos: error: --user no-such-user-nfos: no such user"
    assert lab.pids_in(box) == []


def test_a_stuck_live_handler_is_named_and_ctrl_c_stops_the_run(wire, tmp_path):
    """The watchdog live: a handler in an endless loop is named; SIGINT ends the run within
    about a second (the stuck worker is killed after a short grace), with its summary."""
    import json
    import signal

    from .conftest import LiveRun

    stuck = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "nf" / "nfs" / "stuck.py")
    lab = wire.lab
    run = LiveRun(lab, wire.box, stuck, wire.ifaces, 2, tmp_path, extra=("--watchdog", "1"))
    run.wait_ready()
    lab.python(wire.lan, r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"x" * 200, (sys.argv[1], 7007))
""", WAN_IP)
    deadline = time.monotonic() + 20
    while not any("has been in" in line for line in run.err) and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next((line for line in run.err if "has been in" in line), None)
    assert line is not None and "@nf.orphan forward (stuck.py:" in line, run.err
    run.proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    assert run.proc.wait(timeout=20) == 0
    assert time.monotonic() - t0 < 2.5
    assert json.loads(run.stats_path.read_text())["stopped_by"] == "SIGINT"
    assert lab.pids_in(wire.box) == []
