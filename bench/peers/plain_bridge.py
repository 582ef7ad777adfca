"""The MAC-learning bridge as a Python developer would write it without nfos (the baseline peer).

Same contract as ``examples/bridge.py``: devices ``p0..p{ports-1}``; a
unicast source MAC is learned on the input port (a new entry lives
``validity`` ns; a known one is renewed to ``now + validity`` only if its
last renewal is at least ``refresh_interval`` old, and follows the host when
it shows up on another port; an expired entry counts as unknown; a new MAC
is not learned while ``capacity`` unexpired entries exist); then a frame to
a multicast/broadcast or unknown destination is flooded to every other port,
to a known one sent to its port, or dropped if that is the input port.
``validity=0`` means entries never expire.  Frames the nfos parser calls
malformed are dropped.

One precompiled ``struct`` unpack per frame and a dict MAC -> [port, expiry,
last renewal], one process.  Times are the frames' timestamps (the clock
never goes back, as in nfos).  Devices are indexes 0..ports-1.
"""

from __future__ import annotations

import struct

# destination MAC, source MAC, ethertype, version/IHL, total length,
# fragment field, protocol, TCP data offset (a plain IPv4 header, no options)
_HDR = struct.Struct("!6s6sHBxH2xHxB22xB")
_MACS = struct.Struct("!6s6s")
_U16 = struct.Struct("!H")
NS_PER_S = 1_000_000_000
NEVER = 1 << 64


def malformed(f: bytes) -> bool:
    """Whether the nfos parser drops this frame as malformed (802.1Q tag, IP options, fragments)."""
    n = len(f)
    if n < 14:
        return True
    l3, etype = 14, _U16.unpack_from(f, 12)[0]
    if etype == 0x8100:
        if n < 18:
            return True
        l3, etype = 18, _U16.unpack_from(f, 16)[0]
    if etype != 0x0800:
        return False
    if n < l3 + 20 or f[l3] >> 4 != 4:
        return True
    ihl, total = (f[l3] & 15) * 4, _U16.unpack_from(f, l3 + 2)[0]
    if ihl < 20 or total < ihl or l3 + total > n:
        return True
    frag = _U16.unpack_from(f, l3 + 6)[0]
    if frag & 0x3FFF:   # a fragment: its L4 header is not checked
        return False
    proto, room, l4 = f[l3 + 9], total - ihl, l3 + ihl
    if proto == 6:
        doff = (f[l4 + 12] >> 4) * 4 if room >= 13 else 0
        return not (room >= 20 and 20 <= doff <= room)
    if proto == 17:
        return room < 8
    return False


def run(frames: list[bytes], devs: list[int], times_ns: list[int], ports: int = 2, capacity: int = 65536,
        validity: int = 120 * NS_PER_S, refresh_interval: int = 60 * NS_PER_S) -> dict[str, list[bytes]]:
    if not 2 <= ports <= 32 or capacity < 1:
        raise ValueError(f"need 2 <= ports <= 32 and capacity >= 1, got ports={ports}, capacity={capacity}")
    if validity and refresh_interval >= validity:
        raise ValueError("refresh_interval must be shorter than validity")
    out: list[list[bytes]] = [[] for _ in range(ports)]
    others = [[out[p] for p in range(ports) if p != q] for q in range(ports)]   # flood targets per input
    table: dict[bytes, list[int]] = {}   # MAC -> [port, expiry (ns), last renewal (ns)]
    soonest = NEVER   # no entry expires before this
    unpack, macs = _HDR.unpack_from, _MACS.unpack_from
    now = times_ns[0] if times_ns else 0
    for frame, dev, t in zip(frames, devs, times_ns, strict=True):
        if t > now:
            now = t
        n = len(frame)
        if n >= 47:
            dst, src, etype, vihl, total, frag, proto, doff = unpack(frame)
            if etype == 0x0800:
                if not (vihl == 0x45 and not frag & 0x3FFF and 20 <= total <= n - 14
                        and (proto == 17 and total >= 28
                             or proto == 6 and 0x50 <= doff and doff >> 4 << 2 <= total - 20
                             or proto != 17 and proto != 6)) and malformed(frame):
                    continue
            elif etype == 0x8100 and malformed(frame):
                continue
        elif malformed(frame):
            continue
        else:
            dst, src = macs(frame)

        # learning
        if not src[0] & 1:
            e = table.get(src)
            if e is not None and (not validity or e[1] > now):   # known
                if now - e[2] >= refresh_interval:
                    e[1] = now + validity
                    e[2] = now
                e[0] = dev
            else:   # unknown, or its entry expired
                if e is not None:
                    del table[src]
                if len(table) >= capacity and validity and soonest <= now:   # reclaim expired entries
                    for mac in [m for m, x in table.items() if x[1] <= now]:
                        del table[mac]
                    soonest = min((x[1] for x in table.values()), default=NEVER)
                if len(table) < capacity:
                    exp = now + validity if validity else NEVER
                    table[src] = [dev, exp, now]
                    if exp < soonest:
                        soonest = exp

        # forwarding
        if not dst[0] & 1:
            d = table.get(dst)
            if d is not None and (not validity or d[1] > now):
                if d[0] != dev:
                    out[d[0]].append(frame)
                continue
        for o in others[dev]:
            o.append(frame)
    return {f"p{i}": out[i] for i in range(ports)}
