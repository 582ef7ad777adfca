"""Test NF for rebalancing: each TCP/UDP session counts its packets and writes the count into
the IP TTL of every packet it sends, so the output shows whether a session's state followed it
when its packets moved to another worker."""

import nfos

nf = nfos.NF("counting", devices=["lan", "wan"])


class Count(nfos.Record):
    n: nfos.u32


@nf.init
def setup(p):
    nf.packet_sets(
        nfos.on("lan", ipv4=("src", "dst"), l4=("sport", "dport")),
        nfos.on("wan", ipv4=("dst", "src"), l4=("dport", "sport")),
        protocols=("tcp", "udp"), state=Count, expiry=nfos.seconds(60))


def count(pkt, s):
    s.n += 1
    pkt.ip.ttl = s.n & 0xFF
    pkt.send(1 - pkt.dev_index)


@nf.new_packet_set
def first(pkt):
    count(pkt, nf.register(pkt))


nf.packet(count)


@nf.orphan
def other(pkt):
    pkt.send(1 - pkt.dev_index)
