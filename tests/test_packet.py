"""The packet view: header fields read in place, rewrites with checksum updates, output decisions.

Every test runs small NF files (tests/nf/nfs/) in the test Harness.  The
``fields`` NF reports what a handler reads by emitting ``repr(dict)`` as a
frame, so nothing is stored in the NF.
"""

import ast
import random
import struct

import pytest

import frames as F
from conftest import nf_path
from nfos.io.gen import gen_caida
from nfos.testing import Harness

FIELDS_NF = nf_path("fields.py")
REWRITE_NF = nf_path("rewrite.py")
REWRITE_PAYLOAD_NF = nf_path("rewrite_payload.py")
OUTPUTS_NF = nf_path("outputs.py")


def read_fields(h, dev, frame, time=None):
    out = h.send(dev, frame, time=time)
    assert len(out) == 1 and out[0][0] == "wan", out
    return ast.literal_eval(out[0][1].decode())


def l4_dict(sport, dport, flags, seq, ack, window, checksum, length):
    return {"sport": sport, "dport": dport, "flags": flags, "seq": seq, "ack": ack, "window": window,
            "checksum": checksum, "len": length}


def ip_dict(frame, **kw):
    base = {"src": F.ip_int(F.IP_A), "dst": F.ip_int(F.IP_B), "proto": 0, "ttl": 64, "tos": 0, "len": 0,
            "id": 0, "ihl": 5, "checksum": F.ipv4_checksums(frame)[0], "options": b"", "fragment": False,
            "df": False, "mf": False, "frag_offset": 0}
    base.update(kw)
    return base


def eth_dict(ethertype=F.ETH_IPV4, vlan=None, src=F.MAC_A, dst=F.MAC_B):
    return {"src": F.mac_int(src), "dst": F.mac_int(dst), "type": ethertype, "vlan": vlan}


def report(frame, dev="lan", dev_index=0, time=0, payload=b"", eth=None, ip=None, tcp=None, udp=None,
           icmp=None):
    return {"dev": dev, "dev_index": dev_index, "len": len(frame), "time": time, "payload": payload,
            "frame": frame, "out": None, "eth": eth or eth_dict(), "ip": ip, "tcp": tcp, "udp": udp,
            "l4": tcp or udp, "icmp": icmp}


# --------------------------------------------------------------- the helpers themselves

def test_frame_helpers_compute_known_checksums():
    # the classic RFC 1071 style example header: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert F.checksum(hdr) == 0xB861
    assert F.ipv4("192.168.0.1", "192.168.0.199", 17, b"\0" * 95, df=True)[:20] == bytes.fromhex(
        "45000073000040004011b861c0a80001c0a800c7")
    # frames from nfos' own generator verify; a flipped byte does not
    trace = gen_caida(50, 10, reverse=0.5, seed=3)
    for frame in trace.frames:
        F.assert_checksums_valid(frame)
    bad = bytearray(trace.frames[0])
    bad[30] ^= 1   # a destination address byte: both checksums cover it
    assert F.ipv4_checksums(bytes(bad))[0] != F.ipv4_checksums(bytes(bad))[1]
    with pytest.raises(AssertionError, match="IPv4 checksum"):
        F.assert_checksums_valid(bytes(bad))
    assert F.l4_checksums(F.udp_frame(with_checksum=False)) == (0, 0)


# --------------------------------------------------------------- reading fields

@pytest.mark.parametrize("workers", [0, 2])
def test_tcp_with_vlan_and_options_fields(workers):
    seg = F.tcp(F.IP_A, F.IP_B, 40001, 443, seq=0x01020304, ack=0xA0B0C0D0, flags=F.PSH | F.ACK, window=4096,
                options=b"\x02\x04\x05\xb4", payload=b"hello")
    frame = F.ether(vlan=291, pcp=5) + F.ipv4(F.IP_A, F.IP_B, F.PROTO_TCP, seg, ttl=17, tos=0x2E,
                                               ident=0xBEEF, df=True, options=b"\x94\x04\x00\x00")
    assert len(frame) == 18 + 24 + 24 + 5
    with Harness(FIELDS_NF, workers=workers) as h:
        got = read_fields(h, "lan", frame, time=2.500000001)
    tcp = l4_dict(40001, 443, 0x18, 0x01020304, 0xA0B0C0D0, 4096, F.l4_checksums(frame)[0], 29)
    assert got == report(frame, time=2_500_000_001, payload=b"hello", eth=eth_dict(vlan=291),
                         ip=ip_dict(frame, proto=6, ttl=17, tos=0x2E, len=53, id=0xBEEF, ihl=6,
                                    options=b"\x94\x04\x00\x00", df=True),
                         tcp=tcp)


