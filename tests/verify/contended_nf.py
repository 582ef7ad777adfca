"""Test NF for nfos verify: every packet updates one shared hash chain (order matters: swapping
two transactions changes it), a Map of per-source counts, a Counter, and writes the chain's low
byte into its TTL; sessions expire after 2 ms into the chain too; a periodic handler folds the
Map into the chain.  Every packet conflicts with every other on the chain; with force=N, the packets of one
session in N are aborted 9 times each (so their batches split and they run irrevocably)."""

import nfos

nf = nfos.NF("contended", devices=["lan", "wan"],
             params={"force": nfos.param(int, 0, "abort every Nth session's packets 9 times (0: never)")})


class Tally:
    """How often each packet was aborted: this process's, never rolled back (on purpose)."""

    def __init__(self):
        self.seen = {}

    def bump(self, key):
        self.seen[key] = self.seen.get(key, 0) + 1
        return self.seen[key]


ATTEMPTS = Tally()


class Count(nfos.Record):
    n: nfos.u32


@nf.init
def setup(p):
    nf.packet_sets(
        nfos.on("lan", ipv4=("src", "dst"), l4=("sport", "dport")),
        nfos.on("wan", ipv4=("dst", "src"), l4=("dport", "sport")),
        protocols=("tcp", "udp"), state=Count, expiry=nfos.millis(2))
    st = nf.state
    st.chain = nfos.Vector(nfos.i64, 1)
    st.per_src = nfos.Map(nfos.u32, nfos.i64, 4096)
    st.total = nfos.Counter()


def mix(x):
    st = nf.state
    st.chain[0] = (st.chain[0] * 1000003 + x) & 0x7FFFFFFFFFFFFFFF
    return st.chain[0]


def count(pkt, s):
    st = nf.state
    s.n += 1
    force = nf.params.force
    if force and (pkt.ip.src + pkt.ip.dst) % force == 0:   # forced aborts: retries, splits, irrevocable
        if ATTEMPTS.bump((pkt.ip.src, pkt.ip.dst, s.n, nfos.now())) <= 9:
            raise nfos.TransactionAborted("forced")
    src = pkt.ip.src & 0xFFFFFFFF
    st.per_src[src] = (st.per_src.get(src) or 0) + 1
    st.total.add(1)
    pkt.ip.ttl = mix(src + s.n) & 0xFF
    pkt.send(1 - pkt.dev_index)


@nf.new_packet_set
def first(pkt):
    count(pkt, nf.register(pkt))


nf.packet(count)


@nf.expired
def gone(s):
    mix(s.n)


@nf.orphan
def other(pkt):
    mix(7)
    pkt.send(1 - pkt.dev_index)


@nf.periodic(nfos.millis(1))
def fold():
    st = nf.state
    mix(len(st.per_src) + st.total.value())
