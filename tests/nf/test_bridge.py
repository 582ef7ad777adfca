"""The MAC-learning bridge (examples/bridge.py): exact frames out, in every mode.

* Learning, forwarding, filtering, flooding (broadcast, multicast, unknown),
  moves, expiry, the lease refresh interval and a full table, with the
  Harness in sequential mode and with 2 workers.
* On a gen_bridge trace, workers 0, 1 and 2 give the same output multiset
  per device and learn the same table.
* The plain Python peer (bench/peers/plain_bridge.py) gives exactly the
  sequential run's output on a gen_bridge trace and on a random hand-made
  trace with moves, expiry, a full table, filtering and odd frames.
"""

from __future__ import annotations

import importlib.util
import os
import random

import pytest

from frames import arp_frame, mac, mac_int, tcp_frame, udp_frame
from nfos.io.capture import Trace
from nfos.io.gen_bridge import gen_bridge
from nfos.runtime.replay import replay
from nfos.testing import Harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BRIDGE = os.path.join(ROOT, "examples", "bridge.py")
SECOND = 1_000_000_000

A, B, C, D = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c", "02:00:00:00:00:0d"
IPS = {A: "10.0.0.10", B: "10.0.0.11", C: "10.0.0.12", D: "10.0.0.13"}
BROADCAST = "ff:ff:ff:ff:ff:ff"
MULTICAST = "01:00:5e:00:00:fb"
GROUP_IPS = {BROADCAST: "255.255.255.255", MULTICAST: "224.0.0.251"}

WORKERS = pytest.mark.parametrize("workers", [0, 2])


def fr(src: str, dst: str, tag: int = 0) -> bytes:
    """A UDP frame src -> dst (MACs); ``tag`` (the source port) tells frames apart."""
    return udp_frame(IPS.get(src, "10.0.0.99"), IPS.get(dst) or GROUP_IPS.get(dst, "10.0.0.98"),
                     sport=40000 + tag, dport=9, eth_src=src, eth_dst=dst)


def bridge(workers: int, **params) -> Harness:
    return Harness(BRIDGE, workers=workers, params=params)


def table(h: Harness) -> dict[str, int]:
    """The live entries: MAC (text) -> port."""
    st = h.nf.state

    def read():
        return {mac(k).hex(":"): v.port for k, v in st.table.items() if st.leases.is_allocated(v.idx)}

    return h.transact(read)


def lease_left(h: Harness, m: str) -> int | None:
    st = h.nf.state
    return h.transact(lambda: st.leases.lease_remaining(st.table[mac_int(m)].idx))


# ------------------------------------------------------------------ semantics

@WORKERS
def test_two_ports_default(workers):
    ab, ba = fr(A, B), fr(B, A)
    with bridge(workers) as h:
        assert h.nf.devices == ("p0", "p1")
        assert h.send("p0", ab) == [("p1", ab)]   # B unknown: flooded to the one other port
        assert h.send("p1", ba) == [("p0", ba)]   # A learned on p0
        assert h.send("p0", ab) == [("p1", ab)]
        assert table(h) == {A: 0, B: 1}
        assert h.send("p1", fr(A, B, 1)) == []    # A moved to p1, where B is: filtered
        assert table(h) == {A: 1, B: 1}
        assert h.stats()["handler_errors"] == 0


@WORKERS
def test_learn_forward_filter_three_ports(workers):
    ab, ba, cb, ca = fr(A, B), fr(B, A), fr(C, B), fr(C, A)
    with bridge(workers, ports=3) as h:
        assert h.nf.devices == ("p0", "p1", "p2")
        assert h.send("p0", ab) == [("p1", ab), ("p2", ab)]   # learn A; B unknown: flood
        assert table(h) == {A: 0}
        assert h.send("p1", ba) == [("p0", ba)]               # learn B; A known on p0
        assert h.send("p0", ab) == [("p1", ab)]               # forward: only to B's port
        assert h.send("p2", cb) == [("p1", cb)]
        assert table(h) == {A: 0, B: 1, C: 2}
        # filter: D sits on p0 with A; A -> D and D -> A never leave p0
        da, ad = fr(D, A), fr(A, D)
        assert h.send("p0", da) == []
        assert h.send("p0", ad) == []
        assert h.send("p2", ca) == [("p0", ca)]
        s = h.stats()
        assert s["dropped"] == 2 and s["handler_errors"] == 0


