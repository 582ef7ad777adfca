"""examples/firewall.py on ARP and ICMP: ARP passes both ways, ping from the inside works and from the
outside does not, ICMP errors pass inwards only for a live session they quote ("related"), echo
sessions expire; and on a trace rich in ICMP and ARP, ``--workers`` 0, 1 and 2 and the plain peer
give the same frames.

Harness tests run sequentially and with 2 workers (an error steered to another worker than its
session's would find no session there and be dropped).
"""

from __future__ import annotations

import importlib.util
import os
import random

import pytest

import frames as F
from nfos.io.capture import Trace
from nfos.runtime.replay import replay
from nfos.testing import Harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIREWALL = os.path.join(ROOT, "examples", "firewall.py")
INSIDE, OUTSIDE, ROUTER = "10.0.0.5", "192.0.2.7", "198.51.100.254"
SECOND = 1_000_000_000
WORKERS = pytest.mark.parametrize("workers", [0, 2])


def peer():
    spec = importlib.util.spec_from_file_location("plain_firewall",
                                                  os.path.join(ROOT, "bench", "peers", "plain_firewall.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quote(frame: bytes, extra: int = 8) -> bytes:
    """What an error about ``frame`` quotes: its IPv4 header and ``extra`` bytes of data."""
    l3 = F.l3_offset(frame)
    return frame[l3:l3 + (frame[l3] & 15) * 4 + extra]


def echo(src, dst, icmp_type, ident, seq=1):
    return F.icmp_frame(src, dst, icmp_type, 0, ident=ident, seq=seq, payload=b"abcdefgh" * 7)


@WORKERS
def test_arp_passes_both_ways(workers):
    request = F.arp_frame(INSIDE, OUTSIDE, eth_src=F.MAC_A)
    reply = F.arp_frame(OUTSIDE, INSIDE, eth_src=F.MAC_B, eth_dst=F.MAC_A, op=2)
    tagged = F.arp_frame(OUTSIDE, INSIDE, eth_src=F.MAC_B, op=1, vlan=9)
    with Harness(FIREWALL, workers=workers) as h:
        assert h.send("lan", request) == [("wan", request)]
        assert h.send("wan", reply) == [("lan", reply)]
        assert h.send("wan", tagged) == [("lan", tagged)]


@WORKERS
def test_ping_from_inside_works_from_outside_does_not(workers):
    with Harness(FIREWALL, workers=workers, params={"expiry": "60s"}) as h:
        for i in range(8):
            req, rep = echo(INSIDE, OUTSIDE, 8, 100 + i, i), echo(OUTSIDE, INSIDE, 0, 100 + i, i)
            assert h.send("wan", rep) == []                    # no ping went out with this identifier
            assert h.send("lan", req) == [("wan", req)]
            assert h.send("wan", rep) == [("lan", rep)]
            assert h.send("wan", echo(OUTSIDE, INSIDE, 8, 100 + i)) == []   # a request in: never
        assert h.send("wan", echo(OUTSIDE, INSIDE, 8, 7)) == []
        h.advance(61)   # echo sessions expire like any other
        assert h.send("wan", echo(OUTSIDE, INSIDE, 0, 100)) == []
        stats = h.stats()
    assert stats["packet_sets_created"] == 8 and stats["packet_sets_expired"] == 8


@WORKERS
def test_errors_of_live_sessions_pass_inwards(workers):
    with Harness(FIREWALL, workers=workers, params={"expiry": "60s"}) as h:
        for i in range(6):
            host = f"10.0.0.{10 + i}"
            out = [F.udp_frame(host, OUTSIDE, 40000 + i, 53, b"q"),
                   F.tcp_frame(host, OUTSIDE, 41000 + i, 443, flags=F.SYN, df=True, payload=b"x" * 1400),
                   echo(host, OUTSIDE, 8, 300 + i)][i % 3]
            assert h.send("lan", out) == [("wan", out)]
            for err in (F.icmp_error_frame(ROUTER, host, 3, 4, quote(out), rest=1400),     # PMTU
                        F.icmp_error_frame(ROUTER, host, 11, 0, quote(out, 28)),
                        F.icmp_error_frame(OUTSIDE, host, 3, 3, quote(out), ip_options=b"\x01" * 4),
                        F.icmp_error_frame(ROUTER, host, 12, 0, quote(out), rest=8 << 24)):
                assert h.send("wan", err) == [("lan", err)]
            # addressed to another host than the quoted source: dropped
            assert h.send("wan", F.icmp_error_frame(ROUTER, INSIDE, 3, 4, quote(out), rest=1400)) == []
            # too little quoted to tell the session (4 bytes of its data): dropped
            assert h.send("wan", F.icmp_error_frame(ROUTER, host, 3, 4, quote(out, 4))) == []
        stranger = F.udp_frame(INSIDE, OUTSIDE, 5555, 53, b"never sent")
        assert h.send("wan", F.icmp_error_frame(ROUTER, INSIDE, 3, 3, quote(stranger))) == []
        udp = F.udp_frame("10.0.0.10", OUTSIDE, 40000, 53, b"q")
        h.advance(61)
        assert h.send("wan", F.icmp_error_frame(ROUTER, "10.0.0.10", 3, 3, quote(udp))) == []   # expired
        assert h.stats()["packet_sets_created"] == 6


@WORKERS
def test_errors_from_inside_pass_and_open_nothing(workers):
    unsolicited = F.udp_frame(OUTSIDE, INSIDE, 53, 40000, b"hello")
    err = F.icmp_error_frame(INSIDE, OUTSIDE, 3, 3, quote(unsolicited))   # port unreachable, from the inside
    with Harness(FIREWALL, workers=workers) as h:
        assert h.send("lan", err) == [("wan", err)]
        assert h.send("wan", unsolicited) == []   # the error opened no session for it
        assert h.stats()["packet_sets_created"] == 0


@WORKERS
def test_other_frames_leave_but_do_not_enter(workers):
    stamp = F.icmp_frame(OUTSIDE, INSIDE, 13, 0, ident=1, seq=1, payload=bytes(12))
    redirect = F.icmp_frame(ROUTER, INSIDE, 5, 1, payload=quote(F.udp_frame(INSIDE, OUTSIDE, 1, 2)))
    gre = F.ipv4_frame(OUTSIDE, INSIDE, 47, bytes(24))
    ipv6 = F.ether(ethertype=0x86DD) + bytes(40)
    with Harness(FIREWALL, workers=workers) as h:
        for f in (stamp, redirect, gre, ipv6):
            assert h.send("wan", f) == []
            assert h.send("lan", f) == [("wan", f)]


# ------------------------------------------------------------------ the modes and the peer

def icmp_trace(sessions: int, seed: int) -> Trace:
    """LAN hosts ping and send UDP/TCP to WAN hosts; replies come back (some after the sessions
    expired); WAN routers send errors about them (some addressed wrongly, truncated, or about
    nothing); WAN hosts ping in; ARP and other ICMP both ways."""
    rng = random.Random(seed)
    rows: list[tuple[int, int, bytes]] = []   # (time, dev, frame)
    t = 0
    for i in range(sessions):
        t += rng.randrange(SECOND // 50)
        host, remote = f"10.0.{i % 7}.{1 + i % 5}", f"192.0.2.{1 + i % 11}"
        kind = rng.choice(["echo", "udp", "tcp"])
        if kind == "echo":
            ident = rng.randrange(65536)
            out = echo(host, remote, 8, ident, i)
            back = echo(remote, host, 0, ident, i)
        elif kind == "udp":
            sport = rng.randrange(1024, 65536)
            out = F.udp_frame(host, remote, sport, 53, b"q" * rng.randrange(30), ip_options=rng.choice([b"", b"\x01" * 4]))
            back = F.udp_frame(remote, host, 53, sport, b"a")
        else:
            sport = rng.randrange(1024, 65536)
            out = F.tcp_frame(host, remote, sport, 80, flags=F.SYN, vlan=rng.choice([None, 3]))
            back = F.tcp_frame(remote, host, 80, sport, flags=F.SYN | F.ACK)
        rows.append((t, 0, out))
        late = rng.randrange(2 * SECOND)
        rows.append((t + late, 1, back))
        router = rng.choice([remote, "198.51.100.254", "203.0.113.9"])
        for _ in range(rng.randrange(3)):
            extra = rng.choice([8, 8, 28, 4, 0])
            to = host if rng.random() < 0.9 else "10.9.9.9"
            err = F.icmp_error_frame(router, to, rng.choice([3, 11, 12]), rng.randrange(5), quote(out, extra),
                                     rest=rng.choice([0, 1400]))
            rows.append((t + rng.randrange(2 * SECOND), 1, err))
        r = rng.random()
        if r < 0.1:
            rows.append((t, 1, echo(remote, host, 8, rng.randrange(65536))))   # ping from outside
        elif r < 0.2:
            rows.append((t, rng.randrange(2), F.arp_frame(host, remote, op=rng.choice([1, 2]))))
        elif r < 0.25:
            rows.append((t, rng.randrange(2), F.icmp_frame(remote, host, 13, 0, ident=1, payload=bytes(12))))
        elif r < 0.3:   # an error from the inside, about a packet from outside
            rows.append((t, 0, F.icmp_error_frame(host, remote, 3, 3, quote(back))))
    rows.sort(key=lambda row: row[0])
    return Trace(["lan", "wan"], [r[2] for r in rows], [r[0] for r in rows], [r[1] for r in rows], [])


def test_firewall_icmp_trace_modes_and_peer_agree():
    trace = icmp_trace(1500, seed=5)
    runs = {w: replay(FIREWALL, trace, workers=w, keep_output=True, params=["expiry=1s"]) for w in (0, 1, 2)}
    seq = runs[0]
    assert seq.stats["handler_errors"] == 0 and seq.stats["table_full"] == 0
    want = {d: sorted(v) for d, v in seq.outputs.items()}
    for w in (1, 2):
        assert {d: sorted(v) for d, v in runs[w].outputs.items()} == want, f"workers={w}"
    assert peer().run(trace.frames, trace.devs, trace.times_ns, expiry=SECOND) == seq.outputs
    lan = seq.outputs["lan"]
    icmp_in = [f for f in lan if f[23] == 1 or f[12:14] == b"\x81\x00" and f[27] == 1]
    errors_in = [f for f in icmp_in if f[34] in (3, 11, 12)]
    wan_in = sum(trace.devs)
    assert 0 < len(lan) < wan_in and len(errors_in) > 100 and len(icmp_in) > len(errors_in)
    assert any(f[12:14] == b"\x08\x06" for f in lan)                     # ARP came in
    assert not any(f[23] == 1 and f[34] == 8 for f in lan)               # no echo request did
    assert seq.stats["packet_sets_expired"] > 0
