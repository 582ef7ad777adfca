"""The firewall as a Python developer would write it without nfos (the baseline peer).

Same contract as ``examples/firewall.py``: LAN->WAN TCP/UDP packets and ICMP
echo are forwarded and open or refresh their session (an echo's identifier
stands for both ports); WAN->LAN TCP/UDP packets and echo replies pass only if
their session exists; ICMP errors (types 3, 11, 12) count as packets of the
session whose header they quote (addresses and ports swapped) and pass
WAN->LAN only to the quoted packet's source; a session expires after
``expiry`` ns (default 60 s) without packets in either direction (checked
lazily, on lookup); ARP passes both ways; other frames are forwarded LAN->WAN
and dropped WAN->LAN.  Frames the nfos parser calls malformed are dropped.

One precompiled ``struct`` unpack per packet and a dict of sessions, one
process.  Times are the packets' timestamps (the clock never goes back, as
in nfos).  Devices are indexes: 0 = lan, 1 = wan.
"""

from __future__ import annotations

import struct

LAN, WAN = 0, 1
MALFORMED, NOT_IP, IP, L4, ECHO, ERROR = range(6)   # IP: no session key (no ports, or other ICMP)
ETH_ARP = 0x0806

# ethertype, version/IHL, total length, fragment field, protocol, src, dst,
# sport, dport, TCP data offset, TCP flags (a plain IPv4 header, no options)
_HDR = struct.Struct("!12xHBxH2xHxB2xIIHH8xBB")
_U16 = struct.Struct("!H")
_IP_PAIR = struct.Struct("!II")


def parse_slow(f: bytes) -> tuple[int, int, int, int, int, int, int]:
    """Any frame, as nfos parses and keys it (802.1Q tag, IP options, fragments, malformed headers,
    ICMP echo and errors): (kind, proto, src, dst, sport, dport, extra).  ``extra`` is the TCP
    flags (L4), the ICMP type (ECHO), 1 if the error is addressed to the quoted packet's source
    (ERROR), the EtherType (NOT_IP).  An ERROR's fields are those of the packet it quotes, swapped."""
    n = len(f)
    if n < 14:
        return MALFORMED, 0, 0, 0, 0, 0, 0
    l3, etype = 14, _U16.unpack_from(f, 12)[0]
    if etype == 0x8100:
        if n < 18:
            return MALFORMED, 0, 0, 0, 0, 0, 0
        l3, etype = 18, _U16.unpack_from(f, 16)[0]
    if etype != 0x0800:
        return NOT_IP, 0, 0, 0, 0, 0, etype
    if n < l3 + 20 or f[l3] >> 4 != 4:
        return MALFORMED, 0, 0, 0, 0, 0, 0
    ihl, total = (f[l3] & 15) * 4, _U16.unpack_from(f, l3 + 2)[0]
    if ihl < 20 or total < ihl or l3 + total > n:
        return MALFORMED, 0, 0, 0, 0, 0, 0
    proto, frag = f[l3 + 9], _U16.unpack_from(f, l3 + 6)[0]
    src, dst = _IP_PAIR.unpack_from(f, l3 + 12)
    if frag & 0x1FFF:   # a later fragment: no L4 header
        return IP, proto, src, dst, 0, 0, 0
    l4, room = l3 + ihl, total - ihl
    if proto == 1:
        return parse_icmp(f, l4, l3 + total, src, dst)
    if proto == 6:
        doff = (f[l4 + 12] >> 4) * 4 if room >= 13 else 0
        ok = room >= 20 and 20 <= doff <= room
    elif proto == 17:
        ok = room >= 8
    else:
        return IP, proto, src, dst, 0, 0, 0
    if not ok:
        return (IP if frag & 0x2000 else MALFORMED), proto, src, dst, 0, 0, 0
    sport, dport = _U16.unpack_from(f, l4)[0], _U16.unpack_from(f, l4 + 2)[0]
    return L4, proto, src, dst, sport, dport, f[l4 + 13] if proto == 6 else 0