@WORKERS
def test_broadcast_and_multicast_flood(workers):
    with bridge(workers, ports=3) as h:
        h.send_many([("p0", fr(A, B)), ("p1", fr(B, A))])
        assert table(h) == {A: 0, B: 1}
        for dst in (BROADCAST, MULTICAST):
            f = fr(A, dst)
            assert h.send("p0", f) == [("p1", f), ("p2", f)]
            f = fr(B, dst)
            assert h.send("p1", f) == [("p0", f), ("p2", f)]
        arp = arp_frame("10.0.0.12", "10.0.0.10", eth_src=C)
        assert h.send("p2", arp) == [("p0", arp), ("p1", arp)]
        assert table(h) == {A: 0, B: 1, C: 2}
        # a group source is never learned: frames to it keep flooding
        g = fr(MULTICAST, A)
        assert h.send("p1", g) == [("p0", g)]
        assert table(h) == {A: 0, B: 1, C: 2}
        f = fr(C, MULTICAST)
        assert h.send("p2", f) == [("p0", f), ("p1", f)]


@WORKERS
def test_move(workers):
    ca = fr(C, A)
    with bridge(workers, ports=3) as h:
        h.send("p0", fr(A, B))
        assert h.send("p2", ca) == [("p0", ca)]
        assert h.send("p1", fr(A, C)) == [("p2", fr(A, C))]   # A moved to p1 (C known on p2)
        assert table(h) == {A: 1, C: 2}
        assert h.send("p2", ca) == [("p1", ca)]               # traffic to A follows it
        assert h.send("p1", ca) == []                         # now on A's port: filtered
        assert table(h) == {A: 1, C: 1}                       # ... and C moved to p1


@WORKERS
def test_expiry(workers):
    ab = fr(A, B)
    with bridge(workers, ports=3, validity="10s", refresh_interval="5s") as h:
        h.send("p1", fr(B, A), time=1.0)                      # B learned at 1 s: lives until 11 s
        assert h.send("p0", ab, time=10.999) == [("p1", ab)]
        assert lease_left(h, B) == 1_000_000
        h.advance(0.001)                                      # 11 s: B's lease is over
        assert h.send("p0", ab) == [("p1", ab), ("p2", ab)]   # floods again (A is still known)
        assert table(h) == {A: 0}
        h.advance(12)   # past A's lease and the reclaim interval: both entries are gone
        assert h.transact(lambda: len(h.nf.state.table.items())) == 0
        assert h.transact(lambda: h.nf.state.leases.counts()) == (0, 65536)
        ba = fr(B, A)
        assert h.send("p2", ba) == [("p0", ba), ("p1", ba)]   # relearned, now on p2
        assert table(h) == {B: 2}
        assert h.stats()["handler_errors"] == 0


@WORKERS
@pytest.mark.parametrize("refresh", ["60s", "0s"])
def test_refresh_interval(workers, refresh):
    """validity 120 s.  With a 60 s refresh interval a frame renews the lease only if
    the last renewal is >= 60 s old; with 0 every frame renews it."""
    ab = fr(A, B)
    flood, forward = [("p1", ab), ("p2", ab)], [("p1", ab)]
    with bridge(workers, ports=3, refresh_interval=refresh) as h:
        h.send("p1", fr(B, A, 1), time=0)                     # learned: lease until 120 s
        h.send("p1", fr(B, A, 2), time=50)                    # a renewal is due only with 0
        assert lease_left(h, B) == (70 if refresh == "60s" else 120) * SECOND
        assert h.send("p0", ab, time=119.5) == forward
        assert h.send("p0", ab, time=120) == (flood if refresh == "60s" else forward)
        assert h.send("p0", ab, time=169.999) == (flood if refresh == "60s" else forward)
        assert h.send("p0", ab, time=170) == flood
        # learned again at 200 s; 261 s is 61 s after the last renewal: renewed in both modes
        h.send("p1", fr(B, A, 3), time=200)
        h.send("p1", fr(B, A, 4), time=230)
        h.send("p1", fr(B, A, 5), time=261)
        assert lease_left(h, B) == 120 * SECOND
        assert h.send("p0", ab, time=380.999) == forward
        assert h.send("p0", ab, time=381) == flood
        assert h.stats()["handler_errors"] == 0


