"""examples/nat.py and ICMP (RFC 5508): echo is mapped by its identifier, ICMP errors of live
mappings are translated back — the quoted header rewritten, its checksums and the ICMP checksum
right — in both directions and hairpinned; errors of no mapping, with bad checksums or quoting too
little are dropped; echo mappings expire after ``icmp_timeout``; and the plain peer gives the
sequential run's frames on a trace rich in ICMP.

Expected frames are built from scratch (``frames``): equality proves the incremental checksum
updates.  Harness tests run sequentially and with 2 workers; with workers the external identifier
or port is read from the output (each worker allocates from its own part of the index space).
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct

import pytest

import frames as F
from nfos.io.capture import Trace
from nfos.runtime.replay import replay
from nfos.testing import Harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAT = os.path.join(ROOT, "examples", "nat.py")
PUBLIC = "198.51.100.1"
HOST, HOST2 = "10.0.0.5", "10.0.0.6"
REMOTE, ROUTER = "203.0.113.9", "192.0.2.254"
SECOND = 1_000_000_000
WORKERS = pytest.mark.parametrize("workers", [0, 2])


def peer():
    spec = importlib.util.spec_from_file_location("plain_nat", os.path.join(ROOT, "bench", "peers", "plain_nat.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def echo(src, dst, icmp_type, ident, seq=1, **kw):
    return F.icmp_frame(src, dst, icmp_type, 0, ident=ident, seq=seq, payload=b"0123456789abcdef" * 3, **kw)


def ip_packet(frame: bytes) -> bytes:
    l3 = F.l3_offset(frame)
    return frame[l3:l3 + struct.unpack_from("!H", frame, l3 + 2)[0]]


def quote(frame: bytes, extra: int = 8) -> bytes:
    p = ip_packet(frame)
    return p[:(p[0] & 15) * 4 + extra]


def one(h: Harness, dev: str, frame: bytes, out_dev: str, time: float | None = None) -> bytes:
    out = h.send(dev, frame, time)
    assert len(out) == 1 and out[0][0] == out_dev, out
    got = out[0][1]
    if got[23] == 1:
        F.assert_icmp_checksums_valid(got)
    else:
        F.assert_checksums_valid(got)
    return got


def echo_source(frame: bytes) -> tuple[str, int]:
    """(source address, identifier) of an echo frame."""
    return ".".join(map(str, frame[26:30])), struct.unpack_from("!H", frame, 38)[0]


def udp_source(frame: bytes) -> tuple[str, int]:
    l4 = 14 + (frame[14] & 15) * 4
    return ".".join(map(str, frame[26:30])), struct.unpack_from("!H", frame, l4)[0]


# ------------------------------------------------------------------ echo

@WORKERS
def test_ping_is_mapped_by_identifier(workers):
    with Harness(NAT, workers=workers, params={"public_ips": 2}) as h:
        got = one(h, "lan", echo(HOST, REMOTE, 8, 0x1234, 1, ttl=9), "wan")
        pub, ident = echo_source(got)
        assert got == echo(pub, REMOTE, 8, ident, 1, ttl=9)   # only the source and the identifier changed
        if workers == 0:
            assert (pub, ident) == (PUBLIC, 1024)
        # the same identifier to another host: the same mapping (RFC 5508 REQ-1a)
        assert echo_source(one(h, "lan", echo(HOST, "192.0.2.1", 8, 0x1234, 2), "wan")) == (pub, ident)
        # the reply comes back to the host, with its own identifier
        assert one(h, "wan", echo(REMOTE, pub, 0, ident, 1), "lan") == echo(REMOTE, HOST, 0, 0x1234, 1)
        # another identifier, another host: other mappings
        other = echo_source(one(h, "lan", echo(HOST, REMOTE, 8, 0x1235), "wan"))
        third = echo_source(one(h, "lan", echo(HOST2, REMOTE, 8, 0x1234), "wan"))
        assert len({(pub, ident), other, third}) == 3
        # echo requests from outside, replies to nothing, pings of our public address: dropped
        assert h.send("wan", echo(REMOTE, pub, 8, ident)) == []
        assert h.send("wan", echo(REMOTE, pub, 0, ident + 7)) == []
        assert h.send("lan", echo(HOST, PUBLIC, 8, 99)) == []
        assert h.send("lan", F.icmp_frame(HOST, REMOTE, 13, 0, ident=5, payload=bytes(12))) == []   # timestamp
        assert h.stats()["handler_errors"] == 0


@WORKERS
def test_echo_mapping_expires_after_icmp_timeout(workers):
    with Harness(NAT, workers=workers, params={"icmp_timeout": "5s", "refresh_interval": "1s"}) as h:
        pub, ident = echo_source(one(h, "lan", echo(HOST, REMOTE, 8, 77), "wan", time=0))
        assert one(h, "wan", echo(REMOTE, pub, 0, ident), "lan", time=4.5) == echo(REMOTE, HOST, 0, 77)
        # replies do not refresh (like UDP): at 5 s the mapping is gone
        assert h.send("wan", echo(REMOTE, pub, 0, ident), time=5.1) == []
        pub2, ident2 = echo_source(one(h, "lan", echo(HOST, REMOTE, 8, 77), "wan", time=6))
        assert one(h, "wan", echo(REMOTE, pub2, 0, ident2), "lan", time=10.9) == echo(REMOTE, HOST, 0, 77)
        h.advance(10)
        assert h.send("wan", echo(REMOTE, pub2, 0, ident2)) == []


def test_echo_default_timeout_is_60_seconds():
    with Harness(NAT) as h:
        one(h, "lan", echo(HOST, REMOTE, 8, 5), "wan", time=0)
        one(h, "wan", echo(REMOTE, PUBLIC, 0, 1024), "lan", time=59.5)
        assert h.send("wan", echo(REMOTE, PUBLIC, 0, 1024), time=60.5) == []


@WORKERS
def test_address_dependent_filtering_of_echo_replies(workers):
    with Harness(NAT, workers=workers, params={"filtering": "address"}) as h:
        pub, ident = echo_source(one(h, "lan", echo(HOST, REMOTE, 8, 9), "wan"))
        assert h.send("wan", echo("203.0.113.10", pub, 0, ident)) == []   # not pinged from this mapping
        assert one(h, "wan", echo(REMOTE, pub, 0, ident), "lan") == echo(REMOTE, HOST, 0, 9)


# ------------------------------------------------------------------ errors from WAN (REQ-4)

def outgoing(kind: str, src, sport: int, options: bytes = b"") -> bytes:
    """A packet the host (src, sport) sends to REMOTE, as on the LAN (or, with the external endpoint,
    as the NAT sent it on the WAN)."""
    if kind == "udp":
        return F.udp_frame(src, REMOTE, sport, 53, b"query" * 9, ip_options=options, df=True, ident=3)
    if kind == "udp0":
        return F.udp_frame(src, REMOTE, sport, 53, b"query" * 9, with_checksum=False, ip_options=options)
    if kind == "tcp":
        return F.tcp_frame(src, REMOTE, sport, 443, seq=5, flags=F.SYN, options=b"\x02\x04\x05\xb4",
                           ip_options=options, df=True)
    return echo(src, REMOTE, 8, sport, seq=3, ip_options=options, ttl=1)


@WORKERS
@pytest.mark.parametrize("kind", ["udp", "udp0", "tcp", "echo"])
@pytest.mark.parametrize("extra,options", [(8, b""), (28, b"\x01\x01\x01\x01"), (1000, b"")])
def test_errors_from_wan_go_back_to_the_internal_endpoint(workers, kind, extra, options):
    with Harness(NAT, workers=workers, params={"public_ips": 2}) as h:
        sent = one(h, "lan", outgoing(kind, HOST, 40000, options), "wan")
        pub, pport = echo_source(sent) if kind == "echo" else udp_source(sent)
        for router, icmp_type, code, rest in [(ROUTER, 3, 4, 1400), (ROUTER, 11, 0, 0), (REMOTE, 3, 3, 0),
                                              (REMOTE, 12, 0, 20 << 24)]:
            err = F.icmp_error_frame(router, pub, icmp_type, code, quote(sent, extra), rest=rest, ttl=50)
            want = F.icmp_error_frame(router, HOST, icmp_type, code, quote(outgoing(kind, HOST, 40000, options),
                                                                               extra), rest=rest, ttl=50)
            assert one(h, "wan", err, "lan") == want


@WORKERS
def test_errors_from_wan_that_are_dropped(workers):
    with Harness(NAT, workers=workers, params={"public_ips": 1, "udp_timeout": "3s", "refresh_interval": "0s"}) as h:
        sent = one(h, "lan", outgoing("udp", HOST, 40000), "wan", time=0)
        pub, pport = udp_source(sent)
        good = F.icmp_error_frame(ROUTER, pub, 3, 3, quote(sent))
        bad_icmp = bytearray(good)
        bad_icmp[36] ^= 1   # the ICMP checksum
        bad_quote = bytearray(F.icmp_error_frame(ROUTER, pub, 3, 3, quote(sent)))
        bad_quote[42 + 8] ^= 0x10   # the quoted TTL: its header checksum fails (and we fix the ICMP one)
        bad_quote[36:38] = b"\0\0"
        bad_quote[36:38] = struct.pack("!H", F.checksum(F.icmp_message(bytes(bad_quote))))
        unknown = F.icmp_error_frame(ROUTER, pub, 3, 3, quote(F.udp_frame(pub, REMOTE, pport + 1, 53)))
        for f in (bytes(bad_icmp), bytes(bad_quote), unknown,
                  F.icmp_error_frame(ROUTER, pub, 3, 3, quote(sent, 4)),            # 4 bytes of UDP
                  F.icmp_error_frame(ROUTER, pub, 5, 1, quote(sent)),               # a redirect
                  F.icmp_error_frame(ROUTER, pub, 3, 3, quote(sent), mf=True)):     # a fragment
            assert h.send("wan", f, time=1) == []
        # errors do not refresh the mapping (REQ-6): it expires 3 s after the last outbound packet
        assert len(h.send("wan", good, time=2.9)) == 1
        assert h.send("wan", good, time=3.1) == []
        assert h.stats()["handler_errors"] == 0


# ------------------------------------------------------------------ errors from LAN (REQ-5)

@WORKERS
@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_errors_from_lan_go_out_from_the_public_endpoint(workers, kind):
    def incoming(dst, dport):
        if kind == "udp":
            return F.udp_frame(REMOTE, dst, 53, dport, b"late answer", ip_options=b"\x01" * 4)
        return F.tcp_frame(REMOTE, dst, 443, dport, seq=9, flags=F.SYN | F.ACK)
    with Harness(NAT, workers=workers) as h:
        pub, pport = udp_source(one(h, "lan", outgoing(kind, HOST, 40000), "wan"))
        inside = one(h, "wan", incoming(pub, pport), "lan")
        assert inside == incoming(HOST, 40000)
        err = F.icmp_error_frame(HOST, REMOTE, 3, 3, quote(inside))   # port unreachable from the host
        want = F.icmp_error_frame(pub, REMOTE, 3, 3, quote(incoming(pub, pport)))
        assert one(h, "lan", err, "wan") == want
        # about no mapping: dropped
        assert h.send("lan", F.icmp_error_frame(HOST, REMOTE, 3, 3, quote(incoming(HOST, 40001)))) == []


@WORKERS
def test_hairpinned_errors(workers):
    """Host 2 sends to host 1's external endpoint; host 1 answers with port unreachable: host 2 gets
    it about its own packet, from host 1's public address (RFC 5508 REQ-7, REQ-7a)."""
    with Harness(NAT, workers=workers) as h:
        pub1, port1 = udp_source(one(h, "lan", outgoing("udp", HOST, 40000), "wan"))
        pub2, port2 = udp_source(one(h, "lan", outgoing("udp", HOST2, 5000), "wan"))
        hairpin = one(h, "lan", F.udp_frame(HOST2, pub1, 5000, port1, b"hi"), "lan")
        assert hairpin == F.udp_frame(pub2, HOST, port2, 40000, b"hi")
        err = F.icmp_error_frame(HOST, pub2, 3, 3, quote(hairpin))
        want = F.icmp_error_frame(pub1, HOST2, 3, 3, quote(F.udp_frame(HOST2, pub1, 5000, port1, b"hi")))
        assert one(h, "lan", err, "lan") == want