def test_udp_fields_and_padding_excluded_from_payload():
    frame = F.udp_frame("10.0.0.9", "198.51.100.20", 5353, 53, b"xyz", ident=77, ttl=1)
    assert len(frame) == 60   # 45 bytes of headers and data, 15 of Ethernet padding
    with Harness(FIELDS_NF) as h:
        got = read_fields(h, "wan", frame, time=7)
    udp = l4_dict(5353, 53, 0, None, None, None, F.l4_checksums(frame)[0], 11)
    assert got == report(frame, dev="wan", dev_index=1, time=7_000_000_000, payload=b"xyz",
                         ip=ip_dict(frame, src=0x0A000009, dst=0xC6336414, proto=17, ttl=1, len=31, id=77),
                         udp=udp)


def test_icmp_fields():
    frame = F.icmp_frame(icmp_type=8, code=0, ident=0x1234, seq=9, payload=b"ping")
    short = F.ipv4_frame(proto=F.PROTO_ICMP, l4=bytes([3, 1, 0xAB, 0xCD]))   # 4 bytes: no id/seq
    with Harness(FIELDS_NF) as h:
        got = read_fields(h, "lan", frame)
        got_short = read_fields(h, "lan", short)
    icmp = {"type": 8, "code": 0, "checksum": struct.unpack_from("!H", frame, 36)[0], "id": 0x1234, "seq": 9}
    assert F.checksum(frame[34:46]) == 0   # the helper built a valid ICMP checksum
    assert got == report(frame, payload=b"ping", ip=ip_dict(frame, proto=1, len=32), icmp=icmp)
    assert got_short == report(short, payload=b"", ip=ip_dict(short, proto=1, len=24),
                               icmp={"type": 3, "code": 1, "checksum": 0xABCD, "id": None, "seq": None})


def test_arp_has_no_ip_header():
    frame = F.arp_frame("10.0.0.1", "10.0.0.254", op=1)
    with Harness(FIELDS_NF) as h:
        got = read_fields(h, "lan", frame)
    assert got == report(frame, payload=frame[14:], eth=eth_dict(F.ETH_ARP, dst="ff:ff:ff:ff:ff:ff"))


def test_fragments():
    first = F.tcp_frame(mf=True, ident=7, payload=b"abc")
    later = F.ipv4_frame(proto=F.PROTO_TCP, l4=bytes(range(16)), frag_offset=1480, ident=7)
    later_udp = F.ipv4_frame(proto=F.PROTO_UDP, l4=bytes(range(8)), frag_offset=8, mf=True, ident=8)
    with Harness(FIELDS_NF) as h:
        got_first = read_fields(h, "lan", first)
        got_later = read_fields(h, "lan", later)
        got_later_udp = read_fields(h, "lan", later_udp)
    tcp = l4_dict(40000, 80, F.ACK, 0, 0, 65535, F.l4_checksums(first)[0], 23)
    assert got_first == report(first, payload=b"abc", tcp=tcp,
                               ip=ip_dict(first, proto=6, len=43, id=7, fragment=True, mf=True))
    # a later fragment has no L4 header: its payload is everything after the IP header
    assert got_later == report(later, payload=bytes(range(16)),
                               ip=ip_dict(later, proto=6, len=36, id=7, fragment=True, frag_offset=1480))
    assert got_later_udp == report(later_udp, payload=bytes(range(8)),
                                   ip=ip_dict(later_udp, proto=17, len=28, id=8, fragment=True, mf=True,
                                              frag_offset=8))


def test_vlan_id_ignores_priority_bits():
    frame = F.ether(vlan=4095, pcp=7, ethertype=F.ETH_ARP) + bytes(46)
    with Harness(FIELDS_NF) as h:
        got = read_fields(h, "lan", frame)
    assert got["eth"] == eth_dict(F.ETH_ARP, vlan=4095)
    assert got["ip"] is None and got["payload"] == bytes(46)


# --------------------------------------------------------------- rewriting

NEW = {"eth_src": "02:aa:bb:cc:dd:ee", "src": "198.51.100.1", "dst": "203.0.113.10", "tos": 0xB8,
       "sport": 1111, "dport": 2222, "flags": 0x12}


