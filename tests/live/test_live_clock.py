"""Live time is the monotonic clock: periodic handlers run in the control process (and their
frames leave through its sockets), packets carry the monotonic time, idle sets expire."""

from __future__ import annotations

import subprocess
import sys
import time

BEACON = '''
import struct

import nfos

nf = nfos.NF("beacon", devices=["lan", "wan"])
BCAST = b"\\xff" * 6 + b"\\x02\\x00\\x00\\x00\\x00\\x01" + b"\\x88\\xb5"   # local experimental ethertype

@nf.periodic(nfos.millis(100))
def beacon():
    nf.emit(BCAST + b"P" + struct.pack("!Q", nfos.now()), "lan")

@nf.orphan
def echo_time(pkt):
    if pkt.dev == "wan":
        nf.emit(BCAST + b"T" + struct.pack("!QQ", pkt.time, nfos.now()), "lan")
'''

# Prints the kind and timestamps of the 0x88b5 frames arriving on h0 until stdin closes.
CATCHER = r"""
import select, socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind(("h0", 0))
print("ready", flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 30)
    if not r or sys.stdin in r:
        break
    f = s.recv(2048)
    print(chr(f[14]), *struct.unpack_from("!Q" if f[14] == ord("P") else "!QQ", f, 15), flush=True)
"""


def test_periodic_handlers_and_packet_time_are_monotonic(lab, nfos_live, tmp_path):
    nf = tmp_path / "beacon.py"
    nf.write_text(BEACON)
    lan, box, wan = lab.ns("L"), lab.ns("N"), lab.ns("W")
    lab.veth(lan, "h0", box, "lan0")
    lab.veth(box, "wan0", wan, "h0")
    catcher = lab.spawn(lan, sys.executable, "-c", CATCHER, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
    assert catcher.stdout.readline().strip() == "ready"
    run = nfos_live(box, str(nf), {"lan": "lan0", "wan": "wan0"}, workers=1)
    run.wait_ready()
    t0 = time.monotonic_ns()
    time.sleep(0.6)
    lab.python(wan, r"""
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("h0", 0))
s.send(b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x02" + b"\x88\xb6" + bytes(46))
""")
    time.sleep(0.2)
    t1 = time.monotonic_ns()
    run.stop()
    out, _ = catcher.communicate(input="", timeout=10)
    rows = [line.split() for line in out.splitlines()]
    beacons = [int(r[1]) for r in rows if r[0] == "P"]
    echoes = [(int(r[1]), int(r[2])) for r in rows if r[0] == "T"]
    assert len(beacons) >= 4, out                              # every 100 ms, from the control process
    assert all(b - a == 100_000_000 for a, b in zip(beacons, beacons[1:], strict=False)), beacons
    assert t0 - 2_000_000_000 < beacons[0] and beacons[-1] < t1 + 200_000_000, (t0, beacons, t1)
    assert len(echoes) == 1
    pkt_time, now = echoes[0]
    assert t0 < pkt_time <= now < t1                           # a worker: the monotonic clock too
