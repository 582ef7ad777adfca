"""Kernel steering of ICMP on live interfaces: the fanout program of a definition with "icmp" in
its protocols is accepted by the kernel, and it steers each ICMP error to the worker of the session
it quotes — the firewall with 2 workers lets every port-unreachable of many LAN flows back in
(an error on another worker would find no session there and be dropped)."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from pathlib import Path

import pytest

import frames as F
from nfos import _core
from nfos.io.bpf import compile_steering, run_program
from nfos.runtime.session import Session

REPO = Path(__file__).resolve().parents[2]
ICMP_NF = str(REPO / "tests" / "nf" / "nfs" / "icmp_sets.py")
FIREWALL = str(REPO / "examples" / "firewall.py")
LAN_IP, WAN_IP = "192.0.2.1", "192.0.2.2"
NFLOWS = 300

# Sends one datagram per source port to a closed port of the WAN host, from connected sockets,
# and counts the flows whose port unreachable came back (recv raises ConnectionRefusedError).
SENDER = r"""
import resource, select, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
socks = []
for p in (int(p) for p in sys.argv[3].split(",")):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], p))
    s.connect((sys.argv[2], 7009))
    s.setblocking(False)
    socks.append(s)
for s in socks:   # at once: the NF's ring blocks (retired after 1 ms) then hold many frames each
    s.send(b"anyone there?")
pending, refused = set(socks), 0
while pending:
    r, _, _ = select.select(list(pending), [], [], 5)
    if not r:
        break
    for s in r:
        try:
            s.recv(100)
        except ConnectionRefusedError:
            refused += 1
        except BlockingIOError:
            continue
        pending.discard(s)
print(refused)
"""


def test_the_kernel_accepts_the_icmp_steering_programs():
    if os.geteuid() != 0:
        pytest.skip("needs root (an AF_PACKET socket)")
    n = 0
    for key in ("ports", "proto", "addrs", "dst", "eth"):
        s = Session(ICMP_NF, workers=2, params=[f"key={key}", "protocols=tcp,udp,icmp,other"], collect_output=False)
        try:
            s.init()
            defs, mask = s.nf.key_definitions(), s.nf.proto_mask()
        finally:
            s.close()
        for workers in (1, 3, 16):
            for defn in (d for d in defs if d is not None):
                prog = compile_steering(defn, mask, workers)
                buf = ctypes.create_string_buffer(prog, len(prog))
                fprog = struct.pack("HL", len(prog) // 8, ctypes.addressof(buf))
                with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as so:
                    so.setsockopt(socket.SOL_SOCKET, 26, fprog)   # SO_ATTACH_FILTER: raises if rejected
                n += 1
    assert n == (2 + 2 + 2 + 1 + 2) * 3


def predicted(workers: int) -> tuple[list[int], list[int]]:
    """NFLOWS source ports, unevenly split over the workers, and the sets per worker; the port
    unreachable of each flow is predicted on its flow's worker, in software and in the program."""
    s = Session(FIREWALL, workers=workers, collect_output=False)
    try:
        s.init()
        wan_prog = compile_steering(s.nf.key_definitions()[1], s.nf.proto_mask(), workers)
        ports, per, port = [], [0] * workers, 30000
        while len(ports) < NFLOWS:
            out = F.udp_frame(LAN_IP, WAN_IP, port, 7009, b"anyone there?")
            w, in_set, _ = _core.steer_frame(out, 0)
            err = F.icmp_error_frame(WAN_IP, LAN_IP, 3, 3, out[14:14 + 20 + 8 + 13])   # quoting all of it
            assert in_set and _core.steer_frame(err, 1)[:2] == (w, 1) and run_program(wan_prog, err) == w
            if w == 0 or port % 3:
                ports.append(port)
                per[w] += 1
            port += 1
        return ports, per
    finally:
        s.close()


def test_errors_reach_their_sessions_worker(wire, nfos_live):
    lab = wire.lab
    for knob in ("net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=100000", "net.ipv4.icmp_msgs_burst=10000"):
        lab.run(wire.wan, "sysctl", "-qw", knob, check=False)
    ports, per = predicted(2)
    run = nfos_live(wire.box, "firewall.py", wire.ifaces, workers=2)
    run.wait_ready()
    got = lab.python(wire.lan, SENDER, LAN_IP, WAN_IP, ",".join(map(str, ports)), timeout=60)
    stats = run.stop()
    refused, lost = int(got.stdout), stats["ring_drops"]
    counters = {k: stats[k] for k in ("packets_in", "dropped", "ring_drops", "tx_errors", "packets_out")}
    # an error steered to another worker than its flow's finds no session there and is dropped
    assert stats["dropped"] == 0, f"errors missed their session: {counters}"
    # a frame the kernel dropped (a worker's ring full: a busy machine) loses its flow's answer
    assert refused == NFLOWS - lost and lost < NFLOWS // 4, f"{refused} of {NFLOWS} came back: {counters}"
    if lost == 0:
        assert stats["packet_sets_created"] == NFLOWS
        assert [w["packet_sets_live"] for w in stats["per_worker"]] == per, "sets on the predicted workers"
        assert [w["packets"] for w in stats["per_worker"]] == [2 * n for n in per], "errors on their flow's worker"
    assert stats["handler_errors"] == 0 and stats["tx_errors"] == 0
