"""The policer as a Python developer would write it without nfos (the baseline peer).

Same contract as ``examples/policer.py``: LAN->WAN frames are forwarded;
WAN->LAN IPv4 frames are policed per destination host by a token bucket
(``burst`` bytes, refilled at ``rate`` bytes/s, exactly: the bucket is kept
in units of 1e-9 byte, refilled by ``(now - last) * rate``); an unknown host
starts with a full bucket (a first frame longer than ``burst`` is dropped and
the host stays unknown); a host is forgotten after ``ceil(burst * 1e9 / rate)``
ns idle (checked lazily, on lookup); non-IPv4 WAN frames are dropped, and so are frames the nfos
parser calls malformed.

One precompiled ``struct`` unpack per packet and a dict of hosts, one
process.  Times are the packets' timestamps (the clock never goes back, as
in nfos).  Devices are indexes: 0 = lan, 1 = wan.
"""

from __future__ import annotations

import struct

LAN, WAN = 0, 1
MALFORMED, NOT_IP, IP = range(3)
NS_PER_S = 1_000_000_000

# ethertype, version/IHL, total length, fragment field, protocol, dst, TCP data offset
_HDR = struct.Struct("!12xHBxH2xHxB6xI12xB")
_U16 = struct.Struct("!H")


def parse_slow(f: bytes) -> tuple[int, int]:
    """Any frame, as nfos parses it (802.1Q tag, IP options, fragments, malformed headers):
    (kind, destination address)."""
    n = len(f)
    if n < 14:
        return MALFORMED, 0
    l3, etype = 14, _U16.unpack_from(f, 12)[0]
    if etype == 0x8100:
        if n < 18:
            return MALFORMED, 0
        l3, etype = 18, _U16.unpack_from(f, 16)[0]
    if etype != 0x0800:
        return NOT_IP, 0
    if n < l3 + 20 or f[l3] >> 4 != 4:
        return MALFORMED, 0
    ihl, total = (f[l3] & 15) * 4, _U16.unpack_from(f, l3 + 2)[0]
    if ihl < 20 or total < ihl or l3 + total > n:
        return MALFORMED, 0
    proto, frag = f[l3 + 9], _U16.unpack_from(f, l3 + 6)[0]
    dst = struct.unpack_from("!I", f, l3 + 16)[0]
    if not frag & 0x3FFF:   # a whole datagram must carry a sound TCP/UDP header
        l4, room = l3 + ihl, total - ihl
        if proto == 6 and not (room >= 20 and 20 <= (f[l4 + 12] >> 4) * 4 <= room):
            return MALFORMED, 0
        if proto == 17 and room < 8:
            return MALFORMED, 0
    return IP, dst


def run(frames: list[bytes], devs: list[int], times_ns: list[int],
        rate: int = 1_000_000, burst: int = 100_000) -> dict[str, list[bytes]]:
    if rate <= 0 or burst <= 0:
        raise ValueError(f"rate and burst must be > 0, got rate={rate}, burst={burst}")
    expiry = -(-burst * NS_PER_S // rate)
    full = burst * NS_PER_S
    to_lan: list[bytes] = []
    to_wan: list[bytes] = []
    hosts: dict[int, list[int]] = {}   # destination address -> [credit (1e-9 byte), last refill ns]
    unpack = _HDR.unpack_from
    now = times_ns[0] if times_ns else 0
    for frame, dev, t in zip(frames, devs, times_ns, strict=True):
        if t > now:
            now = t
        n = len(frame)
        if n >= 47:
            etype, vihl, total, frag, proto, dst, doff = unpack(frame)
            if (etype == 0x0800 and vihl == 0x45 and not frag & 0x3FFF and 20 <= total <= n - 14
                    and (proto != 6 or 0x50 <= doff and doff >> 4 << 2 <= total - 20)
                    and (proto != 17 or total >= 28)):
                kind = IP
            else:
                kind, dst = parse_slow(frame)
        else:
            kind, dst = parse_slow(frame)
        if kind != IP:   # malformed frames are dropped, non-IPv4 ones forwarded LAN->WAN only
            if kind == NOT_IP and dev == LAN:
                to_wan.append(frame)
            continue
        if dev == LAN:
            to_wan.append(frame)
            continue

        h = hosts.get(dst)
        if h is not None and expiry and now - h[1] >= expiry:
            del hosts[dst]
            h = None
        if h is None:
            if n <= burst:
                hosts[dst] = [(burst - n) * NS_PER_S, now]
                to_lan.append(frame)
            continue
        credit = h[0] + (now - h[1]) * rate
        if credit > full:
            credit = full
        h[1] = now
        need = n * NS_PER_S
        if credit >= need:
            credit -= need
            to_lan.append(frame)
        h[0] = credit
    return {"lan": to_lan, "wan": to_wan}
