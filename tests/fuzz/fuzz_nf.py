"""The NF the packet fuzzers run under: packet sets with every key field kind (MACs, IPv4
addresses, ports, the protocol), reversed on the second device, restricted to TCP, UDP and
ICMP (other protocols are orphans), and a third device without a definition."""

import nfos

nf = nfos.NF("fuzz", devices=["lan", "wan", "dmz"])


class State(nfos.Record):
    n: nfos.u32


nf.packet_sets(nfos.on("lan", eth=("src", "dst"), ipv4=("src", "dst"), l4=("sport", "dport"), proto=True),
               nfos.on("wan", eth=("dst", "src"), ipv4=("dst", "src"), l4=("dport", "sport"), proto=True),
               protocols=("tcp", "udp", "icmp"), state=State)


@nf.orphan
def orphan(pkt):
    pkt.drop()
