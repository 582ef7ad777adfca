"""Structures for the read-path microbenchmark (bench/micro_reads.py); handles no packets.

``n`` keys 0..n-1 are present in both maps (the record map's values have fields a, b, c);
the vectors hold ``n`` elements; the DistributedObj and the Counter have been updated once.
"""

import nfos

nf = nfos.NF("reads", devices=["lan", "wan"], params={"n": nfos.param(int, 4096, "keys / elements")})


class Rec(nfos.Record):
    a: nfos.u32
    b: nfos.u64
    c: nfos.u16


@nf.init
def setup(p):
    st = nf.state
    st.m_scalar = nfos.Map(nfos.u64, nfos.u64, 4 * p.n)
    st.m_rec = nfos.Map(nfos.u64, Rec, 4 * p.n)
    st.v_scalar = nfos.Vector(nfos.u64, p.n)
    st.v_rec = nfos.Vector(Rec, p.n)
    st.dobj = nfos.DistributedObj(Rec, max_staleness=0)
    st.dobj_cached = nfos.DistributedObj(Rec, max_staleness=nfos.seconds(3600))
    st.counter = nfos.Counter(max_staleness=0)
    for k in range(p.n):
        st.m_scalar.set(k, k + 1)
        st.m_rec.set(k, Rec(a=k, b=2 * k, c=7))
        st.v_scalar[k] = k
        st.v_rec[k] = Rec(a=k, b=k, c=1)
    st.dobj.update().a = 1
    st.dobj_cached.update().a = 1
    st.counter.add(3)


@nf.orphan
def drop(pkt):
    pass
