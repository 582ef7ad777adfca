"""Structures and one accessor function per conflict cause, at fixed lines, for the profiler tests."""

import nfos

nf = nfos.NF("profiled", devices=["a", "b"], params={"staleness": nfos.Duration(0), "buckets": 8})


class Counter(nfos.Record):
    n: nfos.i64


class Entry(nfos.Record):
    count: nfos.u64


@nf.init
def setup(p):
    nf.state.vec = nfos.Vector(nfos.i64, 8)
    nf.state.other = nfos.Vector(nfos.i64, 1)
    nf.state.counters = nfos.DistributedObj(Counter, max_staleness=p.staleness)
    nf.state.table = nfos.Map(nfos.u32, Entry, 64, buckets=p.buckets)
    nf.state.pool = nfos.Allocator(8)
    nf.state.leases = nfos.Allocator(8, lease=nfos.seconds(100), refresh_interval=0)


def vec_bump(i):
    nf.state.vec[i] += 1                     # line 27


def merge_and_write():
    nf.state.counters.read()                 # line 31
    nf.state.other[0] = 1


def update():
    nf.state.counters.update().n += 1        # line 36


def map_set(k):
    nf.state.table.set(k).count += 1         # line 40


def allocate():
    return nf.state.pool.allocate()          # line 44


def lease():
    return nf.state.leases.allocate()


def refresh(i):
    nf.state.leases.refresh(i)               # line 52
