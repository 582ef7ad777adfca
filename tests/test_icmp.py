"""ICMP in packets and packet sets: ``pkt.icmp`` (type, code, id/seq, mtu, the quote of an error),
rewrites of the quoted header with three checksums kept valid, and the keying of echo and errors.

Expected frames are built from scratch with ``frames`` (checksums computed over the whole
packet), so an output equal to one proves the incremental updates; rewritten frames are also
verified with ``assert_icmp_checksums_valid``.  Keying tests run sequentially and with 2 workers
(an error steered to the wrong worker would find no set there).
"""

from __future__ import annotations

import ast
import random
import struct

import pytest

import frames as F
from conftest import nf_path
from nfos.testing import Harness

SETS_NF = nf_path("icmp_sets.py")
REWRITE_NF = nf_path("rewrite_icmp.py")
LAN_HOST, REMOTE, ROUTER = "10.0.0.5", "192.0.2.7", "198.51.100.254"
WORKERS = pytest.mark.parametrize("workers", [0, 2])


def udp_packet(src=LAN_HOST, dst=REMOTE, sport=40000, dport=53, payload=b"query", **ip_kw) -> bytes:
    """An IPv4/UDP packet (no Ethernet header), checksums from scratch."""
    return F.ipv4(src, dst, F.PROTO_UDP, F.udp(src, dst, sport, dport, payload), **ip_kw)


def tcp_packet(src=LAN_HOST, dst=REMOTE, sport=40000, dport=80, **kw) -> bytes:
    ip_kw = {k: kw.pop(k) for k in ("options", "ident", "df") if k in kw}
    return F.ipv4(src, dst, F.PROTO_TCP, F.tcp(src, dst, sport, dport, **kw), **ip_kw)


def echo_packet(src=LAN_HOST, dst=REMOTE, icmp_type=8, ident=0x4242, seq=1) -> bytes:
    return F.ipv4(src, dst, F.PROTO_ICMP, F.icmp(icmp_type, 0, ident, seq, b"ping-payload"))


def quote_of(packet: bytes, extra: int = 8) -> bytes:
    """What an ICMP error quotes: the IPv4 header and ``extra`` bytes of data (RFC 792)."""
    return packet[:(packet[0] & 15) * 4 + extra]


def fields(out):
    assert len(out) == 1 and out[0][0] == "wan", out
    return ast.literal_eval(out[0][1].decode())


# ------------------------------------------------------------------ pkt.icmp

def test_echo_fields():
    frame = F.icmp_frame(F.IP_A, F.IP_B, 8, 0, ident=0x1234, seq=7, payload=b"x" * 20)
    with Harness(SETS_NF, params={"key": "ports"}) as h:
        got = fields(h.send("lan", frame))
    assert got["icmp"] == {"type": 8, "code": 0, "id": 0x1234, "seq": 7, "mtu": None, "inner": None}


def test_fragmentation_needed_quoting_tcp_with_options():
    original = tcp_packet(sport=40001, dport=443, options=b"\x01\x01\x01\x01", ident=9, df=True, seq=5,
                          payload=b"z" * 100)
    frame = F.icmp_error_frame(ROUTER, LAN_HOST, 3, 4, quote_of(original, 20), rest=1400)
    with Harness(SETS_NF, params={"key": "ports"}) as h:
        got = fields(h.send("wan", frame))["icmp"]
    qcsum = struct.unpack_from("!H", original, 24 + 16)[0]
    assert got == {"type": 3, "code": 4, "id": None, "seq": None, "mtu": 1400, "inner": {
        "ip": {"src": F.ip_int(LAN_HOST), "dst": F.ip_int(REMOTE), "proto": 6, "ihl": 6, "len": len(original),
               "checksum": struct.unpack_from("!H", original, 10)[0], "fragment": False, "frag_offset": 0,
               "options": b"\x01\x01\x01\x01"},
        "l4": {"sport": 40001, "dport": 443, "checksum": qcsum}, "tcp": True, "udp": False, "icmp": None,
        "len": 24 + 20}}


@pytest.mark.parametrize("cut,l4,checksum", [(28, True, None), (37, True, None), (38, True, "tcp"), (24, False, None),
                                             (20, False, None), (19, None, None)])
