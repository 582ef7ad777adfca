"""Test NF for rebalancing and respawns: each TCP/UDP session counts its packets and writes the
count into the IP TTL of every packet it sends, so the output shows whether a session's state
followed it when its packets moved to another worker (or survived its worker's death).

Param ``die``: a packet to port DIE_PORT makes its worker die in the handler: ``kill``
(SIGKILL), ``exit`` (``os._exit(3)``); empty (the default): it is counted like any other."""

import os

import nfos

DIE_PORT = 6666

nf = nfos.NF("counting", devices=["lan", "wan"],
             params={"die": nfos.param(str, "", "kill or exit: how a packet to DIE_PORT ends its worker")})


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
    if nf.params.die and pkt.l4.dport == DIE_PORT:
        if nf.params.die == "kill":
            os.kill(os.getpid(), 9)   # SIGKILL
        os._exit(3)
    pkt.ip.ttl = s.n & 0xFF
    pkt.send(1 - pkt.dev_index)


@nf.new_packet_set
def first(pkt):
    count(pkt, nf.register(pkt))


nf.packet(count)


@nf.orphan
def other(pkt):
    pkt.send(1 - pkt.dev_index)
