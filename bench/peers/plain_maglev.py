"""The Maglev load balancer as a Python developer would write it without nfos (the baseline peer).

Same contract as ``examples/maglev.py``, with the same hash functions, so its
output is byte-identical to the sequential nfos run:

* UDP heartbeats to ``heartbeat_port`` on ``lan`` (device 1) keep a backend
  (source IP, source MAC) alive for ``backend_timeout`` ns; refreshes closer
  than ``refresh_interval`` to the previous one are not recorded.  Backends
  whose lease ran out are removed by a housekeeping pass every
  ``min(max(backend_timeout // 16, 1 ms), 1 s)`` from the first packet's time
  (what the nfos allocator does), and all at once whenever a packet would go
  to one of them, a heartbeat comes from one, or a new backend needs a slot.
* The Maglev table (``table_size`` entries) over the alive backends sorted by
  IP is rebuilt whenever that set changes.
* TCP/UDP from ``wan`` (device 0) to a VIP: a new flow takes the backend of
  ``table[crc32(5-tuple) % M]`` and keeps it while that backend (its lease
  and MAC) lives; then it is re-assigned through the current table.  Flows
  idle for ``flow_expiry`` ns are forgotten (checked lazily, on lookup).  The
  frame leaves on ``lan`` with the backend's MAC as destination, ``mac`` as
  source and, with ``rewrite_ip``, the backend's IP as destination
  (checksums updated incrementally, RFC 1624, as nfos does).
* Other ``lan`` frames go to ``wan`` unchanged; other ``wan`` frames and
  frames the nfos parser calls malformed are dropped.

One dict of flows and one of backends, one process.
"""

from __future__ import annotations

import struct
import zlib

WAN, LAN = 0, 1
MALFORMED, NOT_IP, IP, L4 = range(4)
SEED_OFFSET = 0x4D61676C
SEED_SKIP = 0x65765331
NONE = 0xFF

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_FIVE_TUPLE = struct.Struct("!IIHHB")


def maglev_table(ips: list[int], m: int) -> bytes:
    """Entry -> position in ``ips`` (the Maglev paper's Pseudocode 1); all NONE without backends."""
    n = len(ips)
    if n == 0:
        return bytes([NONE]) * m
    keys = [_U32.pack(ip) for ip in ips]
    nxt = [zlib.crc32(k, SEED_OFFSET) % m for k in keys]
    skip = [zlib.crc32(k, SEED_SKIP) % (m - 1) + 1 for k in keys]
    entry = bytearray([NONE]) * m
    filled = 0
    while True:
        for i in range(n):
            c, s = nxt[i], skip[i]
            while entry[c] != NONE:
                c += s
                if c >= m:
                    c -= m
            entry[c] = i
            c += s
            nxt[i] = c - m if c >= m else c
            filled += 1
            if filled == m:
                return bytes(entry)


def parse(f: bytes) -> tuple[int, int, int, int, int, int, int, int]:
    """(kind, proto, src, dst, sport, dport, l3 offset, l4 offset), as nfos parses the frame."""
    n = len(f)
    if n < 14:
        return MALFORMED, 0, 0, 0, 0, 0, 0, 0
    l3, etype = 14, _U16.unpack_from(f, 12)[0]
    if etype == 0x8100:
        if n < 18:
            return MALFORMED, 0, 0, 0, 0, 0, 0, 0
        l3, etype = 18, _U16.unpack_from(f, 16)[0]
    if etype != 0x0800:
        return NOT_IP, 0, 0, 0, 0, 0, l3, 0
    if n < l3 + 20 or f[l3] >> 4 != 4:
        return MALFORMED, 0, 0, 0, 0, 0, 0, 0
    ihl, total = (f[l3] & 15) * 4, _U16.unpack_from(f, l3 + 2)[0]
    if ihl < 20 or total < ihl or l3 + total > n:
        return MALFORMED, 0, 0, 0, 0, 0, 0, 0
    proto, frag = f[l3 + 9], _U16.unpack_from(f, l3 + 6)[0]
    src, dst = _U32.unpack_from(f, l3 + 12)[0], _U32.unpack_from(f, l3 + 16)[0]
    if frag & 0x1FFF:   # a later fragment: no L4 header
        return IP, proto, src, dst, 0, 0, l3, 0
    l4, room = l3 + ihl, total - ihl
    if proto == 6:
        doff = (f[l4 + 12] >> 4) * 4 if room >= 13 else 0
        ok = room >= 20 and 20 <= doff <= room
    elif proto == 17:
        ok = room >= 8
    else:
        return IP, proto, src, dst, 0, 0, l3, 0
    if not ok:
        return (IP if frag & 0x2000 else MALFORMED), proto, src, dst, 0, 0, l3, 0
    return L4, proto, src, dst, _U16.unpack_from(f, l4)[0], _U16.unpack_from(f, l4 + 2)[0], l3, l4


