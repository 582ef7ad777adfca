"""nfos.Counter: every packet counts itself and its bytes; one in three reads the total.
The accessors for the profiler tests sit at fixed lines."""

import nfos

nf = nfos.NF("counted", devices=["lan", "wan"], params={"staleness": nfos.Duration(0)})


@nf.init
def setup(p):
    nf.state.packets = nfos.Counter(max_staleness=p.staleness)   # line 11
    nf.state.bytes = nfos.Counter()
    nf.state.other = nfos.Vector(nfos.i64, 1)


@nf.orphan
def count(pkt):
    nf.state.packets.add()
    nf.state.bytes.add(pkt.len)
    if pkt.len % 3 == 0:
        nf.emit(nf.state.packets.value().to_bytes(8, "big"), "lan")   # reads conflict with adds
    pkt.send("wan")


def read_and_write():
    nf.state.packets.value()                 # line 26
    nf.state.other[0] = 1


def add():
    nf.state.packets.add(5)                  # line 31


def warm():
    return nf.state.packets.read()