# ------------------------------------------------------------------ router mode

NAT_MAC, GW, GW_MAC, HOST_MAC = "02:00:00:00:00:aa", "198.51.100.254", "02:00:00:00:00:99", "02:00:00:00:00:05"
ROUTER_PARAMS = {"public_ips": 1, "lan_ip": "10.0.0.1", "wan_gateway": GW, "wan_prefix": "198.51.100.0/24"}


@WORKERS
def test_router_mode_pings_and_time_exceeded(workers):
    with Harness(NAT, workers=workers, params=ROUTER_PARAMS) as h:
        h.send("wan", F.arp_frame(GW, PUBLIC, eth_src=GW_MAC), time=1.0)
        h.send("lan", F.arp_frame(HOST, "10.0.0.1", eth_src=HOST_MAC), time=1.0)
        req = echo(HOST, REMOTE, 8, 4321, eth_src=HOST_MAC, eth_dst=NAT_MAC, ttl=5)
        got = one(h, "lan", req, "wan", time=1.1)
        pub, ident = echo_source(got)
        assert got == echo(pub, REMOTE, 8, ident, eth_src=NAT_MAC, eth_dst=GW_MAC, ttl=4)
        rep = echo(REMOTE, pub, 0, ident, eth_src=GW_MAC, eth_dst=NAT_MAC)
        assert one(h, "wan", rep, "lan", time=1.2) == echo(REMOTE, HOST, 0, 4321, eth_src=NAT_MAC,
                                                          eth_dst=HOST_MAC, ttl=63)
        # a router behind the gateway: TTL exceeded for the ping, for a UDP probe (tracepath)
        probe = F.udp_frame(HOST, REMOTE, 44444, 44445, b"x" * 20, eth_src=HOST_MAC, eth_dst=NAT_MAC, ttl=2)
        sent = one(h, "lan", probe, "wan", time=1.3)
        for out, inside in ((got, req), (sent, probe)):
            err = F.icmp_error_frame("198.51.100.77", pub, 11, 0, quote(out), eth_src=GW_MAC, eth_dst=NAT_MAC)
            want = F.icmp_error_frame("198.51.100.77", HOST, 11, 0, quote(out), eth_src=NAT_MAC,
                                      eth_dst=HOST_MAC, ttl=63)
            l3 = 14
            q = bytearray(F.icmp_message(want)[8:])
            q[:len(quote(inside))] = quote(inside)
            q[8] = out[l3 + 8]   # the quoted TTL is the one the NAT sent (one less than the host's)
            q[10:12] = b"\0\0"
            q[10:12] = struct.pack("!H", F.checksum(bytes(q[:20])))
            want = F.icmp_error_frame("198.51.100.77", HOST, 11, 0, bytes(q), eth_src=NAT_MAC, eth_dst=HOST_MAC,
                                      ttl=63)
            assert one(h, "wan", err, "lan", time=1.4) == want


