"""A Map, an Allocator and a Vector for structure tests (no traffic handlers)."""

import nfos

nf = nfos.NF("structs", devices=["a", "b"], params={"buckets": 16, "hash": "crc32c", "capacity": 8,
                                                    "lease": nfos.Duration(0), "refresh": nfos.Duration(0)})


class Key(nfos.Record):
    ip: nfos.ip4
    port: nfos.u16


class Val(nfos.Record):
    count: nfos.u64
    tag: nfos.i32


def forget(index):
    nf.state.expired[index] += 1


@nf.init
def setup(p):
    nf.state.m = nfos.Map(Key, Val, 64, buckets=p.buckets, hash=p.hash)
    nf.state.ints = nfos.Map(nfos.u32, nfos.i64, 64, buckets=p.buckets)
    nf.state.alloc = nfos.Allocator(p.capacity, lease=p.lease or None, refresh_interval=p.refresh,
                                    on_expire=forget)
    nf.state.expired = nfos.Vector(nfos.u32, p.capacity)
