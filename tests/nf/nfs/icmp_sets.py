"""Test NF: packet sets with ICMP (``protocols`` lists "icmp"), for the steering and keying tests.

``--param key=...`` picks the definition: ``ports`` (a firewall's 5-tuple, reversed on wan),
``proto`` (the same with ``proto=True`` first), ``addrs`` (addresses only, reversed on wan), ``dst``
(the policer's: the destination address, wan only), ``eth`` (a MAC and the addresses).
``--param protocols=tcp,udp,icmp`` the protocols (comma-separated).

Every packet emits on ``wan`` one frame holding ``repr(dict)`` of what the handler saw: the event
(``new``, ``packet``, ``orphan``), the packet's device, the number of packets of its set so far and
the device that created the set, and the ICMP fields (``pkt.icmp`` and its quote).  Sets are
registered from either device; they expire after ``expiry`` (default 10 s).
"""

import nfos

nf = nfos.NF("icmp_sets", devices=["lan", "wan"],
             params={"key": "ports", "protocols": "tcp,udp,icmp", "expiry": nfos.param(nfos.Duration, nfos.seconds(10))})

KEYS = {
    "ports": (dict(ipv4=("src", "dst"), l4=("sport", "dport")), dict(ipv4=("dst", "src"), l4=("dport", "sport"))),
    "proto": (dict(proto=True, ipv4=("src", "dst"), l4=("sport", "dport")),
              dict(proto=True, ipv4=("dst", "src"), l4=("dport", "sport"))),
    "addrs": (dict(ipv4=("src", "dst")), dict(ipv4=("dst", "src"))),
    "dst": (None, dict(ipv4=("dst",))),
    "eth": (dict(eth=("dst",), ipv4=("src", "dst")), dict(eth=("src",), ipv4=("dst", "src"))),
}


class Seen(nfos.Record):
    n: nfos.u32
    created_on: nfos.u8


@nf.init
def setup(p):
    lan, wan = KEYS[p.key]
    defs = [nfos.on("wan", **wan)]
    if lan is not None:
        defs.insert(0, nfos.on("lan", **lan))
    nf.packet_sets(*defs, protocols=tuple(p.protocols.split(",")), state=Seen, expiry=p.expiry)


def icmp_fields(pkt):
    icmp = pkt.icmp
    if icmp is None:
        return None
    out = {"type": icmp.type, "code": icmp.code, "id": icmp.id, "seq": icmp.seq, "mtu": icmp.mtu, "inner": None}
    q = icmp.inner
    if q is not None:
        ip = q.ip
        inner = {"ip": {"src": ip.src, "dst": ip.dst, "proto": ip.proto, "ihl": ip.ihl, "len": ip.len,
                        "checksum": ip.checksum, "fragment": ip.fragment, "frag_offset": ip.frag_offset,
                        "options": ip.options},
                 "l4": None, "tcp": q.tcp is not None, "udp": q.udp is not None, "icmp": None, "len": q.len}
        if q.l4 is not None:
            inner["l4"] = {"sport": q.l4.sport, "dport": q.l4.dport, "checksum": q.l4.checksum}
        if q.icmp is not None:
            inner["icmp"] = {"type": q.icmp.type, "code": q.icmp.code, "id": q.icmp.id, "seq": q.icmp.seq,
                             "checksum": q.icmp.checksum}
        out["inner"] = inner
    return out


def report(event, pkt, s):
    nf.emit(repr({"event": event, "dev": pkt.dev, "n": s.n if s is not None else None,
                  "created_on": s.created_on if s is not None else None, "icmp": icmp_fields(pkt)}).encode(), "wan")


@nf.new_packet_set
def new_set(pkt):
    s = nf.register(pkt)
    s.n = 1
    s.created_on = pkt.dev_index
    report("new", pkt, s)


@nf.packet
def in_set(pkt, s):
    s.n += 1
    report("packet", pkt, s)


@nf.orphan
def orphan(pkt):
    report("orphan", pkt, None)
