"""examples/nat.py: endpoint-independent mapping, filtering, timeouts, exhaustion, ARP, the plain peer.

Frames are built with ``frames`` (checksums computed from scratch), so an
output equal to a freshly built frame proves the NAT's incremental checksum
updates; translated frames are also verified with ``assert_checksums_valid``.
Harness tests run sequentially and with 2 workers.  With workers, each worker
allocates from its own part of the index space (the Allocator splits it in
contiguous chunks), so those tests read the external port from the output
instead of predicting it; sequentially the first index is 0 (port 1024).
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct

import pytest

from frames import (
    ACK,
    ETH_ARP,
    ETH_VLAN,
    MAC_A,
    MAC_B,
    PROTO_TCP,
    PROTO_UDP,
    SYN,
    arp_frame,
    assert_checksums_valid,
    checksum,
    icmp_frame,
    ip,
    ip_int,
    l3_offset,
    l4_checksum,
    mac,
    tcp_frame,
    udp_frame,
)
from nfos.io import gen_caida
from nfos.io.capture import Trace
from nfos.runtime.replay import replay
from nfos.testing import Harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAT = os.path.join(ROOT, "examples", "nat.py")
PUBLIC = "198.51.100.1"
NAT_MAC = "02:00:00:00:00:aa"
SECOND = 1_000_000_000

HOST = "10.0.0.5"
REMOTES = [("203.0.113.9", 53), ("203.0.113.10", 53), ("192.0.2.44", 5353)]

WORKERS = pytest.mark.parametrize("workers", [0, 2])


def peer():
    spec = importlib.util.spec_from_file_location("plain_nat", os.path.join(ROOT, "bench", "peers", "plain_nat.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def public(k: int = 0) -> str:
    """The k-th public address as text."""
    return ".".join(str(b) for b in ip(ip_int(PUBLIC) + k))


def source_of(frame: bytes) -> tuple[str, int]:
    """(source address, source port) of a TCP/UDP frame."""
    l3 = l3_offset(frame)
    l4 = l3 + (frame[l3] & 15) * 4
    return ".".join(map(str, frame[l3 + 12:l3 + 16])), struct.unpack_from("!H", frame, l4)[0]


def exhausted(h: Harness) -> dict[str, int]:
    return h.transact(lambda: h.nf.state.exhausted.read().as_dict())


def out_one(h: Harness, dev: str, frame: bytes, out_dev: str, time: float | None = None) -> bytes:
    out = h.send(dev, frame, time)
    assert len(out) == 1 and out[0][0] == out_dev, out
    assert_checksums_valid(out[0][1])
    return out[0][1]


# ------------------------------------------------------------------ mapping

@WORKERS
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_lan_endpoint_keeps_its_public_endpoint(workers, proto):
    def frame(src, dst, sport, dport):
        if proto == "udp":
            return udp_frame(src, dst, sport, dport, b"query", ident=7, ttl=33)
        return tcp_frame(src, dst, sport, dport, seq=1000, ack=77, flags=SYN, ident=7, ttl=33,
                         options=b"\x02\x04\x05\xb4", payload=b"hello")

    with Harness(NAT, workers=workers, params={"public_ips": 2}) as h:
        seen = set()
        for remote, rport in REMOTES + REMOTES[:1]:   # three remotes, then the first again
            got = out_one(h, "lan", frame(HOST, remote, 40000, rport), "wan")
            src, sport = source_of(got)
            assert got == frame(src, remote, sport, rport)   # only the source changed
            seen.add((src, sport))
        assert len(seen) == 1
        src, sport = seen.pop()
        assert src in (public(0), public(1)) and 1024 <= sport <= 65535
        if workers == 0:
            assert (src, sport) == (public(0), 1024)   # the allocator's first index
        # another port of the same host is another endpoint: another mapping
        other = source_of(out_one(h, "lan", frame(HOST, REMOTES[0][0], 40001, 53), "wan"))
        assert other != (src, sport)


@WORKERS
def test_replies_reach_the_internal_endpoint(workers):
    hosts = [("10.0.0.5", 40000, "udp"), ("10.0.0.6", 40000, "udp"), ("10.0.0.5", 40000, "tcp"),
             ("10.1.2.3", 1234, "tcp"), ("10.0.0.7", 999, "udp-nocsum")]
    with Harness(NAT, workers=workers, params={"public_ips": 1}) as h:
        mapped = {}
        for host, port, kind in hosts:
            if kind == "tcp":
                f = tcp_frame(host, "203.0.113.9", port, 443, seq=5, flags=SYN)
            else:
                f = udp_frame(host, "203.0.113.9", port, 53, b"q", with_checksum=kind == "udp")
            mapped[host, port, kind] = source_of(out_one(h, "lan", f, "wan"))
        # no two endpoints share an external endpoint (TCP and UDP ports are separate spaces)
        assert len({(v, k[2] == "tcp") for k, v in mapped.items()}) == len(hosts)
        for (host, port, kind), (pub, pport) in mapped.items():
            assert pub == PUBLIC
            if kind == "tcp":
                reply = tcp_frame("203.0.113.9", pub, 443, pport, seq=900, ack=6, flags=SYN | ACK,
                                  payload=b"x" * 100, ident=4242, tos=0x10, eth_src=MAC_B, eth_dst=MAC_A)
                want = tcp_frame("203.0.113.9", host, 443, port, seq=900, ack=6, flags=SYN | ACK,
                                 payload=b"x" * 100, ident=4242, tos=0x10, eth_src=MAC_B, eth_dst=MAC_A)
            else:
                csum = kind == "udp"
                reply = udp_frame("203.0.113.9", pub, 53, pport, b"answer!", with_checksum=csum, df=True,
                                  eth_src=MAC_B, eth_dst=MAC_A)
                want = udp_frame("203.0.113.9", host, 53, port, b"answer!", with_checksum=csum, df=True,
                                 eth_src=MAC_B, eth_dst=MAC_A)
            assert out_one(h, "wan", reply, "lan") == want
        assert h.stats()["handler_errors"] == 0


@WORKERS
def test_unsolicited_and_foreign_traffic_is_dropped(workers):
    with Harness(NAT, workers=workers, params={"public_ips": 2, "ports_per_ip": 100}) as h:
        pub, pport = source_of(out_one(h, "lan", udp_frame(HOST, "203.0.113.9", 40000, 53), "wan"))
        assert h.send("wan", udp_frame("203.0.113.9", pub, 53, pport + 1)) == []     # unmapped port
        assert h.send("wan", tcp_frame("203.0.113.9", pub, 53, pport)) == []         # other protocol
        assert h.send("wan", udp_frame("203.0.113.9", public(2), 53, 1024)) == []    # not ours
        assert h.send("wan", udp_frame("203.0.113.9", "10.0.0.5", 53, 40000)) == []  # the internal one
        assert h.send("wan", udp_frame("203.0.113.9", PUBLIC, 53, 80)) == []         # below 1024
        assert h.send("wan", udp_frame("203.0.113.9", PUBLIC, 53, 1124)) == []       # beyond ports_per_ip
        assert h.send("wan", tcp_frame("203.0.113.9", PUBLIC, 53, 1024, flags=SYN)) == []   # unsolicited SYN
        # ICMP but echo out and errors (a timestamp request out, an echo request in), fragments, other
        # protocols and non-IP frames, either way
        frag = udp_frame(HOST, "203.0.113.9", 40000, 53, mf=True)
        for dev, f in [("lan", icmp_frame(HOST, "203.0.113.9", 13)), ("wan", icmp_frame("203.0.113.9", pub)),
                       ("lan", frag), ("lan", udp_frame(HOST, "203.0.113.9", 40000, 53, frag_offset=64)),
                       ("lan", bytes(udp_frame(HOST, "203.0.113.9")[:12]) + b"\x86\xdd" + bytes(46))]:
            assert h.send(dev, f) == []
        # the mapping still works
        assert out_one(h, "wan", udp_frame("203.0.113.9", pub, 53, pport), "lan") == \
            udp_frame("203.0.113.9", HOST, 53, 40000)


# ------------------------------------------------------------------ filtering

@WORKERS
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_endpoint_independent_filtering(workers, proto):
    build = udp_frame if proto == "udp" else tcp_frame
    with Harness(NAT, workers=workers, params={"public_ips": 1}) as h:
        pub, pport = source_of(out_one(h, "lan", build(HOST, "203.0.113.9", 40000, 53), "wan"))
        for remote, rport in [("203.0.113.9", 53), ("203.0.113.9", 9999), ("198.18.0.1", 80)]:
            assert out_one(h, "wan", build(remote, pub, rport, pport), "lan") == \
                build(remote, HOST, rport, 40000)


@WORKERS
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_address_dependent_filtering(workers, proto):
    build = udp_frame if proto == "udp" else tcp_frame
    with Harness(NAT, workers=workers, params={"public_ips": 1, "filtering": "address"}) as h:
        pub, pport = source_of(out_one(h, "lan", build(HOST, "203.0.113.9", 40000, 53), "wan"))
        assert h.send("wan", build("198.18.0.1", pub, 80, pport)) == []   # never contacted
        for rport in (53, 9999):   # the contacted address, from any port
            assert out_one(h, "wan", build("203.0.113.9", pub, rport, pport), "lan") == \
                build("203.0.113.9", HOST, rport, 40000)
        # once the endpoint has sent to it, the other host gets through too, on the same mapping
        assert source_of(out_one(h, "lan", build(HOST, "198.18.0.1", 40000, 80), "wan")) == (pub, pport)
        assert out_one(h, "wan", build("198.18.0.1", pub, 80, pport), "lan") == build("198.18.0.1", HOST, 80, 40000)
        # a permit belongs to the mapping: another internal endpoint's mapping is still closed
        pub2, pport2 = source_of(out_one(h, "lan", build("10.0.0.6", "203.0.113.9", 40000, 53), "wan"))
        assert h.send("wan", build("198.18.0.1", pub2, 80, pport2)) == []
        assert h.stats()["handler_errors"] == 0


# ------------------------------------------------------------------ timeouts

@WORKERS
def test_udp_mapping_expires_after_udp_timeout(workers):
    params = {"public_ips": 1, "udp_timeout": "10s", "tcp_timeout": "30s", "refresh_interval": "1s"}
    out = udp_frame(HOST, "203.0.113.9", 40000, 53)
    with Harness(NAT, workers=workers, params=params) as h:
        pub, pport = source_of(out_one(h, "lan", out, "wan", time=1.0))
        reply = udp_frame("203.0.113.9", pub, 53, pport)
        want = udp_frame("203.0.113.9", HOST, 53, 40000)
        assert out_one(h, "wan", reply, "lan", time=10.9) == want   # inbound: no refresh
        assert h.send("wan", reply, time=11.0) == []                 # 10 s after the last outbound
        # a new mapping: sequentially the expired index was reclaimed at t=11 and is reused; with
        # workers leases are reclaimed by the control process (at advance) or by a dry pool
        pub, pport = source_of(out_one(h, "lan", out, "wan", time=12.0))
        if workers == 0:
            assert (pub, pport) == (PUBLIC, 1024)
        reply = udp_frame("203.0.113.9", pub, 53, pport)
        assert source_of(out_one(h, "lan", out, "wan", time=20.0)) == (pub, pport)   # a refresh
        h.advance(9.9)
        assert out_one(h, "wan", reply, "lan") == want
        h.advance(0.1)   # 10 s idle: reclaimed, and on_expire removed the mapping
        assert h.send("wan", reply) == []
        assert h.transact(lambda: len(h.nf.state.mappings.items())) == 0
        # its port may go to another endpoint; the old endpoint gets a mapping again
        other = out_one(h, "lan", udp_frame("10.0.0.6", "203.0.113.9", 40000, 53), "wan")
        again = source_of(out_one(h, "lan", out, "wan"))
        if workers == 0:   # the reclaimed index is reused first
            assert source_of(other) == (pub, pport) and again == (PUBLIC, 1025)
        assert again != source_of(other)
        assert out_one(h, "wan", udp_frame("203.0.113.9", again[0], 53, again[1]), "lan") == want


@WORKERS
def test_refreshes_are_coalesced_over_refresh_interval(workers):
    params = {"public_ips": 1, "udp_timeout": "10s", "refresh_interval": "4s"}
    with Harness(NAT, workers=workers, params=params) as h:
        pub, pport = source_of(out_one(h, "lan", udp_frame(HOST, "203.0.113.9", 40000, 53), "wan", time=1.0))
        out_one(h, "lan", udp_frame(HOST, "203.0.113.9", 40000, 53), "wan", time=4.0)   # < 4 s: a no-op
        reply = udp_frame("203.0.113.9", pub, 53, pport)
        assert len(h.send("wan", reply, time=10.9)) == 1
        assert h.send("wan", reply, time=11.0) == []   # the lease ran from t=1


@WORKERS
def test_tcp_uses_tcp_timeout(workers):
    params = {"public_ips": 1, "udp_timeout": "10s", "tcp_timeout": "100s"}
    with Harness(NAT, workers=workers, params=params) as h:
        tpub = source_of(out_one(h, "lan", tcp_frame(HOST, "203.0.113.9", 40000, 443, flags=SYN), "wan"))
        upub = source_of(out_one(h, "lan", udp_frame(HOST, "203.0.113.9", 40000, 53), "wan"))
        treply = tcp_frame("203.0.113.9", tpub[0], 443, tpub[1], flags=SYN | ACK)
        ureply = udp_frame("203.0.113.9", upub[0], 53, upub[1])
        h.advance(50)
        assert h.send("wan", ureply) == []
        assert out_one(h, "wan", treply, "lan") == tcp_frame("203.0.113.9", HOST, 443, 40000, flags=SYN | ACK)
        h.advance(49.9)
        assert len(h.send("wan", treply)) == 1
        h.advance(0.1)
        assert h.send("wan", treply) == []


# ------------------------------------------------------------------ many endpoints, two workers

def test_two_workers_never_share_a_public_endpoint():
    rng = random.Random(5)
    endpoints = [(0x0A000000 | rng.randrange(1 << 24), rng.randrange(1024, 65536)) for _ in range(3000)]
    endpoints = list(dict.fromkeys(endpoints))
    frames, times = [], []
    for _ in range(3):   # each endpoint sends to three hosts: its packets land on several workers
        order = endpoints[:]
        rng.shuffle(order)
        for src, sport in order:
            tag = src.to_bytes(4, "big") + sport.to_bytes(2, "big")
            frames.append(udp_frame(src, 0x0B000000 + rng.randrange(1 << 24), sport, 53, tag))
            times.append(SECOND + len(times) * 1000)
    trace = Trace(["lan", "wan"], frames, times, [0] * len(frames), [])
    r = replay(NAT, trace, workers=2, keep_output=True, params=["public_ips=1"])
    assert r.stats["handler_errors"] == 0 and r.stats["packets_in"] == len(frames)
    assert len(r.outputs["wan"]) == len(frames) and not r.outputs["lan"]
    seen: dict[tuple[int, int], tuple[str, int]] = {}
    for f in r.outputs["wan"]:
        assert_checksums_valid(f)
        tag = f[42:48]
        internal = (int.from_bytes(tag[:4], "big"), int.from_bytes(tag[4:], "big"))
        pub = source_of(f)
        assert pub[0] == PUBLIC and 1024 <= pub[1] <= 65535
        assert seen.setdefault(internal, pub) == pub   # stable per endpoint
    assert len(seen) == len(endpoints)
    assert len(set(seen.values())) == len(endpoints)   # injective
    per_worker = r.stats["per_worker"]
    assert all(w["packets"] > 0 for w in per_worker)


# ------------------------------------------------------------------ exhaustion

@WORKERS
def test_pool_exhaustion_drops_and_counts(workers):
    params = {"public_ips": 1, "ports_per_ip": 4, "udp_timeout": "10s"}
    with Harness(NAT, workers=workers, params=params) as h:
        got = {source_of(out_one(h, "lan", udp_frame(f"10.0.0.{i}", "203.0.113.9", 40000, 53), "wan"))
               for i in range(1, 5)}
        assert got == {(PUBLIC, p) for p in range(1024, 1028)}
        extra = udp_frame("10.0.0.99", "203.0.113.9", 40000, 53)
        assert h.send("lan", extra) == []
        assert h.send("lan", extra) == []
        assert exhausted(h) == {"ports": 2, "permits": 0}
        # TCP has its own pool; the UDP mappings still work
        assert len(h.send("lan", tcp_frame("10.0.0.99", "203.0.113.9", 40000, 80))) == 1
        assert len(h.send("lan", udp_frame("10.0.0.1", "203.0.113.9", 40000, 53))) == 1
        h.advance(10)   # all expired: ports again
        assert len(h.send("lan", extra)) == 1
        assert exhausted(h)["ports"] == 2


@WORKERS
def test_permit_exhaustion_drops_and_counts(workers):
    params = {"public_ips": 1, "filtering": "address", "permits": 2}
    with Harness(NAT, workers=workers, params=params) as h:
        for remote in ("203.0.113.1", "203.0.113.2", "203.0.113.1"):
            assert len(h.send("lan", udp_frame(HOST, remote, 40000, 53))) == 1
        assert h.send("lan", udp_frame(HOST, "203.0.113.3", 40000, 53)) == []
        assert exhausted(h) == {"ports": 0, "permits": 1}
        assert len(h.send("lan", tcp_frame(HOST, "203.0.113.3", 40000, 53))) == 1   # TCP: its own permits


# ------------------------------------------------------------------ hairpinning

@WORKERS
@pytest.mark.parametrize("filtering", ["endpoint", "address"])
def test_hairpinning(workers, filtering):
    with Harness(NAT, workers=workers, params={"public_ips": 1, "filtering": filtering}) as h:
        a = source_of(out_one(h, "lan", udp_frame("10.0.0.1", "203.0.113.9", 5000, 53), "wan"))
        b = source_of(out_one(h, "lan", udp_frame("10.0.0.2", "203.0.113.9", 6000, 53), "wan"))
        to_a = udp_frame("10.0.0.2", a[0], 6000, a[1], b"hi A")
        if filtering == "address":   # A has not sent to the public address yet (B now has)
            assert h.send("lan", to_a) == []
        # A's packet reaches B, and B's reaches A, with the sender's external endpoint as the
        # source (RFC 4787 REQ-9a)
        assert out_one(h, "lan", udp_frame("10.0.0.1", b[0], 5000, b[1], b"hi B"), "lan") == \
            udp_frame(a[0], "10.0.0.2", a[1], 6000, b"hi B")
        assert out_one(h, "lan", to_a, "lan") == udp_frame(b[0], "10.0.0.1", b[1], 5000, b"hi A")


# ------------------------------------------------------------------ ARP

def arp_reply(target: str, to_mac: str, to_ip: str, vlan: int | None = None) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac(NAT_MAC), ip(target), mac(to_mac), ip(to_ip))
    tag = b"" if vlan is None else struct.pack("!HH", ETH_VLAN, vlan)
    f = mac(to_mac) + mac(NAT_MAC) + tag + struct.pack("!H", ETH_ARP) + body
    return f + bytes(60 - len(f))


@WORKERS
def test_arp_requests_for_public_addresses_are_answered(workers):
    with Harness(NAT, workers=workers, params={"public_ips": 2}) as h:
        req = arp_frame("198.51.100.200", public(1), eth_src="02:00:00:00:00:77")
        assert h.send("wan", req) == [("wan", arp_reply(public(1), "02:00:00:00:00:77", "198.51.100.200"))]
        tagged = arp_frame("198.51.100.200", PUBLIC, eth_src="02:00:00:00:00:77", vlan=5)
        assert h.send("wan", tagged) == [("wan", arp_reply(PUBLIC, "02:00:00:00:00:77", "198.51.100.200",
                                                           vlan=5))]
        assert h.send("wan", arp_frame("198.51.100.200", public(2))) == []   # not ours
        assert h.send("wan", arp_frame("198.51.100.200", "10.0.0.1")) == []
        assert h.send("lan", arp_frame("10.0.0.1", PUBLIC)) == []            # only on wan
        assert h.send("wan", arp_frame("198.51.100.200", PUBLIC, op=2)) == []   # a reply


def test_arp_uses_the_mac_param():
    with Harness(NAT, params={"public_ips": 1, "mac": "02:11:22:33:44:55"}) as h:
        out = h.send("wan", arp_frame("198.51.100.200", PUBLIC))
        assert out[0][1][6:12] == mac("02:11:22:33:44:55") and out[0][1][22:28] == mac("02:11:22:33:44:55")


# ------------------------------------------------------------------ the plain peer

def readdress(frame: bytes, dst: int, dport: int) -> bytes:
    """A plain Eth/IPv4/TCP|UDP frame sent to (dst, dport), checksums recomputed from scratch."""
    b = bytearray(frame)
    ihl, total, proto = (b[14] & 15) * 4, struct.unpack_from("!H", b, 16)[0], b[23]
    l4 = 14 + ihl
    b[30:34] = ip(dst)
    struct.pack_into("!H", b, l4 + 2, dport)
    b[24:26] = b"\0\0"
    struct.pack_into("!H", b, 24, checksum(bytes(b[14:l4])))
    at = l4 + (16 if proto == PROTO_TCP else 6)
    if proto == PROTO_TCP or b[at:at + 2] != b"\0\0":
        b[at:at + 2] = b"\0\0"
        struct.pack_into("!H", b, at, l4_checksum(bytes(b[26:30]), bytes(b[30:34]), proto, bytes(b[l4:14 + total])))
    return bytes(b)


def nat_trace(base: Trace, slots: int, ppi: int, rng: random.Random | None = None) -> Trace:
    """``base`` with its WAN replies sent to the external endpoint a sequential NAT gives their
    flow when nothing expires (the n-th new internal endpoint of a protocol gets index n, modulo
    ``slots``); with ``rng``, also hairpinned, ARP, ICMP, VLAN-tagged, optioned, fragmented,
    unsolicited and malformed frames."""
    first = ip_int(PUBLIC)
    index: dict[tuple[bytes, int], int] = {}
    counts = {PROTO_TCP: 0, PROTO_UDP: 0}
    rows = []
    for frame, dev, t in zip(base.frames, base.devs, base.times_ns, strict=True):
        proto = frame[23]
        if dev == 0:
            key = (frame[26:30] + frame[34:36], proto)
            if key not in index:
                index[key] = counts[proto] % slots
                counts[proto] += 1
        else:
            i = index[(frame[30:34] + frame[36:38], proto)]
            frame = readdress(frame, first + i // ppi, 1024 + i % ppi)
        rows.append((dev, frame, t))
        if rng is None:
            continue
        r = rng.random()
        if r < 0.02 and dev == 1:   # the same reply from another host
            rows.append((1, readdress(frame[:26] + ip(0x0B000000 + rng.randrange(1 << 20)) + frame[30:], *
                                      struct.unpack("!IH", frame[30:34] + frame[36:38])), t))
        elif r < 0.04 and dev == 0:   # hairpinned: to an external endpoint of ours
            i = rng.randrange(slots)
            rows.append((0, readdress(frame, first + i // ppi, 1024 + i % ppi), t))
        elif r < 0.05:
            rows.append((1, arp_frame("203.0.113.1", public(rng.randrange(3))), t))
        elif r < 0.09:
            eth, iph, rest = frame[:14], frame[14:34], frame[34:]
            total = struct.unpack_from("!H", iph, 2)[0]
            kind = rng.choice(["vlan", "options", "fragment", "icmp", "unpadded", "runt", "bad_length"])
            odd = {"vlan": frame[:12] + b"\x81\x00\x00\x07" + frame[12:],
                   "options": eth + bytes([0x46]) + iph[1:2] + struct.pack("!H", total + 4) + iph[4:10]
                   + b"\0\0" + iph[12:] + b"\x01" * 4 + rest,
                   "fragment": eth + iph[:6] + b"\x20\x00" + iph[8:] + rest,
                   "icmp": eth + iph[:9] + b"\x01" + iph[10:] + rest,
                   "unpadded": frame[:14 + total],
                   "runt": frame[:20],
                   "bad_length": eth + iph[:2] + struct.pack("!H", len(frame)) + iph[4:] + rest}[kind]
            if kind == "options":   # a valid header checksum, so only the options differ
                odd = odd[:24] + struct.pack("!H", checksum(odd[14:38])) + odd[26:]
            rows.append((dev, odd, t))
    return Trace(["lan", "wan"], [r[1] for r in rows], [r[2] for r in rows], [r[0] for r in rows], [])


def arp_apart(outputs: dict[str, list[bytes]]) -> dict[str, tuple[list[bytes], list[bytes]]]:
    """Per device: (the frames that are not ARP, in order; the ARP frames, sorted).  nfos sends a
    frame a handler emits after the packets forwarded by the same transaction (a batch)."""
    return {d: ([f for f in fs if f[12:14] != b"\x08\x06"], sorted(f for f in fs if f[12:14] == b"\x08\x06"))
            for d, fs in outputs.items()}


@pytest.mark.parametrize("filtering", ["endpoint", "address"])
def test_peer_matches_sequential_run(filtering):
    base = gen_caida(12_000, 1_200, reverse=0.5, rate=5000, seed=3)
    trace = nat_trace(base, 64512, 64512)
    r = replay(NAT, trace, workers=0, keep_output=True, params=["public_ips=1", f"filtering={filtering}"])
    assert r.stats["handler_errors"] == 0
    replies = sum(trace.devs)
    assert len(r.outputs["lan"]) == replies   # every reply found its endpoint
    assert len(r.outputs["wan"]) == len(trace) - replies
    for f in r.outputs["lan"][:50] + r.outputs["wan"][:50]:
        assert_checksums_valid(f)
    assert peer().run(trace.frames, trace.devs, trace.times_ns, public_ips=1, filtering=filtering) == r.outputs


@pytest.mark.parametrize("filtering", ["endpoint", "address"])
def test_peer_matches_sequential_run_with_expiry_and_exhaustion(filtering):
    base = gen_caida(12_000, 1_500, reverse=0.5, rate=2000, seed=4)
    trace = nat_trace(base, 200, 100, random.Random(4))
    kw = {"public_ips": 2, "ports_per_ip": 100, "udp_timeout": 2 * SECOND, "tcp_timeout": 3 * SECOND,
          "refresh_interval": SECOND // 4, "filtering": filtering, "permits": 150}
    durations = ("udp_timeout", "tcp_timeout", "refresh_interval")
    params = [f"{k}={v}ns" if k in durations else f"{k}={v}" for k, v in kw.items()]
    r = replay(NAT, trace, workers=0, keep_output=True, params=params)
    assert r.stats["handler_errors"] == 0 and r.stats["malformed"] > 0
    counters: dict[str, int] = {}
    got = peer().run(trace.frames, trace.devs, trace.times_ns, counters=counters, **kw)
    assert arp_apart(got) == arp_apart(r.outputs)
    assert 0 < counters["exhausted_ports"] < len(trace) // 3
    assert (counters["exhausted_permits"] > 0) == (filtering == "address")
    lan, wan = r.outputs["lan"], r.outputs["wan"]
    assert len(lan) > 500 and len(wan) > 5000
    assert any(f[12:14] == b"\x08\x06" for f in wan)   # ARP replies
    assert any(f[26:30] == ip(PUBLIC) or f[26:30] == ip(public(1)) for f in lan)   # hairpinned
    for f in lan + wan:
        if f[12:14] == b"\x08\x00" and f[23] in (PROTO_TCP, PROTO_UDP):
            assert_checksums_valid(f)


# ------------------------------------------------------------------ router mode (lan_ip)

LAN_GW = "10.0.0.1"
GW, GW_MAC = "198.51.100.254", "02:00:00:00:00:99"
HOST_MAC = "02:00:00:00:00:05"
ROUTER = {"public_ips": 1, "lan_ip": LAN_GW, "wan_gateway": GW, "wan_prefix": "198.51.100.0/24"}


def arp_request_from_nat(sender: str, target: str, to: str = "ff:ff:ff:ff:ff:ff") -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac(NAT_MAC), ip(sender), bytes(6), ip(target))
    return mac(to) + mac(NAT_MAC) + struct.pack("!H", ETH_ARP) + body + bytes(18)


def routed(h: Harness) -> dict[str, int]:
    return h.transact(lambda: h.nf.state.routed.read().as_dict())


@WORKERS
def test_router_answers_arp_for_its_lan_address_on_lan_and_public_addresses_on_wan(workers):
    with Harness(NAT, workers=workers, params=ROUTER) as h:
        req = arp_frame(HOST, LAN_GW, eth_src=HOST_MAC)
        assert h.send("lan", req) == [("lan", arp_reply(LAN_GW, HOST_MAC, HOST))]
        assert h.send("wan", arp_frame(GW, PUBLIC, eth_src=GW_MAC)) == [("wan", arp_reply(PUBLIC, GW_MAC, GW))]
        assert h.send("lan", arp_frame(HOST, PUBLIC, eth_src=HOST_MAC)) == []   # each address on its side
        assert h.send("wan", arp_frame(GW, LAN_GW, eth_src=GW_MAC)) == []
        assert h.send("lan", arp_frame(HOST, "10.0.0.9", eth_src=HOST_MAC)) == []


@WORKERS
def test_router_resolves_the_wan_gateway_then_forwards_with_its_macs(workers):
    with Harness(NAT, workers=workers, params=ROUTER) as h:
        out = udp_frame(HOST, "203.0.113.9", 40000, 53, b"q", eth_src=HOST_MAC, eth_dst=NAT_MAC, ttl=64)
        # unresolved: dropped, counted, one broadcast request per second from the public address
        assert h.send("lan", out, time=1.0) == [("wan", arp_request_from_nat(PUBLIC, GW))]
        assert h.send("lan", out, time=1.5) == []
        assert h.send("lan", out, time=2.0) == [("wan", arp_request_from_nat(PUBLIC, GW))]
        assert h.send("wan", arp_frame(GW, PUBLIC, eth_src=GW_MAC, eth_dst=NAT_MAC, op=2), time=2.1) == []
        got = out_one(h, "lan", out, "wan", time=2.2)
        pub, pport = source_of(got)
        assert got == udp_frame(pub, "203.0.113.9", pport, 53, b"q", eth_src=NAT_MAC, eth_dst=GW_MAC, ttl=63)
        # on the WAN link (wan_prefix): the destination itself is the next hop
        near = udp_frame(HOST, "198.51.100.7", 40000, 53, eth_src=HOST_MAC, eth_dst=NAT_MAC)
        assert h.send("lan", near, time=2.3) == [("wan", arp_request_from_nat(PUBLIC, "198.51.100.7"))]
        assert routed(h) == {"unresolved": 4, "arp_requests": 3, "ttl_exceeded": 0}
        assert h.stats()["handler_errors"] == 0


@WORKERS
def test_router_resolves_lan_hosts_and_learns_from_their_requests(workers):
    with Harness(NAT, workers=workers, params=ROUTER) as h:
        h.send("wan", arp_frame(GW, PUBLIC, eth_src=GW_MAC), time=1.0)   # learned: we are its target
        out = udp_frame(HOST, "203.0.113.9", 40000, 53, eth_src=HOST_MAC, eth_dst=NAT_MAC)
        pub, pport = source_of(out_one(h, "lan", out, "wan", time=1.1))
        reply = udp_frame("203.0.113.9", pub, 53, pport, b"a", eth_src=GW_MAC, eth_dst=NAT_MAC)
        want = udp_frame("203.0.113.9", HOST, 53, 40000, b"a", eth_src=NAT_MAC, eth_dst=HOST_MAC, ttl=63)
        # the LAN host is not resolved: a request from the LAN address, the reply dropped
        assert h.send("wan", reply, time=1.2) == [("lan", arp_request_from_nat(LAN_GW, HOST))]
        # the host asks for its gateway: the NAT answers and learns it (RFC 826: it is the target)
        assert len(h.send("lan", arp_frame(HOST, LAN_GW, eth_src=HOST_MAC), time=1.3)) == 1
        assert out_one(h, "wan", reply, "lan", time=1.4) == want
        # hairpinning: back to the LAN, to the resolved host
        hair = udp_frame("10.0.0.6", pub, 7000, pport, b"h", eth_src="02:00:00:00:00:06", eth_dst=NAT_MAC)
        src6 = out_one(h, "lan", udp_frame("10.0.0.6", "203.0.113.9", 7000, 53, eth_src="02:00:00:00:00:06",
                                           eth_dst=NAT_MAC), "wan", time=1.5)
        pub6, pport6 = source_of(src6)
        assert out_one(h, "lan", hair, "lan", time=1.6) == udp_frame(pub6, HOST, pport6, 40000, b"h",
                                                                     eth_src=NAT_MAC, eth_dst=HOST_MAC, ttl=63)
        assert routed(h)["unresolved"] == 1


@WORKERS
def test_router_drops_frames_not_for_it_and_expiring_ttls(workers):
    with Harness(NAT, workers=workers, params=ROUTER) as h:
        h.send("wan", arp_frame(GW, PUBLIC, eth_src=GW_MAC), time=1.0)
        base = {"eth_src": HOST_MAC, "eth_dst": NAT_MAC}
        assert h.send("lan", udp_frame(HOST, "203.0.113.9", eth_src=HOST_MAC, eth_dst="02:00:00:00:00:77")) == []
        assert h.send("lan", udp_frame(HOST, "203.0.113.9", eth_src=HOST_MAC, eth_dst="ff:ff:ff:ff:ff:ff")) == []
        assert h.send("lan", udp_frame(HOST, "203.0.113.9", ttl=1, **base)) == []
        assert h.send("lan", udp_frame(HOST, LAN_GW, **base)) == []   # to the router itself
        assert len(h.send("lan", udp_frame(HOST, "203.0.113.9", ttl=2, **base))) == 1
        assert routed(h) == {"unresolved": 0, "arp_requests": 0, "ttl_exceeded": 1}


@WORKERS
def test_router_arp_cache_is_polled_before_it_expires_and_then_forgotten(workers):
    with Harness(NAT, workers=workers, params={**ROUTER, "arp_timeout": "10s"}) as h:
        h.send("wan", arp_frame(GW, PUBLIC, eth_src=GW_MAC), time=1.0)   # lease until t = 11
        out = udp_frame(HOST, "203.0.113.9", 40000, 53, eth_src=HOST_MAC, eth_dst=NAT_MAC)
        assert len(h.send("lan", out, time=5.9)) == 1                        # first half: no request
        # second half: forwarded, and a unicast poll (RFC 1122 2.3.2.1), at most once a second
        got = h.send("lan", out, time=6.1)
        assert [d for d, _ in got] == ["wan", "wan"] and got[1][1] == arp_request_from_nat(PUBLIC, GW, GW_MAC)
        assert len(h.send("lan", out, time=6.5)) == 1
        # the gateway answers the poll: renewed for 10 s (forwarded after t = 11, polled again)
        h.send("wan", arp_frame(GW, PUBLIC, eth_src=GW_MAC, eth_dst=NAT_MAC, op=2), time=7.0)
        assert [d for d, _ in h.send("lan", out, time=16.9)] == ["wan", "wan"]
        # a new MAC in any ARP from a cached sender replaces the old one (RFC 826 merge)
        h.send("wan", arp_frame(GW, "198.51.100.3", eth_src="02:00:00:00:00:98"), time=16.95)
        assert h.send("lan", out, time=16.96)[0][1][:6] == mac("02:00:00:00:00:98")
        h.advance(20)   # no answer to anything: the entry expires, the next packet asks by broadcast
        assert h.send("lan", out) == [("wan", arp_request_from_nat(PUBLIC, GW))]
        assert h.transact(lambda: len(h.nf.state.neighbors.items())) == 1   # only the new, pending entry


def test_router_params_are_checked():
    for bad in ({"wan_gateway": GW}, {"wan_prefix": "198.51.100.0/24"},
                {"lan_ip": LAN_GW, "wan_prefix": "nonsense"}, {"lan_ip": LAN_GW, "arp_timeout": "0s"}):
        with pytest.raises(Exception, match="lan_ip|wan_prefix|arp_timeout"):
            with Harness(NAT, params=bad):
                pass


def test_without_lan_ip_the_frames_keep_their_macs_and_ttl():
    with Harness(NAT, params={"public_ips": 1}) as h:
        f = udp_frame(HOST, "203.0.113.9", 40000, 53, eth_src=HOST_MAC, eth_dst="02:00:00:00:00:77")
        pub, pport = source_of(out_one(h, "lan", f, "wan"))
        assert out_one(h, "lan", f, "wan") == udp_frame(pub, "203.0.113.9", pport, 53, eth_src=HOST_MAC,
                                                        eth_dst="02:00:00:00:00:77")
