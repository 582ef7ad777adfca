"""Transparent stateful firewall (the NFOS paper's "fw", Table 6).

Contract
--------
Devices ``lan`` (inside) and ``wan`` (outside).  Frames leave unchanged.

* A session is one bidirectional packet set: (internal IP, external IP,
  internal port, external port, protocol) for TCP and UDP; for ICMP echo
  (RFC 792) the identifier stands for both ports, so a ping and its replies
  are one session.  It expires after ``expiry`` (default 60 s) without
  packets in either direction; every packet that finds its session refreshes
  it, also one that is dropped.
* A TCP/UDP packet or an ICMP echo from LAN is forwarded to WAN and opens (or
  refreshes) its session.
* A TCP/UDP packet from WAN is forwarded to LAN only if its session exists;
  so is an ICMP echo reply.  An echo request from WAN never passes (no ping
  from outside, whatever its identifier).
* ICMP errors — destination unreachable, time exceeded, parameter problem
  (RFC 792: each quotes the IPv4 header and first 8 data bytes of the packet
  it is about) — belong to the session of the header they quote, as if they
  were packets of it: one from WAN passes to LAN only if that session is
  live and the error is addressed to the quoted packet's source (what
  netfilter calls "related"; RFC 1122 3.2.2.1 has hosts pass them to the
  transport).  So fragmentation needed reaches the sender and path-MTU
  discovery works (RFC 1191; RFC 8201 is the same for IPv6; filtering it
  makes the "black hole" of RFC 2923 2.1).  One from LAN passes to WAN, and
  opens no session.
* ARP (RFC 826) passes in both directions: the firewall is transparent, and
  hosts on either side resolve each other through it (a firewall that
  dropped WAN->LAN ARP replies would leave them unreachable unless their
  neighbours were set by hand).
* Every other frame from LAN is forwarded to WAN; every other frame from WAN
  is dropped: unsolicited TCP/UDP, echo requests, errors of no live session
  (or quoting too little to tell, less than an IPv4 header and 8 bytes of
  its data), other ICMP, other protocols, IP fragments without ports,
  non-IP frames but ARP.
* The TCP flags seen are kept per direction (state only; no TCP tracking).

Theory of operation
-------------------
The packet-set definition reverses the address and port order on WAN, so a
reply has the same key as its request and lands on the same worker (RSS).
With "icmp" in its protocols, the runtime keys an echo by its identifier and
an error by the header it quotes (its fields swapped: the quoted packet went
the other way), so an error lands on the worker and the set of the session
it belongs to, in replays and in the kernel fanout program alike.  Sessions
are packet-set state: no aggregate state, so no transaction ever conflicts
and the NF scales with the workers.  A full session table on a worker drops
the new session's first packet (counted as table_full).
"""

import nfos

nf = nfos.NF("firewall", devices=["lan", "wan"],
             params={"expiry": nfos.param(nfos.Duration, nfos.seconds(60), "session idle timeout"),
                     "capacity": nfos.param(int, 1 << 18, "sessions per worker")})

ETH_ARP = 0x0806
ECHO_REPLY = 0
ERRORS = (3, 11, 12)   # destination unreachable, time exceeded, parameter problem (RFC 792)


class Session(nfos.Record):
    internal_dev: nfos.u8
    lan_flags: nfos.u8   # TCP flags seen from the inside
    wan_flags: nfos.u8   # TCP flags seen from the outside


@nf.init
def setup(p):
    nf.packet_sets(
        nfos.on("lan", ipv4=("src", "dst"), l4=("sport", "dport")),
        nfos.on("wan", ipv4=("dst", "src"), l4=("dport", "sport")),
        protocols=("tcp", "udp", "icmp"), state=Session, expiry=p.expiry, capacity=p.capacity)


@nf.new_packet_set
def new_session(pkt):
    if pkt.dev == "wan":
        return   # unsolicited, or an error of no live session: dropped, no session created
    l4 = pkt.l4   # TCP/UDP; else this is ICMP (echo, or an error)
    if l4 is None and pkt.icmp.type in ERRORS:
        pkt.send("wan")   # an error from the inside: passes, but opens nothing
        return
    s = nf.register(pkt)
    s.internal_dev = pkt.dev_index
    s.lan_flags = l4.flags if l4 is not None else 0
    pkt.send("wan")


@nf.packet
def on_packet(pkt, s):
    l4 = pkt.l4
    if pkt.dev == "lan":
        if l4 is not None:
            s.lan_flags |= l4.flags
        pkt.send("wan")
    elif l4 is not None:
        s.wan_flags |= l4.flags
        pkt.send("lan")
    else:
        # a reply to the inside's ping (RFC 792), or an error about the session, to the host that sent
        # the packet it quotes ("related": RFC 1122 3.2.2.1; fragmentation needed: RFC 1191, 8201)
        icmp = pkt.icmp
        if icmp.type == ECHO_REPLY or icmp.type in ERRORS and pkt.ip.dst == icmp.inner.ip.src:
            pkt.send("lan")


@nf.orphan
def other_frames(pkt):
    if pkt.dev == "lan":
        pkt.send("wan")
    elif pkt.eth.type == ETH_ARP:   # ARP both ways (RFC 826): a transparent box between neighbours
        pkt.send("lan")
