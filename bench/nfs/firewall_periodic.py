"""The firewall of examples/firewall.py plus one periodic handler, for ``nfos bench --measure
barrier``: what a periodic handler costs when the workers must meet at a barrier at each of its
due times (replay: every worker has processed its packets before T, one runs the handler alone).

The handler is cheap on purpose (it counts its runs in a Vector element), so the measurement is
the barrier's: ``--param period=1ms`` against ``1s`` and the firewall without a periodic handler.
"""

import nfos

nf = nfos.NF("firewall_periodic", devices=["lan", "wan"],
             params={"expiry": nfos.param(nfos.Duration, nfos.seconds(60), "session idle timeout"),
                     "capacity": nfos.param(int, 1 << 18, "sessions per worker"),
                     "period": nfos.param(nfos.Duration, nfos.seconds(1), "the periodic handler's interval")})


class Session(nfos.Record):
    internal_dev: nfos.u8
    lan_flags: nfos.u8
    wan_flags: nfos.u8


@nf.init
def setup(p):
    nf.packet_sets(
        nfos.on("lan", ipv4=("src", "dst"), l4=("sport", "dport")),
        nfos.on("wan", ipv4=("dst", "src"), l4=("dport", "sport")),
        protocols=("tcp", "udp"), state=Session, expiry=p.expiry, capacity=p.capacity)
    nf.state.runs = nfos.Vector(nfos.u64, 1)


@nf.new_packet_set
def new_session(pkt):
    if pkt.dev == "wan":
        return
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


@nf.periodic("period")
def tick():
    nf.state.runs[0] += 1