def test_truncated_quotes(cut, l4, checksum):
    """8 bytes of TCP quoted: ports, no checksum; fewer: no L4 view; less than an IPv4 header: no quote."""
    original = tcp_packet(payload=b"data")
    frame = F.icmp_error_frame(ROUTER, LAN_HOST, 11, 0, original[:cut])
    with Harness(SETS_NF, params={"key": "addrs"}) as h:
        got = fields(h.send("wan", frame))["icmp"]
    if l4 is None:
        assert got["inner"] is None and got["type"] == 11
        return
    inner = got["inner"]
    assert inner["ip"]["src"] == F.ip_int(LAN_HOST) and inner["len"] == cut
    if not l4:
        assert inner["l4"] is None and not inner["tcp"]
    else:
        assert inner["l4"]["sport"] == 40000
        assert inner["l4"]["checksum"] == (struct.unpack_from("!H", original, 36)[0] if checksum else None)


def test_quotes_of_udp_echo_fragments_and_bad_headers():
    udp = udp_packet()
    echo = echo_packet()
    later = F.ipv4(LAN_HOST, REMOTE, F.PROTO_UDP, b"\x00" * 16, frag_offset=8)
    v6 = bytes([0x60]) + udp[1:28]
    with Harness(SETS_NF, params={"key": "addrs"}) as h:
        u = fields(h.send("wan", F.icmp_error_frame(REMOTE, LAN_HOST, 3, 3, quote_of(udp))))["icmp"]["inner"]
        e = fields(h.send("wan", F.icmp_error_frame(ROUTER, LAN_HOST, 11, 0, quote_of(echo))))["icmp"]["inner"]
        f = fields(h.send("wan", F.icmp_error_frame(ROUTER, LAN_HOST, 12, 0, quote_of(later), rest=8 << 24)))
        b = fields(h.send("wan", F.icmp_error_frame(ROUTER, LAN_HOST, 3, 1, v6)))
        t = fields(h.send("wan", F.icmp_frame(ROUTER, LAN_HOST, 13, 0, ident=5, seq=6, payload=quote_of(udp))))
    assert u["udp"] and u["l4"] == {"sport": 40000, "dport": 53, "checksum": struct.unpack_from("!H", udp, 26)[0]}
    assert e["icmp"] == {"type": 8, "code": 0, "id": 0x4242, "seq": 1, "checksum": struct.unpack_from("!H", echo, 22)[0]}
    assert e["l4"] is None
    assert f["icmp"]["inner"]["ip"]["fragment"] and f["icmp"]["inner"]["ip"]["frag_offset"] == 8
    assert f["icmp"]["inner"]["l4"] is None
    assert b["icmp"]["inner"] is None and b["icmp"]["type"] == 3
    assert t["icmp"]["inner"] is None and (t["icmp"]["id"], t["icmp"]["seq"]) == (5, 6)   # a timestamp: no quote


# ------------------------------------------------------------------ rewrites

def rewrite(settings: dict[str, int], frame: bytes, workers: int = 0) -> bytes:
    spec = ",".join(f"{k}={v}" for k, v in settings.items())
    with Harness(REWRITE_NF, workers=workers, params={"set": spec}) as h:
        out = h.send("lan", frame)
    assert len(out) == 1 and out[0][0] == "wan"
    F.assert_icmp_checksums_valid(out[0][1])
    return out[0][1]


PUBLIC = F.ip_int("203.0.113.1")


@pytest.mark.parametrize("workers", [0, 2])
def test_rewrite_echo_identifier(workers):
    frame = F.icmp_frame(PUBLIC, REMOTE, 8, 0, ident=1024, seq=3, payload=b"abc")
    assert rewrite({"id": 0x4242}, frame, workers) == F.icmp_frame(PUBLIC, REMOTE, 8, 0, ident=0x4242, seq=3,
                                                                   payload=b"abc")


@pytest.mark.parametrize("extra", [8, 18, 20, 60])
@pytest.mark.parametrize("proto", ["tcp", "udp", "udp0"])
def test_rewrite_quoted_endpoint_like_a_nat(proto, extra):
    """A NAT's reverse translation of an error (RFC 5508 REQ-4): the quoted source address and port
    become the internal endpoint again; the quoted IPv4 checksum, the quoted TCP/UDP checksum where
    quoted, and the ICMP checksum equal a from-scratch computation."""
    def original(src, sport):
        if proto == "tcp":
            return tcp_packet(src, REMOTE, sport, 80, seq=77, options=b"\x02\x04\x05\xb4", payload=b"p" * 40,
                              ident=5)
        return F.ipv4(src, REMOTE, F.PROTO_UDP, F.udp(src, REMOTE, sport, 53, b"q" * 40, with_checksum=proto == "udp"),
                      ident=5, options=b"\x01\x01\x01\x01")
    translated, internal = original(PUBLIC, 1024), original(F.ip_int(LAN_HOST), 40000)
    frame = F.icmp_error_frame(REMOTE, PUBLIC, 3, 3, quote_of(translated, extra), vlan=7)
    want = F.icmp_error_frame(REMOTE, PUBLIC, 3, 3, quote_of(internal, extra), vlan=7)
    assert rewrite({"qsrc": F.ip_int(LAN_HOST), "qsport": 40000}, frame) == want


