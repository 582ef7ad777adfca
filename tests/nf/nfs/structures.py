"""Test NF: Vectors and records, driven by the payload of UDP packets.

State: ``counts`` = Vector(u32, 4); ``recs`` = Vector(Rec, 3) of a record with
u8/u32/u64/Bytes(6)/bool fields.  A UDP packet's payload is one command,
``struct.pack("!cbQ", op, index, value)``:

``i`` counts[index] += value        ``s`` counts[index] = value
``r`` recs[index]: a = value & 0xff, b = value, c = value * 3, d = b"mac" + index, e = True
``g`` emit on wan: repr((counts[index], recs[index % 3].as_dict()))  (reads; index may be bad)
``o`` recs[index].a = value   (a u8: 256 overflows)
``c`` recs[index] = recs[(index + 1) % 3]   (copy a whole record)
Every packet of a command that succeeds is sent on wan.
"""

import struct

import nfos

nf = nfos.NF("structures", devices=["lan", "wan"])

COMMAND = struct.Struct("!cbQ")


class Base(nfos.Record):
    a: nfos.u8
    b: nfos.u32


class Rec(Base):
    c: nfos.u64
    d: nfos.Bytes(6)
    e: bool


@nf.init
def setup(p):
    nf.state.counts = nfos.Vector(nfos.u32, 4)
    nf.state.recs = nfos.Vector(Rec, 3)
    nf.state.recs[1].b = 7   # init runs in a transaction too


@nf.orphan
def command(pkt):
    op, i, v = COMMAND.unpack_from(pkt.payload)
    counts, recs = nf.state.counts, nf.state.recs
    if op == b"i":
        counts[i] = counts[i] + v
    elif op == b"s":
        counts[i] = v
    elif op == b"r":
        r = recs[i]
        r.a = v & 0xFF
        r.b = v
        r.c = v * 3
        r.d = b"mac" + bytes([i])
        r.e = True
    elif op == b"g":
        nf.emit(repr((counts[i], recs[i % 3].as_dict())).encode(), "wan")
    elif op == b"o":
        recs[i].a = v
    elif op == b"c":
        recs[i] = recs[(i + 1) % 3]
    pkt.send("wan")