def test_rewrite_all_fields_tcp_exact_bytes():
    def build(src, dst, sport, dport, ttl, tos, flags, eth_src):
        seg = F.tcp(src, dst, sport, dport, seq=99, ack=7, flags=flags, window=512, options=b"\x01\x01\x01\x01",
                    payload=b"payload!")
        return F.ether(F.MAC_B, eth_src, vlan=12) + F.ipv4(src, dst, F.PROTO_TCP, seg, ttl=ttl, tos=tos,
                                                          ident=3, df=True, options=b"\x01\x01\x01\x00")

    frame = build(F.IP_A, F.IP_B, 40000, 80, 64, 0, F.ACK, F.MAC_A)
    expected = build(NEW["src"], NEW["dst"], NEW["sport"], NEW["dport"], 63, NEW["tos"], NEW["flags"],
                     NEW["eth_src"])
    with Harness(REWRITE_NF) as h:
        out = h.send("lan", frame)
    assert out == [("wan", expected)]
    F.assert_checksums_valid(out[0][1])


def test_rewrite_all_fields_udp_exact_bytes():
    frame = F.udp_frame(F.IP_A, F.IP_B, 5000, 53, b"query", ttl=2)
    expected = F.udp_frame(NEW["src"], NEW["dst"], NEW["sport"], NEW["dport"], b"query", ttl=1, tos=NEW["tos"],
                           eth_src=NEW["eth_src"])
    with Harness(REWRITE_NF) as h:
        out = h.send("lan", frame)
    assert out == [("wan", expected)]
    F.assert_checksums_valid(out[0][1])


