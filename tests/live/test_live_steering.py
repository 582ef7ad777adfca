"""Kernel steering on live interfaces: each packet set lands on the worker the software RSS (and the
compiled BPF program) predicts, from both directions, and no set is seen by two workers."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import frames as F
from live.conftest import UDP_ECHO
from nfos import _core
from nfos.io.bpf import compile_steering, run_program
from nfos.runtime.session import Session

LAN_IP, WAN_IP = "192.0.2.1", "192.0.2.2"
NFLOWS = 1000
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SENDER = r"""
import resource, select, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
ports = [int(p) for p in sys.argv[3].split(",")]
socks = []
for p in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], p))
    s.setblocking(False)
    socks.append(s)
for s in socks:
    s.sendto(b"flow", (sys.argv[2], 7007))
pending, got = set(socks), 0
while pending:
    r, _, _ = select.select(list(pending), [], [], 5)
    if not r:
        break
    for s in r:
        s.recv(100)
        pending.discard(s)
        got += 1
print(got)
"""



def predicted_flows(workers: int) -> tuple[list[int], list[int]]:
    """Source ports of NFLOWS LAN->WAN UDP flows and the sets per worker that software RSS predicts;
    the split is made uneven on purpose, so that workers joining their group out of order would show."""
    s = Session(str(EXAMPLES / "firewall.py"), workers=workers, collect_output=False)
    try:
        s.init()
        lan_prog = compile_steering(s.nf.key_definitions()[0], s.nf.proto_mask(), workers)
        wan_prog = compile_steering(s.nf.key_definitions()[1], s.nf.proto_mask(), workers)
        ports, per = [], [0] * workers
        port = 20000
        while len(ports) < NFLOWS:
            req = F.udp_frame(LAN_IP, WAN_IP, port, 7007)
            w, in_set, _ = _core.steer_frame(req, 0)
            assert in_set and run_program(lan_prog, req) == w
            assert run_program(wan_prog, F.udp_frame(WAN_IP, LAN_IP, 7007, port)) == w   # the reply too
            if w == 0 or port % 5:
                ports.append(port)
                per[w] += 1
            port += 1
        return ports, per
    finally:
        s.close()


def test_two_workers_steer_as_predicted(wire, nfos_live):
    lab = wire.lab
    ports, per = predicted_flows(2)
    assert per[0] != per[1]
    echo = lab.spawn(wire.wan, sys.executable, "-c", UDP_ECHO, WAN_IP, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    assert echo.stdout.readline().strip() == "ready"
    run = nfos_live(wire.box, "firewall.py", wire.ifaces, workers=2)
    run.wait_ready()
    got = lab.python(wire.lan, SENDER, LAN_IP, WAN_IP, ",".join(map(str, ports)), timeout=30)
    echo.communicate(input="", timeout=10)
    stats = run.stop()
    assert int(got.stdout) == NFLOWS, "every flow's reply came back through the firewall"
    assert stats["packet_sets_created"] == NFLOWS, "each packet set was created once: no set on two workers"
    assert [w["packet_sets_live"] for w in stats["per_worker"]] == per, "sets on the predicted workers"
    counts = [w["packets"] for w in stats["per_worker"]]
    assert counts == [2 * n for n in per], "requests and replies on their set's worker"
    assert max(counts) <= 1.2 * (sum(counts) / len(counts)), f"balanced within 20%: {counts}"
    assert stats["ring_drops"] == 0 and stats["handler_errors"] == 0


def test_the_kernel_accepts_every_steering_program():
    """The kernel's classic-BPF checker takes each example's programs (as PACKET_FANOUT_DATA would)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (an AF_PACKET socket)")
    attached = expected = 0
    for nf in ("firewall.py", "policer.py", "anti_ddos.py", "bridge.py", "nat.py", "maglev.py", "dummy.py"):
        s = Session(str(EXAMPLES / nf), workers=2, collect_output=False)
        try:
            s.init()
            defs, mask = s.nf.key_definitions(), s.nf.proto_mask()
        finally:
            s.close()
        for workers in (1, 2, 3, 16):
            for defn in defs:
                prog = compile_steering(defn, mask, workers)
                buf = ctypes.create_string_buffer(prog, len(prog))
                fprog = struct.pack("HL", len(prog) // 8, ctypes.addressof(buf))
                expected += 1
                with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as so:
                    so.setsockopt(socket.SOL_SOCKET, 26, fprog)   # SO_ATTACH_FILTER: raises if rejected
                    attached += 1
    assert attached == expected >= 7 * 4 * 2
