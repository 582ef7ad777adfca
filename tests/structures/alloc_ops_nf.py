"""Executes the Allocator operation carried by each UDP packet; replies with the result.

Every allocation marks the index in `owned`; finding it already marked means
the allocator handed one index out twice, and the handler raises.
"""

import struct

import nfos

nf = nfos.NF("allocops", devices=["a", "b"], params={"capacity": 64, "lease": nfos.Duration(0),
                                                    "refresh": nfos.Duration(0)})


def forget(index):
    nf.state.owned[index] = 0
    nf.state.expired[index] += 1


@nf.init
def setup(p):
    nf.state.alloc = nfos.Allocator(p.capacity, lease=p.lease or None, refresh_interval=p.refresh,
                                    on_expire=forget)
    nf.state.owned = nfos.Vector(nfos.u8, p.capacity)
    nf.state.expired = nfos.Vector(nfos.u32, p.capacity)


def reply(pkt, *values):
    nf.emit(pkt.frame[:42] + struct.pack(f"!{len(values)}q", *values), "b")


@nf.orphan
def op(pkt):
    code, arg = struct.unpack("!Bi", pkt.payload[:5])
    a = nf.state.alloc
    if code == 1:
        i = a.allocate()
        if i is not None:
            if nf.state.owned[i]:
                raise AssertionError(f"index {i} allocated twice")
            nf.state.owned[i] = 1
        reply(pkt, -1 if i is None else i)
    elif code == 2:
        freed = a.free(arg)
        if freed:
            nf.state.owned[arg] = 0
        reply(pkt, int(freed))
    elif code == 3:
        reply(pkt, int(a.refresh(arg)))
    elif code == 4:
        left = a.lease_remaining(arg)
        reply(pkt, int(a.is_allocated(arg)), -1 if left is None else left)


@nf.exit
def report():
    used, free = nf.state.alloc.counts()
    reply_frame = b"\xff" * 12 + b"\x88\xb5" + struct.pack("!qq", used, free)
    nf.emit(reply_frame, "b")
