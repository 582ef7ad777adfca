"""Build test frames with ``struct`` (no scapy): Ethernet, 802.1Q, IPv4 (options,
fragments), TCP, UDP, ICMP and ARP, with correct checksums; and verify checksums
of a frame from scratch.

Addresses are given as text (``"10.0.0.1"``, ``"02:00:00:00:00:01"``) or ints.
Every ``*_frame`` function returns complete Ethernet frame bytes; frames shorter
than 60 bytes are zero-padded to 60 unless ``pad=False``.
"""

from __future__ import annotations

import struct

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_VLAN = 0x8100
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

MAC_A = "02:00:00:00:00:01"
MAC_B = "02:00:00:00:00:02"
IP_A = "10.0.0.1"
IP_B = "192.0.2.7"


# ----------------------------------------------------------------- addresses

def mac(value: str | int | bytes) -> bytes:
    """A MAC address as 6 bytes."""
    if isinstance(value, bytes):
        assert len(value) == 6
        return value
    if isinstance(value, int):
        return value.to_bytes(6, "big")
    return bytes(int(x, 16) for x in value.split(":"))


def mac_int(value: str | int | bytes) -> int:
    return int.from_bytes(mac(value), "big")


def ip(value: str | int | bytes) -> bytes:
    """An IPv4 address as 4 bytes."""
    if isinstance(value, bytes):
        assert len(value) == 4
        return value
    if isinstance(value, int):
        return value.to_bytes(4, "big")
    return bytes(int(x) for x in value.split("."))


def ip_int(value: str | int | bytes) -> int:
    return int.from_bytes(ip(value), "big")


# ----------------------------------------------------------------- checksums

def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum of ``data`` (odd length padded with a zero byte)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + struct.pack("!BBH", 0, proto, length)


def l4_checksum(src: str | int | bytes, dst: str | int | bytes, proto: int, segment: bytes) -> int:
    """TCP/UDP checksum of ``segment`` (its checksum field must be zero)."""
    c = checksum(_pseudo(ip(src), ip(dst), proto, len(segment)) + segment)
    if proto == PROTO_UDP and c == 0:
        return 0xFFFF  # a computed 0 is sent as all ones (RFC 768)
    return c


# ----------------------------------------------------------------- layers

def ether(dst: str | int | bytes = MAC_B, src: str | int | bytes = MAC_A, ethertype: int = ETH_IPV4,
          vlan: int | None = None, pcp: int = 0) -> bytes:
    """An Ethernet header, with one 802.1Q tag when ``vlan`` is given."""
    if vlan is None:
        return mac(dst) + mac(src) + struct.pack("!H", ethertype)
    return mac(dst) + mac(src) + struct.pack("!HHH", ETH_VLAN, (pcp << 13) | vlan, ethertype)


def ipv4(src: str | int | bytes, dst: str | int | bytes, proto: int, payload: bytes, *, ttl: int = 64,
         tos: int = 0, ident: int = 0, df: bool = False, mf: bool = False, frag_offset: int = 0,
         options: bytes = b"", total_length: int | None = None, ihl: int | None = None,
         version: int = 4, csum: int | None = None) -> bytes:
    """An IPv4 header (with a correct checksum unless ``csum`` is given) followed by ``payload``.

    ``frag_offset`` is in bytes (a multiple of 8); ``options`` is padded to 4 bytes.
    ``total_length`` and ``ihl`` override the computed values (for malformed packets).
    """
    assert frag_offset % 8 == 0
    options = options + b"\0" * (-len(options) % 4)
    hl = 20 + len(options)
    if ihl is None:
        ihl = hl // 4
    if total_length is None:
        total_length = hl + len(payload)
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | (frag_offset // 8)
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, tos, total_length, ident, flags, ttl, proto, 0,
                      ip(src), ip(dst)) + options
    c = checksum(hdr) if csum is None else csum
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def tcp(src: str | int | bytes, dst: str | int | bytes, sport: int, dport: int, *, seq: int = 0,
        ack: int = 0, flags: int = ACK, window: int = 65535, urgent: int = 0, options: bytes = b"",
        payload: bytes = b"") -> bytes:
    """A TCP segment with a correct checksum (the pseudo-header uses ``src``/``dst``)."""
    options = options + b"\0" * (-len(options) % 4)
    doff = (20 + len(options)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, urgent) + options + payload
    c = l4_checksum(src, dst, PROTO_TCP, seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(src: str | int | bytes, dst: str | int | bytes, sport: int, dport: int, payload: bytes = b"", *,
        with_checksum: bool = True) -> bytes:
    """A UDP datagram; ``with_checksum=False`` sends checksum 0 ("none")."""
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if not with_checksum:
        return seg
    c = l4_checksum(src, dst, PROTO_UDP, seg)
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def icmp(icmp_type: int = 8, code: int = 0, ident: int = 0, seq: int = 0, payload: bytes = b"") -> bytes:
    """An ICMP message (echo layout: type, code, checksum, id, seq) with a correct checksum."""
    msg = struct.pack("!BBHHH", icmp_type, code, 0, ident, seq) + payload
    return msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]


