"""Test NF: sets the header fields that the packet's own payload asks for, sends on ``wan``.

The L4 payload starts with ``struct.pack("!BIIBBHHB", mask, src, dst, ttl, tos,
sport, dport, flags)``; mask bits: 1 ip.src, 2 ip.dst, 4 ttl, 8 tos, 16 sport,
32 dport, 64 tcp flags.  So a test can try many values with no NF state.
"""

import struct

import nfos

nf = nfos.NF("rewrite_payload", devices=["lan", "wan"])

REQUEST = struct.Struct("!BIIBBHHB")


@nf.orphan
def rewrite(pkt):
    mask, src, dst, ttl, tos, sport, dport, flags = REQUEST.unpack_from(pkt.payload)
    ip = pkt.ip
    if mask & 1:
        ip.src = src
    if mask & 2:
        ip.dst = dst
    if mask & 4:
        ip.ttl = ttl
    if mask & 8:
        ip.tos = tos
    if mask & 16:
        pkt.l4.sport = sport
    if mask & 32:
        pkt.l4.dport = dport
    if mask & 64:
        pkt.tcp.flags = flags
    pkt.send("wan")
