"""Test NF: a DistributedObj of per-worker counters, merged on read.

Record ``Tot``: packets (sum), bytes (sum), biggest (max), smallest (min).
Parameter ``staleness`` is the object's max_staleness.  A UDP packet whose
payload starts with ``b"read"`` emits ``repr(merged.as_dict())`` on wan; with
``b"write"`` it tries to change the merged (read-only) view.  Every other
packet updates this worker's replica and is sent on wan.
"""

import nfos

nf = nfos.NF("distributed", devices=["lan", "wan"],
             params={"staleness": nfos.param(nfos.Duration, 0, "max_staleness of the counters")})


class Tot(nfos.Record):
    packets: nfos.u64
    bytes: nfos.u64
    biggest: nfos.u32
    smallest: nfos.u32


@nf.init
def setup(p):
    nf.state.tot = nfos.DistributedObj(Tot, merge={"biggest": "max", "smallest": "min"},
                                       max_staleness=p.staleness)


@nf.orphan
def count(pkt):
    cmd = pkt.payload[:5] if pkt.udp is not None else b""
    if cmd == b"read\0":
        nf.emit(repr(nf.state.tot.read().as_dict()).encode(), "wan")
        return
    if cmd == b"write":
        nf.state.tot.read().packets = 0
        return
    mine = nf.state.tot.update()
    mine.packets += 1
    mine.bytes += pkt.len
    mine.biggest = max(mine.biggest, pkt.len)
    mine.smallest = pkt.len if mine.smallest == 0 else min(mine.smallest, pkt.len)
    pkt.send("wan")
