"""Anti-DDoS: drop new flows while most flows are one packet long (the NFOS paper's Listing 2).

Contract
--------
Devices ``lan`` (watched) and ``wan``.  Frames leave unchanged.

* A flow is a TCP or UDP 5-tuple arriving on ``lan``; it expires after
  ``expiry`` (default 10 s) without packets.
* The NF counts live flows and live one-packet flows.  The first packet of a
  new flow makes both counts grow; then, if there are at least ``min_flows``
  (default 1000) flows and the one-packet flows are more than ``threshold``
  (default 0.8) of them, the NF is under attack: the packet is dropped (and
  counted in ``dropped``; the flow is still tracked).  Otherwise it goes to
  ``wan``.
* A later packet of a flow goes to ``wan``; the flow stops being a
  one-packet flow.
* Everything else (not TCP/UDP, or arriving on ``wan``) is forwarded to the
  other device.

Theory of operation
-------------------
A flow's ``one_packet`` flag is packet-set state.  The counts are aggregate
state in a DistributedObj: each worker updates only its own replica, so
updates never conflict; the merged value is read on every new flow, which
reads every replica and so conflicts with other workers' updates, unless
``staleness`` lets a worker reuse a merged value up to that old.  The drop
counter is update-only, so counting never conflicts.  With ``staleness`` 0
the decisions are exactly those of a sequential run over the same packet
order.
"""

import nfos

nf = nfos.NF("anti_ddos", devices=["lan", "wan"],
             params={"staleness": nfos.param(nfos.Duration, 0, "max age of the merged counters"),
                     "min_flows": nfos.param(int, 1000, "flows needed before the detector acts"),
                     "threshold": nfos.param(float, 0.8, "one-packet share of flows that means attack"),
                     "expiry": nfos.param(nfos.Duration, nfos.seconds(10), "flow idle timeout")})


class Flow(nfos.Record):
    one_packet: nfos.boolean


class Counters(nfos.Record):
    flows: nfos.i64
    one_packet_flows: nfos.i64


class Dropped(nfos.Record):
    new_flows_dropped: nfos.i64


class Config(nfos.Record):
    min_flows: nfos.i64
    threshold: nfos.f64


@nf.init
def setup(p):
    nf.packet_sets(nfos.on("lan", ipv4=("src", "dst"), l4=("sport", "dport")),
                   protocols=("tcp", "udp"), state=Flow, expiry=p.expiry)
    nf.state.counters = nfos.DistributedObj(Counters, merge="sum", max_staleness=p.staleness)
    nf.state.dropped = nfos.DistributedObj(Dropped, merge="sum")
    nf.state.config = nfos.Vector(Config, 1)   # read-only after init: never conflicts
    cfg = nf.state.config[0]
    cfg.min_flows = p.min_flows
    cfg.threshold = p.threshold


@nf.new_packet_set
def new_flow(pkt):
    flow = nf.register(pkt)
    flow.one_packet = True
    mine = nf.state.counters.update()
    mine.flows += 1
    mine.one_packet_flows += 1
    total = nf.state.counters.read()
    cfg = nf.state.config[0]
    if total.flows >= cfg.min_flows and total.one_packet_flows > cfg.threshold * total.flows:
        nf.state.dropped.update().new_flows_dropped += 1
        return   # under attack: dropped
    pkt.send("wan")


@nf.packet
def known_flow(pkt, flow):
    if flow.one_packet:
        flow.one_packet = False
        nf.state.counters.update().one_packet_flows -= 1
    pkt.send("wan")


@nf.expired
def flow_gone(flow):
    mine = nf.state.counters.update()
    mine.flows -= 1
    if flow.one_packet:
        mine.one_packet_flows -= 1


@nf.orphan
def not_watched(pkt):
    pkt.send("wan" if pkt.dev == "lan" else "lan")