def test_rewrite_quoted_destination_and_echo_identifier():
    def original(dst, ident):
        return F.ipv4(LAN_HOST, dst, F.PROTO_ICMP, F.icmp(8, 0, ident, 9, b"0123456789"), ttl=1)
    frame = F.icmp_error_frame(ROUTER, LAN_HOST, 11, 0, quote_of(original(PUBLIC, 1024)))
    want = F.icmp_error_frame(ROUTER, LAN_HOST, 11, 0, quote_of(original(F.ip_int(REMOTE), 77)))
    assert rewrite({"qdst": F.ip_int(REMOTE), "qid": 77}, frame) == want


def quoted_packet(proto, opts, seq, src, dst, sport, dport):
    if proto == "tcp":
        return F.ipv4(src, dst, F.PROTO_TCP, F.tcp(src, dst, sport, dport, seq=seq, payload=b"x" * 5), options=opts)
    return F.ipv4(src, dst, F.PROTO_UDP, F.udp(src, dst, sport, dport, b"y" * 3), options=opts)


def test_rewrite_random_quotes_exact_bytes():
    rng = random.Random(12)
    for _ in range(40):
        proto = rng.choice(["tcp", "udp"])
        opts = bytes(rng.choice([0, 4, 8, 40]))
        values = [rng.choice([0, 1, 0xFFFF, rng.randrange(65536)]) for _ in range(2)]
        addrs = [rng.getrandbits(32) for _ in range(4)]

        seq = rng.getrandbits(32)
        before = quoted_packet(proto, opts, seq, addrs[0], addrs[1], 1000, 2000)
        after = quoted_packet(proto, opts, seq, addrs[2], addrs[3], values[0], values[1])
        extra = rng.choice([8, 18, 20])
        frame = F.icmp_error_frame(ROUTER, LAN_HOST, 3, 3, quote_of(before, extra))
        want = F.icmp_error_frame(ROUTER, LAN_HOST, 3, 3, quote_of(after, extra))
        got = rewrite({"qsrc": addrs[2], "qdst": addrs[3], "qsport": values[0], "qdport": values[1]}, frame)
        assert got == want


def test_setting_the_id_of_an_error_is_an_error():
    frame = F.icmp_error_frame(ROUTER, LAN_HOST, 3, 3, quote_of(udp_packet()))
    with Harness(REWRITE_NF, params={"set": "id=5"}) as h:
        assert h.send("lan", frame) == []
        assert h.stats()["handler_errors"] == 1


# ------------------------------------------------------------------ keying

def event(out) -> tuple[str, str, int | None]:
    got = fields(out)
    return got["event"], got["dev"], got["n"]


@WORKERS
@pytest.mark.parametrize("key", ["ports", "proto", "addrs"])
def test_errors_reach_the_session_they_quote(workers, key):
    """Errors arriving on WAN about LAN packets (UDP, TCP, echo; IP options in both headers) are
    handled as packets of the LAN packet's set, on its worker; errors about nothing are new sets."""
    with Harness(SETS_NF, workers=workers, params={"key": key}) as h:
        for i in range(12):
            src = f"10.0.{i}.{i + 1}"
            original = [udp_packet(src, REMOTE, 40000 + i, 53), tcp_packet(src, REMOTE, 41000 + i, 443),
                        echo_packet(src, REMOTE, ident=500 + i)][i % 3]
            if key == "addrs" and i % 3:
                src = f"10.1.{i}.{i + 1}"   # addresses only: a new host pair per session
                original = udp_packet(src, REMOTE, 40000 + i, 53)
            assert event(h.send("lan", F.ether() + original)) == ("new", "lan", 1)
            err = F.icmp_error_frame(ROUTER, src, 3, 4, quote_of(original), rest=1400, ip_options=b"\x01" * 4)
            assert event(h.send("wan", err)) == ("packet", "wan", 2)
            ttl = F.icmp_error_frame(REMOTE, src, 11, 0, quote_of(original, 40))
            assert event(h.send("wan", ttl)) == ("packet", "wan", 3)
        stranger = F.icmp_error_frame(ROUTER, LAN_HOST, 3, 3, quote_of(udp_packet(LAN_HOST, "192.0.2.99", 1, 2)))
        assert event(h.send("wan", stranger))[0] == "new"