# ------------------------------------------------------------------ the peer

def nat_icmp_trace(sessions: int, seed: int, params: dict) -> Trace:
    """LAN hosts ping and send UDP/TCP; replies and errors come back (some after the mappings
    expired, some with bad checksums or truncated quotes, some about nothing); LAN hosts answer
    some inbound packets with port unreachable; timestamps both ways.  Inbound packets change no
    mapping, so the external endpoints are those the peer gives the outbound packets alone."""
    rng = random.Random(seed)
    outs: list[tuple[int, bytes]] = []
    t = 0
    for i in range(sessions):
        t += rng.randrange(SECOND // 20)
        host, port = f"10.0.{i % 5}.{1 + i % 7}", rng.randrange(1024, 1100)
        outs.append((t, outgoing(rng.choice(["udp", "tcp", "echo"]), host, port, rng.choice([b"", b"\x01" * 4]))))
    sent = peer().run([f for _, f in outs], [0] * len(outs), [t for t, _ in outs], **params)["wan"]
    assert len(sent) == len(outs)
    rows: list[tuple[int, int, bytes]] = [(t, 0, f) for t, f in outs]
    for (t, out), ext in zip(outs, sent, strict=True):
        late = t + rng.randrange(3 * SECOND)
        host = ".".join(map(str, out[26:30]))
        if out[23] == 1:
            pub, ident = echo_source(ext)
            rows.append((late, 1, echo(REMOTE, pub, 0, ident, seq=3)))
        elif out[23] == 17:
            (pub, pport), (_, port) = udp_source(ext), udp_source(out)
            rows.append((late, 1, F.udp_frame(REMOTE, pub, 53, pport, b"answer")))
            if rng.random() < 0.3:   # the host has gone: port unreachable from the inside
                inside = F.udp_frame(REMOTE, host, 53, port, b"answer")
                rows.append((late + 1, 0, F.icmp_error_frame(host, REMOTE, 3, 3, quote(inside))))
        pub = ".".join(map(str, ext[26:30]))
        for _ in range(rng.randrange(3)):
            err = bytearray(F.icmp_error_frame(rng.choice([ROUTER, REMOTE]), pub, rng.choice([3, 11, 12]),
                                               rng.randrange(5), quote(ext, rng.choice([8, 8, 28, 4])),
                                               rest=rng.choice([0, 1400])))
            if rng.random() < 0.1:
                err[rng.choice([36, 42 + 8])] ^= 0x40   # a bad ICMP or quoted IPv4 checksum
            rows.append((t + rng.randrange(3 * SECOND), 1, bytes(err)))
        if rng.random() < 0.05:
            rows.append((t, rng.randrange(2), F.icmp_frame(REMOTE, host, 13, 0, ident=1, payload=bytes(12))))
    rows.sort(key=lambda row: row[0])
    return Trace(["lan", "wan"], [r[2] for r in rows], [r[0] for r in rows], [r[1] for r in rows], [])


@pytest.mark.parametrize("filtering", ["endpoint", "address"])
def test_peer_matches_sequential_run_on_icmp(filtering):
    kw = {"public_ips": 1, "udp_timeout": 2 * SECOND, "tcp_timeout": 3 * SECOND, "icmp_timeout": SECOND,
          "refresh_interval": SECOND // 4, "filtering": filtering}
    trace = nat_icmp_trace(1200, 7, kw)
    durations = ("udp_timeout", "tcp_timeout", "icmp_timeout", "refresh_interval")
    params = [f"{k}={v}ns" if k in durations else f"{k}={v}" for k, v in kw.items()]
    r = replay(NAT, trace, workers=0, keep_output=True, params=params)
    assert r.stats["handler_errors"] == 0
    assert peer().run(trace.frames, trace.devs, trace.times_ns, **kw) == r.outputs
    lan, wan = r.outputs["lan"], r.outputs["wan"]
    errors_in = [f for f in lan if f[23] == 1 and f[34] in (3, 11, 12)]
    errors_out = [f for f in wan if f[23] == 1 and f[34] in (3, 11, 12)]
    echo_in = [f for f in lan if f[23] == 1 and f[34] == 0]
    assert len(errors_in) > 200 and len(errors_out) > 20 and len(echo_in) > 100, \
        (len(errors_in), len(errors_out), len(echo_in))
    wan_errors = sum(1 for f, d in zip(trace.frames, trace.devs, strict=True) if d == 1 and f[23] == 1 and f[34] != 0)
    assert len(errors_in) < wan_errors   # some were dropped (expired, truncated, bad checksums)
    for f in lan + wan:
        if f[23] == 1:
            F.assert_icmp_checksums_valid(f)
