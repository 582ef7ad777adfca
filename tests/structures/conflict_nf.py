"""A Vector and a DistributedObj for conflict-granularity tests."""

import nfos

nf = nfos.NF("conflicts", devices=["a", "b"], params={"staleness": nfos.Duration(0)})


class Counter(nfos.Record):
    n: nfos.i64


@nf.init
def setup(p):
    nf.state.vec = nfos.Vector(nfos.i64, 8)
    nf.state.other = nfos.Vector(nfos.i64, 1)
    nf.state.counters = nfos.DistributedObj(Counter, max_staleness=p.staleness)