def pad(frame: bytes, size: int = 60) -> bytes:
    """Zero-pad a frame to the Ethernet minimum (without FCS)."""
    return frame + b"\0" * max(0, size - len(frame))


# ----------------------------------------------------------------- frames

_IP_KEYS = ("ttl", "tos", "ident", "df", "mf", "frag_offset", "total_length", "ihl", "version", "csum")
_IP_FRAME_KEYS = (*_IP_KEYS, "ip_options")


def _split_ip(kw: dict) -> dict:
    """Take the IPv4 keywords out of ``kw`` (``ip_options`` becomes the header's ``options``)."""
    out = {k: kw.pop(k) for k in _IP_KEYS if k in kw}
    if "ip_options" in kw:
        out["options"] = kw.pop("ip_options")
    return out


def ipv4_frame(src: str = IP_A, dst: str = IP_B, proto: int = 253, l4: bytes = b"", *,
               eth_src: str | int | bytes = MAC_A, eth_dst: str | int | bytes = MAC_B,
               vlan: int | None = None, do_pad: bool = True, **ip_kw) -> bytes:
    """Ethernet + IPv4 header + ``l4`` bytes (already built); IP keywords as for :func:`ipv4`
    (``ip_options`` for its options)."""
    ip_args = _split_ip(ip_kw)
    if ip_kw:
        raise TypeError(f"unknown keyword(s) {sorted(ip_kw)}")
    f = ether(eth_dst, eth_src, ETH_IPV4, vlan) + ipv4(src, dst, proto, l4, **ip_args)
    return pad(f) if do_pad else f


def tcp_frame(src: str = IP_A, dst: str = IP_B, sport: int = 40000, dport: int = 80, *,
              eth_src: str | int | bytes = MAC_A, eth_dst: str | int | bytes = MAC_B, vlan: int | None = None,
              do_pad: bool = True, **kw) -> bytes:
    """A complete Ethernet/IPv4/TCP frame.  TCP keywords: seq, ack, flags, window, urgent, options,
    payload; IP keywords: ttl, tos, ident, df, mf, frag_offset, ip_options, total_length, ihl."""
    ip_kw = {k: kw.pop(k) for k in _IP_FRAME_KEYS if k in kw}
    seg = tcp(src, dst, sport, dport, **kw)
    return ipv4_frame(src, dst, PROTO_TCP, seg, eth_src=eth_src, eth_dst=eth_dst, vlan=vlan, do_pad=do_pad,
                      **ip_kw)


def udp_frame(src: str = IP_A, dst: str = IP_B, sport: int = 40000, dport: int = 53, payload: bytes = b"", *,
              with_checksum: bool = True, eth_src: str | int | bytes = MAC_A, eth_dst: str | int | bytes = MAC_B,
              vlan: int | None = None, do_pad: bool = True, **ip_kw) -> bytes:
    """A complete Ethernet/IPv4/UDP frame."""
    seg = udp(src, dst, sport, dport, payload, with_checksum=with_checksum)
    return ipv4_frame(src, dst, PROTO_UDP, seg, eth_src=eth_src, eth_dst=eth_dst, vlan=vlan, do_pad=do_pad,
                      **ip_kw)


def icmp_frame(src: str = IP_A, dst: str = IP_B, icmp_type: int = 8, code: int = 0, ident: int = 0,
               seq: int = 0, payload: bytes = b"", *, eth_src: str | int | bytes = MAC_A,
               eth_dst: str | int | bytes = MAC_B, vlan: int | None = None, do_pad: bool = True,
               **ip_kw) -> bytes:
    """A complete Ethernet/IPv4/ICMP frame."""
    msg = icmp(icmp_type, code, ident, seq, payload)
    return ipv4_frame(src, dst, PROTO_ICMP, msg, eth_src=eth_src, eth_dst=eth_dst, vlan=vlan, do_pad=do_pad,
                      **ip_kw)


def arp_frame(sender_ip: str = IP_A, target_ip: str = IP_B, *, eth_src: str | int | bytes = MAC_A,
              eth_dst: str | int | bytes = "ff:ff:ff:ff:ff:ff", op: int = 1, vlan: int | None = None) -> bytes:
    """An ARP request (or reply with ``op=2``), padded to 60 bytes."""
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_IPV4, 6, 4, op, mac(eth_src), ip(sender_ip), bytes(6),
                       ip(target_ip))
    return pad(ether(eth_dst, eth_src, ETH_ARP, vlan) + body)