@WORKERS
def test_table_full(workers):
    with bridge(workers, ports=3, capacity=2, validity="10s", refresh_interval="1s") as h:
        h.send_many([("p0", fr(A, B)), ("p1", fr(B, A))])
        assert table(h) == {A: 0, B: 1}
        ca = fr(C, A)
        assert h.send("p2", ca) == [("p0", ca)]               # forwarded, C not learned
        assert table(h) == {A: 0, B: 1}
        ac = fr(A, C)
        assert h.send("p0", ac) == [("p1", ac), ("p2", ac)]   # so traffic to C floods
        assert h.transact(lambda: h.nf.state.leases.counts()) == (2, 0)
        h.advance(12)                                         # A and B expire and are reclaimed
        assert h.send("p2", ca) == [("p0", ca), ("p1", ca)]
        assert h.send("p0", ac) == [("p2", ac)]               # C learned now
        assert table(h) == {A: 0, C: 2}
        assert h.stats()["handler_errors"] == 0


def test_bad_params():
    with pytest.raises(Exception, match="refresh_interval"):
        with bridge(0, validity="10s", refresh_interval="10s"):
            pass
    with pytest.raises(Exception, match="ports"):
        with bridge(0, ports=1):
            pass


# ------------------------------------------------------------------ generated trace

@pytest.fixture(scope="module")
def trace() -> Trace:
    return gen_bridge(6000, macs=200, flow_packets=400, seed=5)


def hosts(trace: Trace) -> dict[str, int]:
    """Every source MAC of the trace -> the port it arrives on."""
    return {f[6:12].hex(":"): d for f, d in zip(trace.frames, trace.devs, strict=True)}


def test_gen_bridge_trace_shape(trace):
    assert len(trace) == 6000 and trace.dev_names == ["p0", "p1"]
    where = hosts(trace)
    assert len(where) == 200 and sorted(where.values()).count(0) == 100
    assert all(f[:6] == b"\xff" * 6 and f[12:14] == b"\x08\x06" for f in trace.frames[:200])
    for f, d in zip(trace.frames[200:], trace.devs[200:], strict=True):   # flows cross ports
        assert where[f[:6].hex(":")] != d and len(f) == 64
    again = gen_bridge(6000, macs=200, flow_packets=400, seed=5)
    assert again.frames == trace.frames and again.devs == trace.devs and again.times_ns == trace.times_ns


