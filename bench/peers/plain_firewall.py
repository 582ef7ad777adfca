"""The firewall as a Python developer would write it without nfos (the baseline peer).

Same contract as ``examples/firewall.py``: LAN->WAN TCP/UDP packets are
forwarded and open or refresh their session; WAN->LAN TCP/UDP packets pass
only if their session exists; a session expires after ``expiry`` ns (default
60 s) without packets in either direction (checked lazily, on lookup); other
packets are forwarded LAN->WAN and dropped WAN->LAN.  Frames the nfos parser
calls malformed are dropped.

One precompiled ``struct`` unpack per packet and a dict of sessions, one
process.  Times are the packets' timestamps (the clock never goes back, as
in nfos).  Devices are indexes: 0 = lan, 1 = wan.
"""

from __future__ import annotations

import struct

LAN, WAN = 0, 1
MALFORMED, NOT_IP, IP, L4 = range(4)

# ethertype, version/IHL, total length, fragment field, protocol, src, dst,
# sport, dport, TCP data offset, TCP flags (a plain IPv4 header, no options)
_HDR = struct.Struct("!12xHBxH2xHxB2xIIHH8xBB")
_U16 = struct.Struct("!H")
_IP_PAIR = struct.Struct("!II")


def parse_slow(f: bytes) -> tuple[int, int, int, int, int, int, int]:
    """Any frame, as nfos parses it (802.1Q tag, IP options, fragments, malformed headers):
    (kind, proto, src, dst, sport, dport, tcp flags)."""
    n = len(f)
    if n < 14:
        return MALFORMED, 0, 0, 0, 0, 0, 0
    l3, etype = 14, _U16.unpack_from(f, 12)[0]
    if etype == 0x8100:
        if n < 18:
            return MALFORMED, 0, 0, 0, 0, 0, 0
        l3, etype = 18, _U16.unpack_from(f, 16)[0]
    if etype != 0x0800:
        return NOT_IP, 0, 0, 0, 0, 0, 0
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
            etype, vihl, total, frag, proto, src, dst, sport, dport, doff, flags = unpack(frame)
            if not (etype == 0x0800 and vihl == 0x45 and not frag & 0x3FFF and 20 <= total <= n - 14
                    and (proto == 6 and 0x50 <= doff and doff >> 4 << 2 <= total - 20
                         or proto == 17 and total >= 28)):
                kind, proto, src, dst, sport, dport, flags = parse_slow(frame)
            elif proto == 17:
                kind, flags = L4, 0
            else:
                kind = L4
        else:
            kind, proto, src, dst, sport, dport, flags = parse_slow(frame)

        if kind != L4:   # not a TCP/UDP session packet
            if kind != MALFORMED and dev == LAN:
                to_wan.append(frame)
            continue
        if dev == LAN:
            key = (src, dst, sport, dport, proto)
            s = sessions.get(key)
            if s is None or expiry and now - s[0] >= expiry:
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
            s[2] |= flags
            to_lan.append(frame)
    return {"lan": to_lan, "wan": to_wan}