def parse_icmp(f: bytes, l4: int, end: int, src: int, dst: int) -> tuple[int, int, int, int, int, int, int]:
    """An ICMP message at ``l4`` (its IP packet ends at ``end``): echo, an error quoting a TCP, UDP or
    echo header (the quoted IPv4 header whole, 8 bytes of its data, not a later fragment), or IP."""
    if l4 + 8 > end:
        return IP, 1, src, dst, 0, 0, 0
    icmp_type = f[l4]
    if icmp_type in (0, 8):
        ident = _U16.unpack_from(f, l4 + 4)[0]
        return ECHO, 1, src, dst, ident, ident, icmp_type
    if icmp_type not in (3, 11, 12):
        return IP, 1, src, dst, 0, 0, 0
    q3 = l4 + 8
    if q3 + 20 > end or f[q3] >> 4 != 4:
        return IP, 1, src, dst, 0, 0, 0
    q4 = q3 + (f[q3] & 15) * 4
    qproto = f[q3 + 9]
    if q4 < q3 + 20 or q4 + 8 > end or _U16.unpack_from(f, q3 + 6)[0] & 0x1FFF:
        return IP, 1, src, dst, 0, 0, 0
    qsrc, qdst = _IP_PAIR.unpack_from(f, q3 + 12)
    if qproto in (6, 17):
        qsport, qdport = _U16.unpack_from(f, q4)[0], _U16.unpack_from(f, q4 + 2)[0]
    elif qproto == 1 and f[q4] in (0, 8):
        qsport = qdport = _U16.unpack_from(f, q4 + 4)[0]
    else:
        return IP, 1, src, dst, 0, 0, 0
    return ERROR, qproto, qdst, qsrc, qdport, qsport, int(dst == qsrc)


def run(frames: list[bytes], devs: list[int], times_ns: list[int],
        expiry: int = 60_000_000_000) -> dict[str, list[bytes]]:
    to_lan: list[bytes] = []
    to_wan: list[bytes] = []
    sessions: dict[tuple[int, int, int, int, int], list[int]] = {}   # -> [last seen, lan flags, wan flags]
    unpack = _HDR.unpack_from
    now = times_ns[0] if times_ns else 0
    for frame, dev, t in zip(frames, devs, times_ns, strict=True):
        if t > now:
            now = t
        n = len(frame)
        if n >= 48:
            etype, vihl, total, frag, proto, src, dst, sport, dport, doff, extra = unpack(frame)
            if not (etype == 0x0800 and vihl == 0x45 and not frag & 0x3FFF and 20 <= total <= n - 14
                    and (proto == 6 and 0x50 <= doff and doff >> 4 << 2 <= total - 20
                         or proto == 17 and total >= 28)):
                kind, proto, src, dst, sport, dport, extra = parse_slow(frame)
            elif proto == 17:
                kind, extra = L4, 0
            else:
                kind = L4
        else:
            kind, proto, src, dst, sport, dport, extra = parse_slow(frame)

        if kind < L4:   # no session: ARP passes both ways, anything else LAN->WAN only
            if dev == LAN and kind != MALFORMED:
                to_wan.append(frame)
            elif kind == NOT_IP and extra == ETH_ARP:
                to_lan.append(frame)
            continue
        flags = extra if kind == L4 else 0
        if dev == LAN:
            key = (src, dst, sport, dport, proto)
            s = sessions.get(key)
            if s is None or expiry and now - s[0] >= expiry:
                if kind == ERROR:   # an error of no live session: passes, opens nothing
                    if s is not None:
                        del sessions[key]   # the expired session is gone, as in nfos
                    to_wan.append(frame)
                    continue
                sessions[key] = [now, flags, 0]
            else:
                s[0] = now
                s[1] |= flags
            to_wan.append(frame)
        else:
            key = (dst, src, dport, sport, proto)
            s = sessions.get(key)
            if s is None:
                continue
            if expiry and now - s[0] >= expiry:
                del sessions[key]
                continue
            s[0] = now
            if kind == L4:
                s[2] |= flags
                to_lan.append(frame)
            elif kind == ECHO and extra == 0 or kind == ERROR and extra:   # an echo reply; a related error
                to_lan.append(frame)
    return {"lan": to_lan, "wan": to_wan}