@pytest.mark.parametrize("field", ["eth_src", "ip_src", "ip_dst", "ttl", "tos", "sport", "dport", "flags"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_rewrite_one_field(field, proto):
    kw = {"src": F.IP_A, "dst": F.IP_B, "sport": 40000, "dport": 80, "ttl": 64, "tos": 0, "eth_src": F.MAC_A}
    if proto == "tcp":
        kw["flags"] = F.SYN
    original = dict(kw)
    new = {"eth_src": ("eth_src", NEW["eth_src"]), "ip_src": ("src", NEW["src"]), "ip_dst": ("dst", NEW["dst"]),
           "ttl": ("ttl", 63), "tos": ("tos", NEW["tos"]), "sport": ("sport", NEW["sport"]),
           "dport": ("dport", NEW["dport"]), "flags": ("flags", NEW["flags"])}[field]
    if proto == "tcp" or field != "flags":
        kw[new[0]] = new[1]
    build = F.tcp_frame if proto == "tcp" else F.udp_frame
    with Harness(REWRITE_NF, params={"fields": field}) as h:
        out = h.send("lan", build(**original))
    assert out == [("wan", build(**kw))]
    F.assert_checksums_valid(out[0][1])


def test_udp_without_checksum_keeps_zero():
    frame = F.udp_frame(F.IP_A, F.IP_B, 5000, 53, b"data", with_checksum=False)
    expected = F.udp_frame(NEW["src"], NEW["dst"], NEW["sport"], NEW["dport"], b"data", with_checksum=False,
                           ttl=63, tos=NEW["tos"], eth_src=NEW["eth_src"])
    with Harness(REWRITE_NF) as h:
        out = h.send("lan", frame)
    assert out == [("wan", expected)]
    assert struct.unpack_from("!H", out[0][1], 40)[0] == 0
    F.assert_checksums_valid(out[0][1])


REQUEST = struct.Struct("!BIIBBHHB")   # the rewrite_payload NF's request: mask, src, dst, ttl, tos, ports, flags


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("which", ["after", "before"])
def test_rewrite_checksum_edge_values(proto, which):
    """The L4 checksum that ends (or starts) at the one's-complement edge: TCP 0x0000, UDP 0xFFFF."""
    build = F.tcp_frame if proto == "tcp" else F.udp_frame
    old = {"src": F.IP_A, "sport": 1234}
    new = {"src": "198.51.100.1", "sport": 4321}
    req = REQUEST.pack(1 | 16, F.ip_int(new["src"]), 0, 0, 0, new["sport"], 0, 0)   # 16 bytes: even
    target = new if which == "after" else old
    probe = build(**target, payload=req + b"\0\0")
    word = F.l4_checksums(probe)[1]
    if proto == "udp" and word == 0xFFFF:
        word = 0
    payload = req + struct.pack("!H", word)   # makes the sum all ones: checksum 0 (UDP sends 0xFFFF)
    frame, expected = build(**old, payload=payload), build(**new, payload=payload)
    edge = 0x0000 if proto == "tcp" else 0xFFFF
    assert F.l4_checksums(expected if which == "after" else frame)[0] == edge
    with Harness(REWRITE_PAYLOAD_NF) as h:
        out = h.send("lan", frame)
    assert out == [("wan", expected)]
    F.assert_checksums_valid(out[0][1])


def test_rewrite_random_values_exact_bytes():
    rng = random.Random(20240611)
    sent, expected = [], []
    for _ in range(300):
        kind = rng.choice(["tcp", "udp", "udp0"])
        ip_options = rng.choice([b"", b"\x01\x01\x01\x01", bytes(rng.getrandbits(8) for _ in range(8))])
        vlan = rng.choice([None, rng.randrange(4096)])
        mask = rng.getrandbits(7 if kind == "tcp" else 6)
        names = ["src", "dst", "ttl", "tos", "sport", "dport", "flags"]
        bits = [32, 32, 8, 8, 16, 16, 8]
        old = {n: rng.getrandbits(b) for n, b in zip(names, bits, strict=True)}
        new = {n: rng.getrandbits(b) for n, b in zip(names, bits, strict=True)}
        payload = REQUEST.pack(mask, *(new[n] for n in names)) + bytes(rng.getrandbits(8) for _ in range(3))

        def build(v, kind=kind, payload=payload, ip_options=ip_options, vlan=vlan):
            common = {"ttl": v["ttl"], "tos": v["tos"], "ip_options": ip_options, "vlan": vlan}
            if kind == "tcp":
                return F.tcp_frame(v["src"], v["dst"], v["sport"], v["dport"], flags=v["flags"], payload=payload,
                                   **common)
            return F.udp_frame(v["src"], v["dst"], v["sport"], v["dport"], payload, with_checksum=kind == "udp",
                               **common)

        after = {n: (new[n] if mask >> i & 1 else old[n]) for i, n in enumerate(names)}
        sent.append(build(old))
        expected.append(build(after))
    with Harness(REWRITE_PAYLOAD_NF) as h:
        got = [h.send("lan", f) for f in sent]
        assert h.stats()["handler_errors"] == 0
    for g, e in zip(got, expected, strict=True):
        assert g == [("wan", e)]
        F.assert_checksums_valid(g[0][1])


def test_header_setter_errors(write_nf, capfd):
    path = write_nf('''
        import nfos

        nf = nfos.NF("setters", devices=["lan", "wan"])


        @nf.orphan
        def bad(pkt):
            what = pkt.payload[:4]
            if what == b"flag":
                pkt.l4.flags = 1
            elif what == b"t256":
                pkt.ip.ttl = 256
            elif what == b"tstr":
                pkt.ip.ttl = "1"
            elif what == b"port":
                pkt.l4.dport = -1
            elif what == b"mac!":
                pkt.eth.src = 1 << 48
            elif what == b"del!":
                del pkt.ip.ttl
            elif what == b"prot":
                pkt.ip.proto = 17
            pkt.send("wan")
    ''')
    with Harness(path) as h:
        for cmd in (b"flag", b"t256", b"tstr", b"port", b"mac!", b"del!", b"prot"):
            assert h.send("lan", F.udp_frame(payload=cmd)) == []
        assert h.send("lan", F.udp_frame(payload=b"fine")) == [("wan", F.udp_frame(payload=b"fine"))]
        stats = h.stats()
    assert (stats["handler_errors"], stats["dropped"], stats["packets_out"]["wan"]) == (7, 7, 1)
    err = capfd.readouterr().err
    for line, msg in [(10, "AttributeError: only TCP has flags"),
                      (12, "OverflowError: value 256 out of range 0..255"),
                      (14, "TypeError: header fields take ints, got str"),
                      (16, "OverflowError: value -1 out of range 0..65535"),
                      (18, "OverflowError: value 281474976710656 out of range 0..281474976710655"),
                      (20, "AttributeError: header fields cannot be deleted"),
                      (22, "AttributeError: attribute 'proto' of 'nfos.IPv4Header' objects is not writable")]:
        assert f"nfos: handler error at nf.py:{line}: {msg}\n" in err


# --------------------------------------------------------------- L4 views by protocol

def test_views_match_the_protocol():
    with Harness(FIELDS_NF) as h:
        tcp = read_fields(h, "lan", F.tcp_frame())
        udp = read_fields(h, "lan", F.udp_frame())
        icmp = read_fields(h, "lan", F.icmp_frame())
        arp = read_fields(h, "lan", F.arp_frame())
        later = read_fields(h, "lan", F.ipv4_frame(proto=F.PROTO_UDP, l4=bytes(8), frag_offset=16))
    present = {name: [k for k in ("ip", "tcp", "udp", "l4", "icmp") if d[k] is not None]
               for name, d in [("tcp", tcp), ("udp", udp), ("icmp", icmp), ("arp", arp), ("later", later)]}
    assert present == {"tcp": ["ip", "tcp", "l4"], "udp": ["ip", "udp", "l4"], "icmp": ["ip", "icmp"],
                       "arp": [], "later": ["ip"]}


# --------------------------------------------------------------- output decisions

def script(actions: bytes) -> bytes:
    return F.udp_frame(payload=actions)


def test_flood_sends_to_every_other_device():
    frame = script(b"f")
    with Harness(OUTPUTS_NF) as h:
        assert h.send("lan", frame) == [("wan", frame), ("dmz", frame)]
        assert h.send("wan", frame) == [("lan", frame), ("dmz", frame)]
        assert h.send("dmz", frame) == [("lan", frame), ("wan", frame)]
        stats = h.stats()
    assert stats["packets_out"] == {"lan": 2, "wan": 2, "dmz": 2}
    assert (stats["packets_in"], stats["dropped"]) == (3, 0)


@pytest.mark.parametrize(("actions", "devices"), [
    (b"", []),                   # the default is drop
    (b"s", ["wan"]),
    (b"x", []),
    (b"sx", []),                 # the last decision wins
    (b"xs", ["wan"]),
    (b"sd", ["dmz"]),
    (b"ds", ["wan"]),
    (b"fs", ["wan"]),
    (b"sf", ["wan", "dmz"]),
    (b"fx", []),
    (b"i", ["dmz"]),             # send(2): a device index
    (b"l", ["lan"]),             # back out of the input device
])
def test_last_decision_wins(actions, devices):
    frame = script(actions)
    with Harness(OUTPUTS_NF) as h:
        assert h.send("lan", frame) == [(d, frame) for d in devices]
        stats = h.stats()
    assert stats["dropped"] == (0 if devices else 1)
    assert sum(stats["packets_out"].values()) == len(devices)


def test_emit_new_frames():
    frame = script(b"e")
    with Harness(OUTPUTS_NF) as h:
        assert h.send("lan", frame) == [("wan", b"emitted:" + frame)]
        stats = h.stats()
        assert (stats["packets_in"], stats["dropped"], stats["packets_out"]) == (
            1, 1, {"lan": 0, "wan": 1, "dmz": 0})   # the packet itself was dropped
        both = script(b"es")
        assert sorted(h.send("lan", both)) == sorted([("wan", both), ("wan", b"emitted:" + both)])
        everywhere = script(b"a")
        assert h.send("dmz", everywhere) == [("lan", everywhere), ("wan", everywhere), ("dmz", everywhere)]


def test_send_to_unknown_device_is_a_handler_error(capfd):
    with Harness(OUTPUTS_NF) as h:
        assert h.send("lan", script(b"s?")) == []
        stats = h.stats()
    assert (stats["handler_errors"], stats["dropped"], stats["packets_out"]["wan"]) == (1, 1, 0)
    assert ("ValueError: unknown device 'nowhere' (the NF's devices are ('lan', 'wan', 'dmz'))"
            in capfd.readouterr().err)


def test_packet_kept_after_its_handler_returns(capfd):
    """The stale NF raises an exception holding the packet; the runtime formats it after the handler."""
    with Harness(nf_path("stale.py")) as h:
        assert h.send("lan", F.udp_frame()) == []
        assert h.stats()["handler_errors"] == 1
    err = capfd.readouterr().err
    stale = "RuntimeError(this packet's handler has returned; packets are valid only inside it)"
    assert (f"Kept: pkt.len -> {stale}; ip.src -> {stale}; pkt.send -> {stale}; "
            "repr -> <Packet (handler returned)>\n") in err
