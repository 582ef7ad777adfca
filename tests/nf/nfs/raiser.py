"""Test NF: raises on packets whose UDP payload starts with ``!``.

Every packet first adds 1 to ``seen[0]`` (a Vector) and decrements its TTL, so
a test can check that a rolled-back attempt changed neither the state nor the
packet bytes.  A packet that does not raise is sent on wan.  At the end of a
run, ``@nf.exit`` emits ``b"seen=<n>"`` on lan.
"""

import nfos

nf = nfos.NF("raiser", devices=["lan", "wan"])


@nf.init
def setup(p):
    nf.state.seen = nfos.Vector(nfos.u64, 1)


@nf.orphan
def handle(pkt):
    nf.state.seen[0] = nf.state.seen[0] + 1
    if pkt.ip is not None:
        pkt.ip.ttl -= 1
    if pkt.udp is not None and pkt.payload[:1] == b"!":
        raise ValueError(f"bad packet from port {pkt.udp.sport}")
    pkt.send("wan")


@nf.exit
def report():
    nf.emit(b"seen=%d" % nf.state.seen[0], "lan")