# ----------------------------------------------------------------- parsing / verification

def l3_offset(frame: bytes) -> int:
    """Offset of the layer-3 header (after one optional 802.1Q tag)."""
    return 18 if struct.unpack_from("!H", frame, 12)[0] == ETH_VLAN else 14


def ip_header(frame: bytes) -> bytes:
    off = l3_offset(frame)
    ihl = (frame[off] & 0xF) * 4
    return frame[off:off + ihl]


def ipv4_checksums(frame: bytes) -> tuple[int, int]:
    """(stored, recomputed from scratch) IPv4 header checksum of ``frame``."""
    hdr = bytearray(ip_header(frame))
    stored = struct.unpack_from("!H", hdr, 10)[0]
    hdr[10:12] = b"\0\0"
    return stored, checksum(bytes(hdr))


def l4_checksums(frame: bytes) -> tuple[int, int]:
    """(stored, recomputed from scratch) TCP or UDP checksum of ``frame``.

    For a UDP datagram sent without a checksum (stored 0) the recomputed value is 0 too.
    """
    off = l3_offset(frame)
    hdr = ip_header(frame)
    total = struct.unpack_from("!H", frame, off + 2)[0]
    proto = frame[off + 9]
    seg = bytearray(frame[off + len(hdr):off + total])
    where = {PROTO_TCP: 16, PROTO_UDP: 6}[proto]
    stored = struct.unpack_from("!H", seg, where)[0]
    if proto == PROTO_UDP and stored == 0:
        return 0, 0
    seg[where:where + 2] = b"\0\0"
    return stored, l4_checksum(hdr[12:16], hdr[16:20], proto, bytes(seg))


def assert_checksums_valid(frame: bytes) -> None:
    """Fail unless the IPv4 header checksum and the TCP/UDP checksum equal their recomputation."""
    stored, computed = ipv4_checksums(frame)
    assert stored == computed, f"IPv4 checksum 0x{stored:04x}, recomputed 0x{computed:04x}"
    stored, computed = l4_checksums(frame)
    assert stored == computed, f"L4 checksum 0x{stored:04x}, recomputed 0x{computed:04x}"


# ----------------------------------------------------------------- ICMP errors

ICMP_UNREACH, ICMP_TIME_EXCEEDED, ICMP_PARAM_PROBLEM = 3, 11, 12


def icmp_error_frame(src: str | int | bytes, dst: str | int | bytes, icmp_type: int, code: int, quoted: bytes, *,
                     rest: int = 0, eth_src: str | int | bytes = MAC_A, eth_dst: str | int | bytes = MAC_B,
                     vlan: int | None = None, do_pad: bool = True, **ip_kw) -> bytes:
    """An Ethernet/IPv4/ICMP error (destination unreachable, time exceeded, parameter problem)
    quoting ``quoted`` (IP packet bytes: usually the offending packet's header and first 8 bytes of
    data), with a correct ICMP checksum.  ``rest``: the 32-bit word after the checksum (the next-hop
    MTU for fragmentation needed, RFC 1191; pointer << 24 for a parameter problem)."""
    msg = struct.pack("!BBHI", icmp_type, code, 0, rest) + quoted
    msg = msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]
    return ipv4_frame(src, dst, PROTO_ICMP, msg, eth_src=eth_src, eth_dst=eth_dst, vlan=vlan, do_pad=do_pad,
                      **ip_kw)


def icmp_message(frame: bytes) -> bytes:
    """The ICMP message of an Ethernet/IPv4/ICMP frame (up to the IP total length)."""
    off = l3_offset(frame)
    total = struct.unpack_from("!H", frame, off + 2)[0]
    return frame[off + (frame[off] & 0xF) * 4:off + total]


def assert_icmp_checksums_valid(frame: bytes) -> None:
    """Fail unless the IPv4 header checksum, the ICMP checksum and (for an error) the quoted IPv4
    header's checksum equal their recomputation from scratch."""
    stored, computed = ipv4_checksums(frame)
    assert stored == computed, f"IPv4 checksum 0x{stored:04x}, recomputed 0x{computed:04x}"
    msg = icmp_message(frame)
    assert checksum(msg) == 0, f"ICMP checksum 0x{struct.unpack_from('!H', msg, 2)[0]:04x} is not valid"
    if msg[0] in (ICMP_UNREACH, ICMP_TIME_EXCEEDED, ICMP_PARAM_PROBLEM) and len(msg) >= 28:
        qihl = (msg[8] & 0xF) * 4
        assert checksum(msg[8:8 + qihl]) == 0, "the quoted IPv4 header checksum is not valid"
