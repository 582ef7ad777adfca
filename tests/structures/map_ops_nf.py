"""Executes the Map operation carried by each UDP packet; replies with the result."""

import struct

import nfos

nf = nfos.NF("mapops", devices=["a", "b"])


@nf.init
def setup(p):
    nf.state.m = nfos.Map(nfos.u32, nfos.i64, 128, buckets=8)


@nf.orphan
def op(pkt):
    code, key, value = struct.unpack("!BIq", pkt.payload[:13])
    m = nf.state.m
    if code == 1:
        m[key] = value
        return
    if code == 2:
        v = m.get(key)
        reply = struct.pack("!Bq", 0, 0) if v is None else struct.pack("!Bq", 1, v)
    else:
        reply = struct.pack("!Bq", 3 if m.delete(key) else 2, 0)
    nf.emit(pkt.frame[:42] + reply, "b")