@WORKERS
def test_echo_is_one_session_per_identifier_and_expires(workers):
    with Harness(SETS_NF, workers=workers, params={"key": "ports", "expiry": "10s"}) as h:
        req = [F.ether() + echo_packet(ident=i) for i in range(6)]
        rep = [F.ether() + echo_packet(REMOTE, LAN_HOST, 0, ident=i) for i in range(6)]
        for i in range(6):
            assert event(h.send("lan", req[i])) == ("new", "lan", 1)
            assert event(h.send("wan", rep[i])) == ("packet", "wan", 2)
        h.advance(5)
        assert event(h.send("wan", rep[0], time=5)) == ("packet", "wan", 3)
        h.advance(11)   # idle for 10 s: every echo session expires
        assert event(h.send("wan", rep[0])) == ("new", "wan", 1)
        assert h.stats()["packet_sets_expired"] == 6


@WORKERS
@pytest.mark.parametrize("key,other_icmp", [("ports", "orphan"), ("addrs", "new")])
def test_icmp_without_a_session_key(workers, key, other_icmp):
    """A timestamp request and echo with a short header have no identifier: orphans when the key has
    ports, keyed by their addresses when not; an error quoting less than an IPv4 header is an orphan."""
    udp = udp_packet()
    with Harness(SETS_NF, workers=workers, params={"key": key}) as h:
        ts = F.icmp_frame(LAN_HOST, REMOTE, 13, 0, ident=1, seq=1, payload=bytes(12))
        assert event(h.send("lan", ts))[0] == other_icmp
        short = F.ipv4_frame(LAN_HOST, REMOTE, F.PROTO_ICMP, bytes([8, 0, 0xF7, 0xFF]))
        assert event(h.send("lan", short))[0] in (other_icmp, "packet")
        cut = F.icmp_error_frame(ROUTER, LAN_HOST, 3, 3, udp[:24])   # the header and 4 bytes of UDP
        # no ports quoted: an orphan for a key with ports; without, the set of the quoted address pair
        assert event(h.send("wan", cut))[0] == ("orphan" if key == "ports" else "packet")
        assert event(h.send("wan", F.icmp_error_frame(ROUTER, LAN_HOST, 3, 3, udp[:19])))[0] == "orphan"


@WORKERS
def test_icmp_is_not_keyed_without_icmp_in_protocols(workers):
    """Definitions whose protocols do not list "icmp" see ICMP as before: orphans."""
    original = udp_packet()
    with Harness(SETS_NF, workers=workers, params={"key": "ports", "protocols": "tcp,udp"}) as h:
        assert event(h.send("lan", F.ether() + original)) == ("new", "lan", 1)
        assert event(h.send("wan", F.icmp_error_frame(ROUTER, LAN_HOST, 3, 3, quote_of(original))))[0] == "orphan"
        assert event(h.send("lan", F.ether() + echo_packet()))[0] == "orphan"


def test_a_rolled_back_rewrite_of_a_deep_quote_is_undone():
    """A batch rolled back (a handler error) restores every byte a quoted-header setter changed, the
    deepest too: behind a VLAN tag and two 60-byte IPv4 headers, the quoted TCP checksum ends at
    byte 164.  Replayed sequentially, the error and a UDP packet that raises share a batch; re-run
    alone, the error is rewritten once."""
    from nfos.io.capture import Trace
    from nfos.runtime.replay import replay

    opts = bytes([1]) * 40

    def original(src, sport):
        return F.ipv4(src, REMOTE, F.PROTO_TCP, F.tcp(src, REMOTE, sport, 80, seq=1, payload=b"x" * 30), options=opts)
    before, after = original(F.ip_int(LAN_HOST), 40000), original(F.ip_int(LAN_HOST) + 1, 40001)
    err = F.icmp_error_frame(ROUTER, LAN_HOST, 3, 4, quote_of(before, 20), rest=1400, vlan=5, ip_options=opts)
    want = F.icmp_error_frame(ROUTER, LAN_HOST, 3, 4, quote_of(after, 20), rest=1400, vlan=5, ip_options=opts)
    assert len(err) > 164
    udp = F.udp_frame(LAN_HOST, REMOTE, 1, 2)
    trace = Trace(["lan", "wan"], [err, udp], [1000, 1001], [0, 0], [])
    r = replay(REWRITE_NF, trace, workers=0, keep_output=True, params=["set=qinc=1", "raise_udp=true"])
    assert r.stats["handler_errors"] == 1
    assert r.outputs["wan"] == [want]
