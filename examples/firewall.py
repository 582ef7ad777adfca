"""Transparent stateful firewall (the NFOS paper's "fw", Table 6).

Contract
--------
Devices ``lan`` (inside) and ``wan`` (outside).  Frames leave unchanged.

* A TCP/UDP packet from LAN is forwarded to WAN and opens (or refreshes) its
  session.
* A TCP/UDP packet from WAN is forwarded to LAN only if its session exists;
  otherwise it is dropped (unsolicited).
* A session is one bidirectional packet set: (internal IP, external IP,
  internal port, external port, protocol).  It expires after ``expiry``
  (default 60 s) without packets in either direction.
* The TCP flags seen are kept per direction (state only; no TCP tracking).
* Packets that are not TCP/UDP are orphans: LAN->WAN forwarded, WAN->LAN
  dropped.

Theory of operation
-------------------
The packet-set definition reverses the address and port order on WAN, so a
reply has the same key as its request and lands on the same worker (RSS).
Sessions are packet-set state: no aggregate state, so no transaction ever
conflicts and the NF scales with the workers.  A full session table on a
worker drops the new session's first packet (counted as table_full).
"""

import nfos

nf = nfos.NF("firewall", devices=["lan", "wan"],
             params={"expiry": nfos.param(nfos.Duration, nfos.seconds(60), "session idle timeout"),
                     "capacity": nfos.param(int, 1 << 18, "sessions per worker")})


class Session(nfos.Record):
    internal_dev: nfos.u8
    lan_flags: nfos.u8   # TCP flags seen from the inside
    wan_flags: nfos.u8   # TCP flags seen from the outside


@nf.init
def setup(p):
    nf.packet_sets(
        nfos.on("lan", ipv4=("src", "dst"), l4=("sport", "dport")),
        nfos.on("wan", ipv4=("dst", "src"), l4=("dport", "sport")),
        protocols=("tcp", "udp"), state=Session, expiry=p.expiry, capacity=p.capacity)


@nf.new_packet_set
def new_session(pkt):
    if pkt.dev == "wan":
        return   # unsolicited: dropped, no session created
    s = nf.register(pkt)
    s.internal_dev = pkt.dev_index
    s.lan_flags = pkt.l4.flags
    pkt.send("wan")


@nf.packet
def on_packet(pkt, s):
    if pkt.dev == "lan":
        s.lan_flags |= pkt.l4.flags
        pkt.send("wan")
    else:
        s.wan_flags |= pkt.l4.flags
        pkt.send("lan")


@nf.orphan
def other_protocols(pkt):
    if pkt.dev == "lan":
        pkt.send("wan")
