"""Test NF: reports every header field of each packet as an emitted frame.

Devices lan, wan.  Each packet is dropped (the default); the handler emits on
``wan`` one frame holding ``repr(dict)`` of what it read, so a test reads the
fields with ``ast.literal_eval`` without any state in the NF.
"""

import nfos

nf = nfos.NF("fields", devices=["lan", "wan"])


def header_fields(pkt):
    eth = pkt.eth
    out = {"dev": pkt.dev, "dev_index": pkt.dev_index, "len": pkt.len, "time": pkt.time,
           "payload": pkt.payload, "frame": pkt.frame, "out": pkt.out,
           "eth": {"src": eth.src, "dst": eth.dst, "type": eth.type, "vlan": eth.vlan},
           "ip": None, "tcp": None, "udp": None, "l4": None, "icmp": None}
    ip = pkt.ip
    if ip is not None:
        out["ip"] = {"src": ip.src, "dst": ip.dst, "proto": ip.proto, "ttl": ip.ttl, "tos": ip.tos,
                     "len": ip.len, "id": ip.id, "ihl": ip.ihl, "checksum": ip.checksum,
                     "options": ip.options, "fragment": ip.fragment, "df": ip.df, "mf": ip.mf,
                     "frag_offset": ip.frag_offset}
    for name in ("tcp", "udp", "l4"):
        h = getattr(pkt, name)
        if h is not None:
            out[name] = {"sport": h.sport, "dport": h.dport, "flags": h.flags, "seq": h.seq,
                         "ack": h.ack, "window": h.window, "checksum": h.checksum, "len": h.len}
    icmp = pkt.icmp
    if icmp is not None:
        out["icmp"] = {"type": icmp.type, "code": icmp.code, "checksum": icmp.checksum,
                       "id": icmp.id, "seq": icmp.seq}
    return out


@nf.orphan
def report(pkt):
    nf.emit(repr(header_fields(pkt)).encode(), "wan")