def peer():
    spec = importlib.util.spec_from_file_location("plain_bridge", os.path.join(ROOT, "bench", "peers", "plain_bridge.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("refresh", ["60s", "0s"])
def test_modes_and_peer_agree_on_gen_trace(trace, refresh):
    params = [f"refresh_interval={refresh}"]
    runs = {w: replay(BRIDGE, trace, workers=w, keep_output=True, params=params) for w in (0, 1, 2)}
    seq = runs[0].outputs
    assert len(seq["p0"]) + len(seq["p1"]) == len(trace)   # 2 ports, cross-port flows: all pass
    for w, r in runs.items():
        assert r.stats["handler_errors"] == 0
        assert {d: sorted(v) for d, v in r.outputs.items()} == {d: sorted(v) for d, v in seq.items()}, w
    kw = {"refresh_interval": 0} if refresh == "0s" else {}
    assert peer().run(trace.frames, trace.devs, trace.times_ns, **kw) == seq


def test_workers_learn_the_same_table(trace):
    want = hosts(trace)
    items = [(trace.dev_names[d], f) for f, d in zip(trace.frames, trace.devs, strict=True)]
    for workers in (0, 1, 2):
        with bridge(workers) as h:
            h.send_many(items)
            assert table(h) == want, workers


# ------------------------------------------------------------------ the peer, exactly

def hand_trace(seed: int, n: int = 3000) -> Trace:
    """6 hosts on 3 ports that move now and then, idle gaps past the validity,
    group destinations and sources, filtered traffic and odd frames."""
    rng = random.Random(seed)
    macs = [f"02:00:00:00:01:{i:02x}" for i in range(6)]
    port = [i % 3 for i in range(6)]
    frames, devs, times = [], [], []
    t = SECOND
    for i in range(n):
        t += rng.choice([1, 50_000_000, 300_000_000, 1_200_000_000]) if rng.random() < 0.3 else 1000
        if rng.random() < 0.02:
            port[rng.randrange(6)] = rng.randrange(3)   # a host moves
        s = rng.randrange(6)
        r = rng.random()
        dst = BROADCAST if r < 0.05 else MULTICAST if r < 0.08 else macs[rng.randrange(6)]
        src = MULTICAST if rng.random() < 0.02 else macs[s]
        f = udp_frame(f"10.1.0.{s}", f"10.1.0.{rng.randrange(6)}", 1000 + i % 50000, 9, eth_src=src, eth_dst=dst)
        r = rng.random()
        if r < 0.02:
            f = arp_frame(eth_src=src, eth_dst=dst)
        elif r < 0.03:
            f = f[:12] + b"\x81\x00\x00\x05" + f[12:]            # 802.1Q tag
        elif r < 0.04:
            f = f[:16] + b"\x01\x00" + f[18:]                    # IP length beyond the frame: malformed
        elif r < 0.05:
            f = f[:13]                                            # runt: malformed
        elif r < 0.06:
            f = f[:16] + b"\x00\x1a" + f[18:]                    # UDP datagram cut short: malformed
        elif r < 0.07:
            f = f[:20] + b"\x20\x00" + f[22:]                    # a first fragment: not checked, passes
        elif r < 0.09:
            f = tcp_frame(f"10.1.0.{s}", "10.1.0.9", eth_src=src, eth_dst=dst)
            if r < 0.08:
                f = f[:46] + b"\x40" + f[47:]                      # TCP data offset 16: malformed
        frames.append(f)
        devs.append(port[s])
        times.append(t)
    return Trace(["p0", "p1", "p2"], frames, times, devs, [])


@pytest.mark.parametrize("seed,params", [
    (1, {"ports": 3, "capacity": 4, "validity": SECOND, "refresh_interval": 300_000_000}),
    (2, {"ports": 3, "capacity": 4, "validity": SECOND, "refresh_interval": 0}),
    (3, {"ports": 3, "capacity": 64, "validity": 2 * SECOND, "refresh_interval": SECOND}),
    (4, {"ports": 3, "capacity": 3, "validity": 0, "refresh_interval": 0}),
])
def test_peer_matches_sequential_on_hand_trace(seed, params):
    trace = hand_trace(seed)
    given = [f"{k}={v}ns" if k in ("validity", "refresh_interval") else f"{k}={v}" for k, v in params.items()]
    r = replay(BRIDGE, trace, workers=0, keep_output=True, params=given)
    assert r.stats["handler_errors"] == 0 and r.stats["malformed"] > 0
    plain = peer()
    out = plain.run(trace.frames, trace.devs, trace.times_ns, **params)
    assert out == r.outputs
    # the trace exercises the table limit and the expiry
    unbounded = plain.run(trace.frames, trace.devs, trace.times_ns, **{**params, "capacity": 1000})
    forever = plain.run(trace.frames, trace.devs, trace.times_ns, **{**params, "validity": 0, "refresh_interval": 0})
    assert (unbounded != out) == (params["capacity"] < 6)
    assert (forever != out) == (params["validity"] > 0)
    assert 0 < r.stats["dropped"] - r.stats["malformed"]   # some frames were filtered
