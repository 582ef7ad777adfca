"""The Maglev load balancer (examples/maglev.py), its trace generator and its plain peer.

* The lookup table: balance (each of N backends owns floor or ceil of M/N
  entries) and minimal disruption (removing one of N backends moves its
  entries and at most 0.5% of the others').
* Harness tests, sequential and with 2 workers: flow affinity and spread
  (every flow reaches exactly the backend the table names), a backend that
  stops its heartbeats (its flows move, others' do not; a new host re-using
  its slot does not inherit its flows; a lapsed lease is acted on before
  housekeeping reclaims it), heartbeats consumed, no backend -> drop,
  lan -> wan pass-through, non-VIP drops, ``rewrite_ip`` (exact bytes,
  valid checksums), concurrent backend joins on 2 workers (the table ends
  up exactly the Maglev table of all backends).
* ``gen_lb`` traces: deterministic, valid frames, heartbeat schedule.
* The plain peer (bench/peers/plain_maglev.py) gives exactly the sequential
  run's output on a gen_lb trace and on a mixed one (backend outage, a MAC
  change, a late backend, replies, non-VIP and odd frames).
"""

import collections
import functools
import importlib.util
import os
import struct

import pytest

import frames as F
from nfos.io.capture import Trace
from nfos.io.gen_lb import gen_lb
from nfos.runtime.replay import replay
from nfos.testing import Harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NF = os.path.join(ROOT, "examples", "maglev.py")
M = 65537
LB_MAC = "02:00:00:00:00:bb"
SECOND = 1_000_000_000
VIPS = (F.ip_int("118.0.0.1"), F.ip_int("118.0.0.2"))


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mg = load(NF, "maglev_example")
peer = load(os.path.join(ROOT, "bench", "peers", "plain_maglev.py"), "plain_maglev")


def backend_ip(k: int) -> int:
    return F.ip_int(f"10.0.0.{k}")


def backend_mac(k: int, host: int = 1) -> bytes:
    return F.mac(f"02:00:00:00:{host:02x}:{k:02x}")


def heartbeat(k: int, host: int = 1) -> bytes:
    return F.udp_frame(f"10.0.0.{k}", "10.0.0.254", 7777, 7777, eth_src=backend_mac(k, host), eth_dst=LB_MAC)


def client(i: int, vip: str = "118.0.0.1", flags: int = F.ACK) -> bytes:
    """The TCP frame of client flow i (a distinct 5-tuple per i)."""
    return F.tcp_frame(f"100.{i >> 8 & 255}.{i & 255}.7", vip, 1024 + i % 50_000, 80, flags=flags,
                       eth_src="02:00:00:00:00:01", eth_dst=LB_MAC)


@functools.cache
def table_of(backends: tuple[int, ...], m: int) -> tuple[list[int], bytes]:
    ips = sorted(backend_ip(k) for k in backends)
    return ips, mg.maglev_table(ips, m)


def owner(frame: bytes, backends: list[int], m: int = M) -> int:
    """The backend k (of 10.0.0.k) the table over ``backends`` gives the flow of ``frame``."""
    ips, table = table_of(tuple(backends), m)
    src, dst = struct.unpack_from("!II", frame, 26)
    sport, dport = struct.unpack_from("!HH", frame, 34)
    return ips[table[mg.flow_hash(src, dst, sport, dport, frame[23]) % m]] & 0xFF


def forwarded(frame: bytes, k: int, host: int = 1) -> bytes:
    """``frame`` as the balancer sends it to backend k (no IP rewrite)."""
    return backend_mac(k, host) + F.mac(LB_MAC) + frame[12:]


def backends_of(outputs) -> dict[bytes, set[int]]:
    """Flow (client IP, ports) -> the backends (last MAC byte) its frames went to."""
    seen: dict[bytes, set[int]] = collections.defaultdict(set)
    for dev, frame in outputs:
        assert dev == "lan"
        seen[frame[26:30] + frame[34:38]].add(frame[5])
    return seen


# ------------------------------------------------------------------ the table