def _csum_update(hc: int, old: int, new: int) -> int:
    s = (~hc & 0xFFFF) + (~old & 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _set_ip_dst(f: bytearray, l3: int, l4: int, proto: int, new: int) -> None:
    old = _U32.unpack_from(f, l3 + 16)[0]
    _U32.pack_into(f, l3 + 16, new)
    for o, n in ((old >> 16, new >> 16), (old & 0xFFFF, new & 0xFFFF)):
        _U16.pack_into(f, l3 + 10, _csum_update(_U16.unpack_from(f, l3 + 10)[0], o, n))
        if proto == 6:
            _U16.pack_into(f, l4 + 16, _csum_update(_U16.unpack_from(f, l4 + 16)[0], o, n))
        elif proto == 17:
            c = _U16.unpack_from(f, l4 + 6)[0]
            if c:   # 0 means "no checksum" and stays 0
                c = _csum_update(c, o, n)
                _U16.pack_into(f, l4 + 6, c or 0xFFFF)


def _ip(v: str | int) -> int:
    if isinstance(v, int):
        return v
    a, b, c, d = (int(x) for x in v.split("."))
    return a << 24 | b << 16 | c << 8 | d


class Backend:
    __slots__ = ("expiry", "last_refresh", "lease", "mac")

    def __init__(self, mac: bytes, lease: int, now: int, timeout: int) -> None:
        self.mac, self.lease = mac, lease
        self.last_refresh, self.expiry = now, now + timeout


def run(frames: list[bytes], devs: list[int], times_ns: list[int],
        vips=("118.0.0.1", "118.0.0.2"), heartbeat_port: int = 7777,
        backend_timeout: int = 10_000_000_000, refresh_interval: int = 1_000_000_000,
        max_backends: int = 32, table_size: int = 65537, rewrite_ip: bool = False,
        mac: str = "02:00:00:00:00:bb", flow_expiry: int = 60_000_000_000) -> dict[str, list[bytes]]:
    to_wan: list[bytes] = []
    to_lan: list[bytes] = []
    vip_set = {_ip(v) for v in vips}
    lb_mac = bytes(int(x, 16) for x in mac.split(":"))
    m = table_size
    backends: dict[int, Backend] = {}                  # ip -> alive backend
    flows: dict[tuple, list] = {}                      # 5-tuple -> [last seen, backend ip, lease]
    leases = 0                                         # lease ids handed out
    order: list[int] = []                              # alive backend IPs, sorted
    table = maglev_table(order, m)
    housekeeping = min(max(backend_timeout // 16, 1_000_000), 1_000_000_000)
    now = times_ns[0] if times_ns else 0
    next_sweep = now + housekeeping

    def reap(at: int) -> None:
        """Forget every backend whose lease ran out by ``at``; rebuild the table if that changed it."""
        nonlocal order, table
        for ip in [ip for ip, b in backends.items() if b.expiry <= at]:
            del backends[ip]
        if sorted(backends) != order:
            order = sorted(backends)
            table = maglev_table(order, m)

    def pick(key: tuple) -> int | None:
        """The table's backend for a flow, after retiring lapsed backends if it names one."""
        e = zlib.crc32(_FIVE_TUPLE.pack(*key)) % m
        if table[e] != NONE and backends[order[table[e]]].expiry <= now:
            reap(now)
        return None if table[e] == NONE else order[table[e]]

    for frame, dev, t in zip(frames, devs, times_ns, strict=True):
        while next_sweep <= t:   # lease housekeeping runs before the packets of its time
            if any(b.expiry <= next_sweep for b in backends.values()):
                reap(next_sweep)
            next_sweep += housekeeping
        if t > now:
            now = t
        kind, proto, src, dst, sport, dport, l3, l4 = parse(frame)
        if kind == MALFORMED:
            continue

        if dev == LAN:
            if kind == L4 and proto == 17 and dport == heartbeat_port:   # heartbeat: consumed
                hmac = frame[6:12]
                b = backends.get(src)
                if b is not None and b.expiry > now:
                    if not (now >= b.last_refresh and now - b.last_refresh < refresh_interval):
                        b.last_refresh, b.expiry = now, now + backend_timeout
                    if b.mac != hmac:   # another host at this IP
                        leases += 1
                        b.mac, b.lease = hmac, leases
                    continue
                if b is not None or len(backends) >= max_backends:
                    reap(now)   # lapsed (this one, or any when the slots are full)
                if len(backends) < max_backends:
                    leases += 1
                    backends[src] = Backend(hmac, leases, now, backend_timeout)
                    order = sorted(backends)
                    table = maglev_table(order, m)
            else:
                to_wan.append(frame)
            continue

        if kind != L4:
            continue   # not TCP/UDP from clients
        key = (src, dst, sport, dport, proto)
        f = flows.get(key)
        if f is not None and flow_expiry and now - f[0] >= flow_expiry:
            del flows[key]
            f = None
        if f is None:
            if dst not in vip_set:
                continue
            ip = pick(key)
            if ip is None:
                continue
            f = flows[key] = [now, ip, backends[ip].lease]
        else:
            f[0] = now
            b = backends.get(f[1])
            if b is None or b.lease != f[2] or b.expiry <= now:   # its lease ended
                ip = pick(key)
                if ip is None:
                    continue
                f[1], f[2] = ip, backends[ip].lease
        b = backends[f[1]]
        out = bytearray(frame)
        out[0:6] = b.mac
        out[6:12] = lb_mac
        if rewrite_ip:
            _set_ip_dst(out, l3, l4, proto, f[1])
        to_lan.append(bytes(out))
    return {"wan": to_wan, "lan": to_lan}
