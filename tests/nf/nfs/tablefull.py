"""Test NF: a packet-set table of ``capacity`` sets per worker (default 2).

LAN TCP/UDP packets are packet sets keyed by the 5-tuple.  A new set is
registered and its packet sent on wan.  With ``catch=true`` a full table is
handled: the packet is forwarded without state; otherwise nfos.TableFull
escapes the handler.  Packets of a known set are sent on wan and counted in the
set's state; other packets (orphans) are dropped.
"""

import nfos

nf = nfos.NF("tablefull", devices=["lan", "wan"],
             params={"capacity": nfos.param(int, 2, "sets per worker"),
                     "catch": nfos.param(bool, False, "forward statelessly when full")})


class Flow(nfos.Record):
    packets: nfos.u32


@nf.init
def setup(p):
    nf.packet_sets(nfos.on("lan", ipv4=("src", "dst"), l4=("sport", "dport")),
                   protocols=("tcp", "udp"), state=Flow, capacity=p.capacity)


@nf.new_packet_set
def new_flow(pkt):
    if nf.params.catch:
        try:
            s = nf.register(pkt)
        except nfos.TableFull:
            pkt.send("wan")
            return
    else:
        s = nf.register(pkt)
    s.packets = 1
    pkt.send("wan")


@nf.packet
def known_flow(pkt, s):
    s.packets += 1
    pkt.send("wan")