@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_table_balance(n):
    ips = [backend_ip(k) for k in range(1, n + 1)]
    table = mg.maglev_table(ips, M)
    assert len(table) == M
    counts = collections.Counter(table)
    assert sorted(counts) == list(range(n))
    assert all(abs(c - M / n) <= 0.01 * M / n for c in counts.values())
    assert set(counts.values()) <= {M // n, -(-M // n)}   # round-robin filling: floor or ceil
    assert peer.maglev_table(ips, M) == table


def test_table_without_backends_is_empty():
    assert mg.maglev_table([], 7) == b"\xff" * 7


@pytest.mark.parametrize("n", [5, 10])
def test_minimal_disruption(n):
    ips = [backend_ip(k) for k in range(1, n + 1)]
    before = [ips[p] for p in mg.maglev_table(ips, M)]
    for gone in ips:
        rest = [ip for ip in ips if ip != gone]
        after = [rest[p] for p in mg.maglev_table(rest, M)]
        moved_others = sum(1 for b, a in zip(before, after, strict=True) if b != gone and a != b)
        # measured: at most 75 entries (0.11%) for n=5, 189 (0.29%) for n=10
        assert moved_others <= 0.005 * M
        # the removed backend's entries all move, spread over every remaining backend
        spread = collections.Counter(a for b, a in zip(before, after, strict=True) if b == gone)
        assert sorted(spread) == rest
        assert sum(spread.values()) == before.count(gone)


# ------------------------------------------------------------------ harness

@pytest.mark.parametrize("workers", [0, 2])
def test_flow_affinity_and_spread(workers):
    with Harness(NF, workers=workers) as h:
        for k in (1, 2, 3):
            assert h.send("lan", heartbeat(k)) == []   # consumed
        flows = range(400)
        out = h.send_many([("wan", client(i, "118.0.0.1" if i % 2 else "118.0.0.2")) for _ in range(4)
                           for i in flows])
        assert len(out) == 1600
        seen = backends_of(out)
        assert len(seen) == 400 and all(len(s) == 1 for s in seen.values())
        share = collections.Counter(next(iter(s)) for s in seen.values())
        assert sorted(share) == [1, 2, 3] and min(share.values()) >= 100
        want = collections.Counter()
        for i in flows:
            frame = client(i, "118.0.0.1" if i % 2 else "118.0.0.2")
            want[forwarded(frame, owner(frame, [1, 2, 3]))] += 4
        assert collections.Counter(f for _, f in out) == want
        st = h.stats()
        assert st["packet_sets_created"] == 400 and st["handler_errors"] == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_dead_backend_flows_move_and_new_host_does_not_inherit(workers):
    with Harness(NF, workers=workers) as h:
        for k in (1, 2, 3):
            h.send("lan", heartbeat(k))
        index3 = h.transact(lambda: h.nf.state.by_ip.get(backend_ip(3)))
        first = [client(i) for i in range(0, 300)]      # talk through the outage
        idle = [client(i) for i in range(300, 600)]     # silent until a new host arrives
        out = h.send_many([("wan", f) for f in first + idle])
        assert collections.Counter(out) == collections.Counter(
            ("lan", forwarded(f, owner(f, [1, 2, 3]))) for f in first + idle)
        for _ in range(9):                              # backend 3 stops; 1 and 2 go on
            h.advance(1)
            assert h.send_many([("lan", heartbeat(1)), ("lan", heartbeat(2))]) == []
        assert h.now == 9
        out = h.send_many([("wan", f) for f in first])  # 9 s: backend 3's lease still runs
        assert sorted(out) == sorted(("lan", forwarded(f, owner(f, [1, 2, 3]))) for f in first)

        h.advance(1)                                    # 10 s = backend_timeout: reclaimed
        assert h.transact(lambda: h.nf.state.by_ip.get(backend_ip(3))) is None
        out = h.send_many([("wan", f) for f in first])
        at10 = {}                                       # only backend 3's flows move
        for f in first:
            was = owner(f, [1, 2, 3])
            at10[f] = owner(f, [1, 2]) if was == 3 else was
        assert sorted(out) == sorted(("lan", forwarded(f, k)) for f, k in at10.items())
        assert sum(owner(f, [1, 2, 3]) == 3 for f in first) >= 50

        h.send("lan", heartbeat(4, host=2))             # a new host, maybe in backend 3's slot
        if workers == 0:
            assert h.transact(lambda: h.nf.state.by_ip.get(backend_ip(4))) == index3
        out = h.send_many([("wan", f) for f in first + idle])
        want = [("lan", forwarded(f, k)) for f, k in at10.items()]   # affinity
        for f in idle:
            was = owner(f, [1, 2, 3])
            if was == 3:                                # re-assigned through the new table
                k = owner(f, [1, 2, 4])
                want.append(("lan", forwarded(f, k, host=2 if k == 4 else 1)))
            else:
                want.append(("lan", forwarded(f, was)))
        assert sorted(out) == sorted(want)
        assert any(frame[5] == 4 for _, frame in out)


@pytest.mark.parametrize("workers", [0, 2])
def test_lapsed_backend_is_retired_before_housekeeping(workers):
    """Backend 3's lease ends at 10.3 s, housekeeping would come at 10.625 s: the first
    packet that would go to it at 10.4 s retires it and its flows move at once."""
    with Harness(NF, workers=workers) as h:
        h.send_many([("lan", heartbeat(1)), ("lan", heartbeat(2))])
        h.send("lan", heartbeat(3), time=0.3)
        flows = [client(i) for i in range(200)]
        h.send_many([("wan", f) for f in flows])
        h.advance(0.7)
        for _ in range(9):
            h.send_many([("lan", heartbeat(1)), ("lan", heartbeat(2))])
            h.advance(1)
        assert h.now == 10 and h.transact(lambda: h.nf.state.by_ip.get(backend_ip(3))) is not None
        out = h.send_many([("wan", f, 10.4) for f in flows])
        assert h.transact(lambda: h.nf.state.by_ip.get(backend_ip(3))) is None
        want = []
        for f in flows:
            was = owner(f, [1, 2, 3])
            want.append(("lan", forwarded(f, owner(f, [1, 2]) if was == 3 else was)))
        assert sorted(out) == sorted(want)
        assert sum(owner(f, [1, 2, 3]) == 3 for f in flows) >= 40


@pytest.mark.parametrize("workers", [0, 2])
def test_no_backend_heartbeat_and_passthrough(workers):
    with Harness(NF, workers=workers, params={"backend_timeout": "2s"}) as h:
        c = client(1)
        assert h.send("wan", c) == []                   # no backend alive: dropped
        assert h.stats()["packet_sets_created"] == 0
        assert h.send("lan", heartbeat(5)) == []        # consumed
        assert h.send("wan", c) == [("lan", forwarded(c, 5))]
        udp = F.udp_frame("100.0.0.9", "118.0.0.2", 5000, 53, b"q", eth_dst=LB_MAC)
        assert h.send("wan", udp) == [("lan", forwarded(udp, 5))]
        # backend -> client traffic, and any other lan frame, goes to wan unchanged
        reply = F.tcp_frame("118.0.0.1", "100.0.1.7", 80, 1025, flags=F.SYN | F.ACK)
        other_udp = F.udp_frame("10.0.0.5", "100.0.1.7", 7777, 7778)
        icmp = F.icmp_frame("10.0.0.5", "100.0.1.7")
        arp = F.arp_frame("10.0.0.5", "10.0.0.254")
        for frame in (reply, other_udp, icmp, arp):
            assert h.send("lan", frame) == [("wan", frame)]
        # from wan: non-VIP TCP/UDP, ICMP, ARP are dropped
        for frame in (F.tcp_frame("100.0.0.9", "118.0.0.3", 1234, 80),
                      F.udp_frame("100.0.0.9", "8.8.8.8", 1234, 53),
                      F.icmp_frame("100.0.0.9", "118.0.0.1"), F.arp_frame("100.0.0.9", "118.0.0.1")):
            assert h.send("wan", frame) == []
        h.advance(3)                                    # backend 5 timed out: nobody left
        assert h.send("wan", c) == []                   # an existing flow
        assert h.send("wan", client(2)) == []           # a new one
        assert h.send("lan", heartbeat(6)) == []
        assert h.send("wan", c) == [("lan", forwarded(c, 6))]
        st = h.stats()
        assert st["handler_errors"] == 0 and st["packets_out"] == {"wan": 4, "lan": 3}


@pytest.mark.parametrize("workers", [0, 2])
def test_rewrite_ip(workers):
    with Harness(NF, workers=workers, params={"rewrite_ip": "true", "mac": "02:00:00:00:00:cc"}) as h:
        h.send("lan", heartbeat(7))
        for i in range(20):
            tcp = F.tcp_frame(f"100.0.{i}.1", "118.0.0.2", 40000 + i, 80, seq=77 * i, ack=5, flags=F.PSH | F.ACK,
                              payload=b"GET / HTTP/1.0\r\n\r\n", eth_dst="02:00:00:00:00:cc")
            want = F.tcp_frame(f"100.0.{i}.1", "10.0.0.7", 40000 + i, 80, seq=77 * i, ack=5, flags=F.PSH | F.ACK,
                               payload=b"GET / HTTP/1.0\r\n\r\n", eth_src="02:00:00:00:00:cc",
                               eth_dst=backend_mac(7))
            out = h.send("wan", tcp)
            assert out == [("lan", want)]
            F.assert_checksums_valid(out[0][1])
            udp = F.udp_frame(f"100.0.{i}.1", "118.0.0.1", 40000 + i, 443, b"x" * i)
            want = F.udp_frame(f"100.0.{i}.1", "10.0.0.7", 40000 + i, 443, b"x" * i,
                               eth_src="02:00:00:00:00:cc", eth_dst=backend_mac(7))
            assert h.send("wan", udp) == [("lan", want)]
            F.assert_checksums_valid(want)


def test_concurrent_joins_leave_the_table_of_all_backends():
    """32 backends join while clients arrive, spread over 2 workers: concurrent rebuilds
    conflict and retry; the table ends up exactly the Maglev table of all 32."""
    with Harness(NF, workers=2) as h:
        out = h.send_many([("lan", heartbeat(k)) for k in range(1, 33)]
                          + [("wan", client(i)) for i in range(1000)])
        assert len(out) == 1000 and all(dev == "lan" for dev, _ in out)

        def snapshot():
            s = h.nf.state
            index = {s.backends[i].ip: i for i in range(32) if s.backends[i].alive}
            return index, b"".join(s.table[k].entries for k in range(len(s.table)))

        index, table = h.transact(snapshot)
        ips = sorted(index)
        assert ips == [backend_ip(k) for k in range(1, 33)]
        assert table[:M] == bytes(index[ips[p]] for p in mg.maglev_table(ips, M))
        assert h.stats()["handler_errors"] == 0


def test_params_are_checked():
    from nfos.runtime.session import LoadError
    for bad in ({"table_size": "65536"}, {"max_backends": "255"}, {"heartbeat_port": "0"}):
        with pytest.raises(LoadError), Harness(NF, params=bad):
            pass


# ------------------------------------------------------------------ gen_lb

def test_gen_lb_deterministic_and_valid():
    a = gen_lb(3000, 200, backends=4, rate=1000, seed=3)
    b = gen_lb(3000, 200, backends=4, rate=1000, seed=3)
    c = gen_lb(3000, 200, backends=4, rate=1000, seed=4)
    assert a.frames == b.frames and a.times_ns == b.times_ns and a.devs == b.devs
    assert a.frames != c.frames
    assert a.dev_names == ["wan", "lan"]
    assert a.times_ns[:2] == [SECOND, SECOND + 1_000_000]
    hb = [i for i, d in enumerate(a.devs) if d == 1]
    # a round of 4 at 0 s, 1 s, 2 s, 3 s (slots 0, 1000, 2000, 3000), while client packets follow
    assert hb == [s + j for s in (0, 1000, 2000, 3000) for j in range(4)]
    assert len(a) == 3000 + 16
    flows = collections.Counter()
    for frame, dev in zip(a.frames, a.devs, strict=True):
        assert len(frame) == 64 and frame[:6] == F.mac(LB_MAC)
        F.assert_checksums_valid(frame)
        if dev == 1:
            k = frame[29]
            assert frame[6:12] == backend_mac(k) and frame[26:30] == F.ip(f"10.0.0.{k}")
            assert frame[23] == 17 and struct.unpack_from("!HH", frame, 34) == (7777, 7777)
        else:
            assert frame[23] == 6 and frame[30:34] in (F.ip("118.0.0.1"), F.ip("118.0.0.2"))
            assert struct.unpack_from("!H", frame, 36)[0] == 80 and frame[26] != 10
            flows[frame[26:38]] += 1
    assert len(flows) == 200 and sum(flows.values()) == 3000
    assert max(flows.values()) > 5 * sorted(flows.values())[100]   # heavy tail


def test_gen_lb_flow_flags():
    t = gen_lb(2000, 100, seed=5)
    by_flow = collections.defaultdict(list)
    for frame, dev in zip(t.frames, t.devs, strict=True):
        if dev == 0:
            by_flow[frame[26:38]].append(frame[47])
    for flags in by_flow.values():
        assert flags[0] == F.SYN
        if len(flags) > 1:
            assert flags[-1] == F.FIN | F.ACK and set(flags[1:-1]) <= {F.ACK}


# ------------------------------------------------------------------ the plain peer

def mixed_lb_trace() -> Trace:
    """A gen_lb trace (30 s) with backend 3 silent from 6 s to 18 s, backend 2 replaced by
    another host (MAC) at 12 s, backend 5 joining at 20 s, replies and junk."""
    base = gen_lb(24_000, 2_000, backends=4, rate=800, seed=7)
    rows = []
    for i, (frame, dev, t) in enumerate(zip(base.frames, base.devs, base.times_ns, strict=True)):
        rel = t - SECOND
        if dev == 1:
            k = frame[29]
            if k == 3 and 5 * SECOND <= rel < 17 * SECOND:
                continue
            if k == 2 and rel >= 12 * SECOND:
                frame = frame[:10] + b"\x02\x02" + frame[12:]
            rows.append((t, dev, frame))
            if k == 4 and rel >= 20 * SECOND:
                rows.append((t, dev, frame[:11] + b"\x05" + frame[12:29] + b"\x05" + frame[30:]))
            continue
        rows.append((t, dev, frame))
        if i % 20 == 1:       # a reply from the backend side
            rows.append((t, 1, frame[6:12] + frame[:6] + frame[12:26] + frame[30:34] + frame[26:30]
                         + frame[36:38] + frame[34:36] + frame[38:]))
        elif i % 20 == 2:     # not to a VIP
            rows.append((t, 0, frame[:33] + b"\x09" + frame[34:]))
        elif i % 20 == 3:     # odd frames: VLAN tag, ICMP, runt, ARP
            odd = (frame[:12] + b"\x81\x00\x00\x07" + frame[12:], frame[:23] + b"\x01" + frame[24:],
                   frame[:20], frame[:12] + b"\x08\x06" + bytes(28))[i // 20 % 4]
            rows.append((t, i // 80 % 2, odd))
    return Trace(["wan", "lan"], [r[2] for r in rows], [r[0] for r in rows], [r[1] for r in rows], [])


@pytest.mark.parametrize("params,kwargs", [([], {}),
                                           (["rewrite_ip=true", "table_size=4099", "flow_expiry=5s"],
                                            {"rewrite_ip": True, "table_size": 4099, "flow_expiry": 5 * SECOND})])
def test_peer_equals_sequential_run(params, kwargs):
    for trace in (gen_lb(20_000, 1_500, rate=2000, seed=11), mixed_lb_trace()):
        seq = replay(NF, trace, workers=0, keep_output=True, params=params)
        assert seq.stats["handler_errors"] == 0 and seq.stats["table_full"] == 0
        got = peer.run(trace.frames, trace.devs, trace.times_ns, **kwargs)
        assert {d: sorted(v) for d, v in got.items()} == {d: sorted(v) for d, v in seq.outputs.items()}
        assert got == seq.outputs   # frame for frame, in order
        # a backend is alive throughout: every client frame to a VIP reaches one, every
        # lan frame but heartbeats (and malformed ones) goes to wan
        kinds = [peer.parse(f)[:4] + (d,) for f, d in zip(trace.frames, trace.devs, strict=True)]
        to_vip = sum(1 for k, p, _, dst, d in kinds if d == 0 and k == peer.L4 and dst in VIPS)
        beats = sum(1 for k, p, *_, d in kinds if d == 1 and k == peer.L4 and p == 17)
        lan_in = sum(1 for k, *_, d in kinds if d == 1 and k != peer.MALFORMED)
        assert (len(seq.outputs["lan"]), len(seq.outputs["wan"])) == (to_vip, lan_in - beats)
        assert to_vip >= 20_000
    moved = sum(len(s) > 1 for s in backends_of(("lan", f) for f in seq.outputs["lan"]).values())
    assert moved > 50   # the mixed trace moves flows (outage, new host)
