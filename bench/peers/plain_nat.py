"""The NAT as a Python developer would write it without nfos (the baseline peer).

Same contract as ``examples/nat.py``: endpoint-independent mapping of
(internal address, port, protocol) to an external (address, port) for TCP
and UDP, and of (internal address, identifier) for ICMP echo, endpoint- or
address-dependent filtering of WAN->LAN packets, hairpinning, ICMP errors of
live mappings translated back (quoted header, both checksums; hairpinned
too), ARP replies for the public addresses on WAN, idle timeouts per
protocol with refreshes coalesced over ``refresh_interval``; everything else
is dropped (other ICMP, other protocols, IP fragments, frames the nfos parser
calls malformed).  ``run`` takes the NF's parameters as keyword arguments (IPv4
and MAC addresses as text, durations in ns) and fills ``counters`` (if
given) with ``exhausted_ports`` and ``exhausted_permits``.

External ports come from a :class:`Pool` per protocol that hands out
indexes the way nfos's Allocator does in sequential mode: never-used
indexes in order 0, 1, 2, ..., freed ones first and last-in first-out, and
expired leases reclaimed by a sweep every ``min(max(lease / 16, 1 ms), 1 s)``
from the first packet's time (or at once when the pool runs dry).  So the
output is byte for byte that of ``nfos run examples/nat.py --workers 0``,
except where an ARP reply sits: nfos sends a frame that a handler emits after
the packets forwarded in the same transaction (a batch of up to 32), this
peer at once.
It is the NAT without ``lan_ip`` (frames keep their MACs and TTL): router
mode (ARP cache, MAC rewriting) is not implemented here.
Addresses are rewritten in a ``bytearray`` with incremental checksum updates
(RFC 1624, eqn. 3), word by word and in the order nfos does (a checksum that
one's complement can write two ways comes out the same).  Devices are indexes: 0 =
lan, 1 = wan.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable

LAN, WAN = 0, 1
ICMP, TCP, UDP = 1, 6, 17
ERRORS = (3, 11, 12)
FIRST_PORT = 1024
NS_PER_S = 1_000_000_000

# ethertype, version/IHL, total length, fragment field, protocol, src, dst, sport, dport, TCP data offset
_HDR = struct.Struct("!12xHBxH2xHxB2xIIHH8xB")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_ARP = struct.Struct("!HHBBH6s4s6s4s")


# ------------------------------------------------------------------ parsing

def parse_slow(f: bytes) -> tuple[int, int, int] | None:
    """Any frame, as nfos parses it: (l3 offset, l4 offset, protocol) of an unfragmented TCP or
    UDP packet or ICMP message (with its 8-byte header), (l3, -1, -1) for a non-IP frame, None for
    anything else (dropped by the NAT)."""
    n = len(f)
    if n < 14:
        return None
    l3, etype = 14, _U16.unpack_from(f, 12)[0]
    if etype == 0x8100:
        if n < 18:
            return None
        l3, etype = 18, _U16.unpack_from(f, 16)[0]
    if etype != 0x0800:
        return l3, -1, -1
    if n < l3 + 20 or f[l3] >> 4 != 4:
        return None
    ihl, total = (f[l3] & 15) * 4, _U16.unpack_from(f, l3 + 2)[0]
    if ihl < 20 or total < ihl or l3 + total > n or _U16.unpack_from(f, l3 + 6)[0] & 0x3FFF:
        return None   # malformed, or a fragment
    proto, l4, room = f[l3 + 9], l3 + ihl, total - ihl
    if proto == TCP and room >= 20 and 20 <= (f[l4 + 12] >> 4) * 4 <= room or proto in (UDP, ICMP) and room >= 8:
        return l3, l4, proto
    return None


# ------------------------------------------------------------------ checksums

def _csum_update(hc: int, old: int, new: int) -> int:
    s = (~hc & 0xFFFF) + (~old & 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _l4_update(buf: bytearray, l4: int, proto: int, old: int, new: int) -> None:
    """Fold one changed 16-bit word into the TCP/UDP checksum (a zero UDP checksum means none)."""
    at = l4 + 16 if proto == TCP else l4 + 6
    c = buf[at] << 8 | buf[at + 1]
    if proto == UDP:
        if c == 0:
            return
        c = _csum_update(c, old, new) or 0xFFFF
    else:
        c = _csum_update(c, old, new)
    buf[at], buf[at + 1] = c >> 8, c & 0xFF


def set_addr(buf: bytearray, l3: int, l4: int, proto: int, at: int, value: int) -> None:
    """Write an IPv4 address at l3 + at (12 = source, 16 = destination), fixing both checksums."""
    old = _U32.unpack_from(buf, l3 + at)[0]
    _U32.pack_into(buf, l3 + at, value)
    c = buf[l3 + 10] << 8 | buf[l3 + 11]
    c = _csum_update(_csum_update(c, old >> 16, value >> 16), old & 0xFFFF, value & 0xFFFF)
    buf[l3 + 10], buf[l3 + 11] = c >> 8, c & 0xFF
    if proto != ICMP:   # ICMP has no pseudo-header
        _l4_update(buf, l4, proto, old >> 16, value >> 16)
        _l4_update(buf, l4, proto, old & 0xFFFF, value & 0xFFFF)


def set_port(buf: bytearray, l4: int, proto: int, at: int, value: int) -> None:
    """Write a port at l4 + at (0 = source, 2 = destination), fixing the checksum."""
    old = _U16.unpack_from(buf, l4 + at)[0]
    _U16.pack_into(buf, l4 + at, value)
    _l4_update(buf, l4, proto, old, value)


# ------------------------------------------------------------------ ICMP

def _checksum_ok(buf: bytearray, start: int, end: int) -> bool:
    """Does the Internet checksum of buf[start:end] verify (RFC 1071)?"""
    data = bytes(buf[start:end]) + b"\0" * ((end - start) & 1)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def icmp_put16(buf: bytearray, l4: int, at: int, value: int) -> None:
    """Write a word of the ICMP message at ``l4``, folding the change into its checksum."""
    old = _U16.unpack_from(buf, at)[0]
    _U16.pack_into(buf, at, value)
    _U16.pack_into(buf, l4 + 2, _csum_update(_U16.unpack_from(buf, l4 + 2)[0], old, value))


def icmp_fold(buf: bytearray, l4: int, at: int, old: int, new: int) -> None:
    """Fold a change (old -> new) into the checksum at ``at``, a word of the ICMP message."""
    icmp_put16(buf, l4, at, _csum_update(_U16.unpack_from(buf, at)[0], old, new))


class Quote:
    """The packet an ICMP error at ``l4`` quotes, when nfos would give it an L4 (or ICMP) view:
    its whole IPv4 header at ``q3``, 8 bytes of TCP/UDP/ICMP at ``q4``, not a later fragment."""

    def __init__(self, buf: bytearray, l4: int, end: int) -> None:
        self.ok = False
        self.buf, self.l4, self.end = buf, l4, end
        q3 = l4 + 8
        if q3 + 20 > end or buf[q3] >> 4 != 4:
            return
        q4 = q3 + (buf[q3] & 15) * 4
        if q4 < q3 + 20 or q4 > end:
            return
        self.q3, self.q4, self.proto = q3, q4, buf[q3 + 9]
        self.header_ok = _checksum_ok(buf, l4, end) and _checksum_ok(buf, q3, q4)
        self.ok = self.header_ok and not _U16.unpack_from(buf, q3 + 6)[0] & 0x1FFF and q4 + 8 <= end

    def l4_update(self, old: int, new: int) -> None:
        """The quoted TCP/UDP checksum follows a change, where quoted (UDP: unless 0)."""
        buf, q4 = self.buf, self.q4
        if self.proto == TCP:
            if q4 + 18 <= self.end:
                icmp_fold(buf, self.l4, q4 + 16, old, new)
        elif self.proto == UDP:
            c = _U16.unpack_from(buf, q4 + 6)[0]
            if c:
                icmp_put16(buf, self.l4, q4 + 6, _csum_update(c, old, new) or 0xFFFF)

    def set_addr(self, at: int, value: int) -> None:
        """The quoted source (at 12) or destination (16) address."""
        buf, l4, q3 = self.buf, self.l4, self.q3
        old = _U32.unpack_from(buf, q3 + at)[0]
        icmp_put16(buf, l4, q3 + at, value >> 16)
        icmp_put16(buf, l4, q3 + at + 2, value & 0xFFFF)
        icmp_fold(buf, l4, q3 + 10, old >> 16, value >> 16)
        icmp_fold(buf, l4, q3 + 10, old & 0xFFFF, value & 0xFFFF)
        self.l4_update(old >> 16, value >> 16)
        self.l4_update(old & 0xFFFF, value & 0xFFFF)

    def set_port(self, at: int, value: int) -> None:
        """The quoted source (at 0) or destination (2) port, or (ICMP) the identifier."""
        buf, l4, q4 = self.buf, self.l4, self.q4
        if self.proto == ICMP:
            old = _U16.unpack_from(buf, q4 + 4)[0]
            icmp_put16(buf, l4, q4 + 4, value)
            icmp_fold(buf, l4, q4 + 2, old, value)
            return
        old = _U16.unpack_from(buf, q4 + at)[0]
        icmp_put16(buf, l4, q4 + at, value)
        self.l4_update(old, value)


# ------------------------------------------------------------------ leases

class Pool:
    """Indexes 0..size-1 with idle leases (see the module doc)."""

    def __init__(self, size: int, lease: int, refresh_interval: int, start: int,
                 on_expire: Callable[[int], None]) -> None:
        self.size, self.lease, self.refresh_interval = size, lease, refresh_interval
        self.fresh = 0                      # next never-used index
        self.free: list[int] = []           # reclaimed indexes, reused last first
        self.leases: OrderedDict[int, list[int]] = OrderedDict()   # index -> [expiry, last refresh], by expiry
        self.on_expire = on_expire
        self.sweep_every = min(max(lease // 16, 1_000_000), NS_PER_S)
        self.next_sweep = start + self.sweep_every

    def sweep(self, now: int) -> None:
        """Run the periodic sweeps due by ``now``."""
        while self.next_sweep <= now:
            self.reclaim(self.next_sweep)
            self.next_sweep += self.sweep_every

    def reclaim(self, now: int, limit: int = 1 << 20) -> None:
        leases = self.leases
        while leases and limit > 0:
            i, (expiry, _) = next(iter(leases.items()))
            if expiry > now:
                return
            del leases[i]
            self.free.append(i)
            self.on_expire(i)
            limit -= 1

    def allocate(self, now: int) -> int | None:
        if not self.free and self.fresh == self.size:
            self.reclaim(now, 256)
        if self.free:
            i = self.free.pop()
        elif self.fresh < self.size:
            i = self.fresh
            self.fresh += 1
        else:
            return None
        self.leases[i] = [now + self.lease, now]
        return i

    def live(self, i: int, now: int) -> bool:
        lease = self.leases.get(i)
        return lease is not None and lease[0] > now

    def refresh(self, i: int, now: int) -> bool:
        lease = self.leases.get(i)
        if lease is None or lease[0] <= now:
            return False
        if now - lease[1] >= self.refresh_interval:
            lease[0], lease[1] = now + self.lease, now
            self.leases.move_to_end(i)
        return True


# ------------------------------------------------------------------ the NAT

def _ip(text: str | int) -> int:
    return text if isinstance(text, int) else int.from_bytes(bytes(int(x) for x in text.split(".")), "big")


def run(frames: list[bytes], devs: list[int], times_ns: list[int], public_ips: int = 57,
        public_base: str | int = "198.51.100.1", ports_per_ip: int = 64512,
        udp_timeout: int = 300 * NS_PER_S, tcp_timeout: int = 7440 * NS_PER_S, icmp_timeout: int = 60 * NS_PER_S,
        refresh_interval: int = NS_PER_S, filtering: str = "endpoint", permits: int = 1 << 20,
        mac: str = "02:00:00:00:00:aa", counters: dict[str, int] | None = None) -> dict[str, list[bytes]]:
    base, ppi = _ip(public_base), ports_per_ip
    ours = bytes(int(x, 16) for x in mac.replace("-", ":").split(":"))
    address_filtering = filtering == "address"
    start = times_ns[0] if times_ns else 0
    n = public_ips * ppi
    to_lan: list[bytes] = []
    to_wan: list[bytes] = []
    exhausted = {"exhausted_ports": 0, "exhausted_permits": 0}
    protos = (TCP, UDP, ICMP)
    timeouts = {TCP: tcp_timeout, UDP: udp_timeout, ICMP: icmp_timeout}

    # per protocol: (internal address, port or identifier) -> index; index -> [address, port,
    # generation]; (index, remote address) -> [permit, generation of the mapping]; permit -> (index, remote)
    mappings: dict[int, dict[tuple[int, int], int]] = {p: {} for p in protos}
    endpoints: dict[int, dict[int, list[int]]] = {p: {} for p in protos}
    permit_of: dict[int, dict[tuple[int, int], list[int]]] = {p: {} for p in protos}
    permit_key: dict[int, dict[int, tuple[int, int]]] = {p: {} for p in protos}

    def forgetter(proto: int) -> Callable[[int], None]:
        def forget(i: int) -> None:
            ep = endpoints[proto][i]
            key = (ep[0], ep[1])
            if mappings[proto].get(key) == i:
                del mappings[proto][key]
        return forget

    def permit_forgetter(proto: int) -> Callable[[int], None]:
        def forget(p: int) -> None:
            key = permit_key[proto][p]
            ref = permit_of[proto].get(key)
            if ref is not None and ref[0] == p:
                del permit_of[proto][key]
        return forget

    ports = {p: Pool(n, timeouts[p], refresh_interval, start, forgetter(p)) for p in protos}
    pools = [ports[p] for p in protos]
    permit_pools = {}
    if address_filtering:
        permit_pools = {p: Pool(permits, timeouts[p], refresh_interval, start, permit_forgetter(p)) for p in protos}
        pools += [permit_pools[p] for p in protos]

    def public(addr: int) -> bool:
        return 0 <= addr - base < public_ips

    def live(proto: int, dst: int, port: int, now: int) -> int | None:
        """The index of the live mapping at external endpoint (dst, port), or None."""
        k, port = dst - base, port - FIRST_PORT
        if not (0 <= k < public_ips and 0 <= port < ppi):
            return None
        i = k * ppi + port
        return i if ports[proto].live(i, now) else None

    def admitted(proto: int, i: int, remote: int, now: int) -> bool:
        if not address_filtering:
            return True
        ref = permit_of[proto].get((i, remote))
        return ref is not None and ref[1] == endpoints[proto][i][2] and permit_pools[proto].live(ref[0], now)

    def inbound(buf: bytearray, l3: int, l4: int, proto: int, src: int, dst: int, dport: int, now: int) -> None:
        i = live(proto, dst, dport, now)
        if i is None or not admitted(proto, i, src, now):
            return
        ep = endpoints[proto][i]
        set_addr(buf, l3, l4, proto, 16, ep[0])
        if proto == ICMP:
            icmp_put16(buf, l4, l4 + 4, ep[1])
        else:
            set_port(buf, l4, proto, 2, ep[1])
        to_lan.append(bytes(buf))

    def give_permit(proto: int, i: int, remote: int, now: int) -> bool:
        gen = endpoints[proto][i][2]
        ref = permit_of[proto].get((i, remote))
        pool = permit_pools[proto]
        if ref is not None and pool.refresh(ref[0], now):
            ref[1] = gen
            return True
        p = pool.allocate(now)
        if p is None:
            return False
        permit_of[proto][(i, remote)] = [p, gen]
        permit_key[proto][p] = (i, remote)
        return True

    def mapping_of(proto: int, src: int, sport: int, dst: int, now: int) -> int | None:
        key = (src, sport)
        pool = ports[proto]
        i = mappings[proto].get(key)
        if i is None or not pool.refresh(i, now):
            i = pool.allocate(now)
            if i is None:
                exhausted["exhausted_ports"] += 1
                return None
            mappings[proto][key] = i
            ep = endpoints[proto].setdefault(i, [0, 0, 0])
            ep[0], ep[1], ep[2] = src, sport, ep[2] + 1 & 0xFFFFFFFF
        if address_filtering and not give_permit(proto, i, dst, now):
            exhausted["exhausted_permits"] += 1
            return None
        return i

    def inbound_error(buf: bytearray, l3: int, l4: int, end: int, now: int) -> None:
        q = Quote(buf, l4, end)
        if not q.ok:
            return
        proto = q.proto
        if proto == ICMP:
            if buf[q.q4] != 8:
                return
            port = _U16.unpack_from(buf, q.q4 + 4)[0]
        elif proto in (TCP, UDP):
            port = _U16.unpack_from(buf, q.q4)[0]
        else:
            return
        i = live(proto, _U32.unpack_from(buf, q.q3 + 12)[0], port, now)
        if i is None:
            return
        ep = endpoints[proto][i]
        q.set_addr(12, ep[0])
        q.set_port(0, ep[1])
        set_addr(buf, l3, l4, ICMP, 16, ep[0])
        to_lan.append(bytes(buf))

    def outbound_error(buf: bytearray, l3: int, l4: int, end: int, now: int) -> None:
        q = Quote(buf, l4, end)
        if not q.ok:
            return
        proto = q.proto
        if proto == ICMP:
            if buf[q.q4] != 0:
                return
            port = _U16.unpack_from(buf, q.q4 + 4)[0]
        elif proto in (TCP, UDP):
            port = _U16.unpack_from(buf, q.q4 + 2)[0]
        else:
            return
        i = mappings[proto].get((_U32.unpack_from(buf, q.q3 + 16)[0], port))
        if i is None or not ports[proto].live(i, now):
            return
        pub, pport = base + i // ppi, FIRST_PORT + i % ppi
        q.set_addr(16, pub)
        q.set_port(2, pport)
        set_addr(buf, l3, l4, ICMP, 12, pub)
        if public(_U32.unpack_from(buf, l3 + 16)[0]):
            inbound_error(buf, l3, l4, end, now)   # hairpinned
        else:
            to_wan.append(bytes(buf))

    def icmp(frame: bytes, dev: int, l3: int, l4: int, now: int) -> None:
        end = l3 + _U16.unpack_from(frame, l3 + 2)[0]
        t = frame[l4]
        src, dst = struct.unpack_from("!II", frame, l3 + 12)
        buf = bytearray(frame)
        if t in ERRORS:
            (outbound_error if dev == LAN else inbound_error)(buf, l3, l4, end, now)
        elif dev == LAN and t == 8:
            if public(dst):
                return
            i = mapping_of(ICMP, src, _U16.unpack_from(frame, l4 + 4)[0], dst, now)
            if i is not None:
                set_addr(buf, l3, l4, ICMP, 12, base + i // ppi)
                icmp_put16(buf, l4, l4 + 4, FIRST_PORT + i % ppi)
                to_wan.append(bytes(buf))
        elif dev == WAN and t == 0:
            inbound(buf, l3, l4, ICMP, src, dst, _U16.unpack_from(frame, l4 + 4)[0], now)

    unpack = _HDR.unpack_from
    now = start
    for frame, dev, t in zip(frames, devs, times_ns, strict=True):
        if t > now:
            now = t
        for pool in pools:
            if pool.next_sweep <= now:
                pool.sweep(now)
        if len(frame) >= 48:
            etype, vihl, total, frag, proto, src, dst, sport, dport, doff = unpack(frame)
            if (etype == 0x0800 and vihl == 0x45 and not frag & 0x3FFF and 20 <= total <= len(frame) - 14
                    and (proto == TCP and 0x50 <= doff and doff >> 4 << 2 <= total - 20
                         or proto == UDP and total >= 28)):
                l3, l4 = 14, 34
            else:
                parsed = parse_slow(frame)
                if parsed is None:
                    continue
                l3, l4, proto = parsed
        else:
            parsed = parse_slow(frame)
            if parsed is None:
                continue
            l3, l4, proto = parsed
        if l4 < 0:   # not IPv4
            if dev == WAN and _U16.unpack_from(frame, l3 - 2)[0] == 0x0806:
                reply = arp_reply(frame, l3, base, public_ips, ours)
                if reply is not None:
                    to_wan.append(reply)
            continue
        if proto == ICMP:
            icmp(frame, dev, l3, l4, now)
            continue
        if l3 != 14 or l4 != 34:
            src, dst = struct.unpack_from("!II", frame, l3 + 12)
            sport, dport = struct.unpack_from("!HH", frame, l4)
        buf = bytearray(frame)
        if dev == WAN:
            inbound(buf, l3, l4, proto, src, dst, dport, now)
            continue
        i = mapping_of(proto, src, sport, dst, now)
        if i is None:
            continue
        public_addr, public_port = base + i // ppi, FIRST_PORT + i % ppi
        set_addr(buf, l3, l4, proto, 12, public_addr)
        set_port(buf, l4, proto, 0, public_port)
        if public(dst):   # hairpinning
            inbound(buf, l3, l4, proto, public_addr, dst, dport, now)
        else:
            to_wan.append(bytes(buf))
    if counters is not None:
        counters.update(exhausted)
    return {"lan": to_lan, "wan": to_wan}


def arp_reply(frame: bytes, l3: int, base: int, public_ips: int, ours: bytes) -> bytes | None:
    """The reply to an ARP request for one of the public addresses, else None."""
    if len(frame) - l3 < _ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = _ARP.unpack_from(frame, l3)
    if (htype, ptype, hlen, plen, op) != (1, 0x0800, 6, 4, 1):
        return None
    if not 0 <= int.from_bytes(tpa, "big") - base < public_ips:
        return None
    reply = sha + ours + frame[12:l3] + _ARP.pack(1, 0x0800, 6, 4, 2, ours, tpa, sha, spa)
    return reply + bytes(max(0, 60 - len(reply)))
