"""The NAT hand-parallelised in plain Python: what a developer writes with ``multiprocessing``
and no nfos (the parallel peer of ``plain_nat.py``).

Same contract as ``plain_nat.py`` / ``examples/nat.py`` with endpoint-independent filtering
(the default; ``filtering="address"`` is not implemented here): endpoint-independent mapping
of (internal address, port, protocol) to an external endpoint, hairpinning, ARP replies for
the public addresses on WAN, idle timeouts per protocol with refreshes coalesced over
``refresh_interval``, exhaustion counted in ``counters["exhausted_ports"]``; ICMP, other
protocols, fragments and malformed frames dropped.  Parsing, checksum updates and ARP are
``plain_nat``'s own functions.  ICMP echo and errors, which ``plain_nat`` and the NAT
translate, are dropped here: this is the TCP/UDP NAT the benchmarks run (their traces have no
ICMP).

Parallelisation (``workers`` processes, ``fork``):

* Input is flow-sharded before the processes start: LAN packets by their internal endpoint
  (source address, port, protocol), so one process owns each internal endpoint and keeps
  its mapping (endpoint -> index, generation) in a plain process-local dict; WAN packets by
  their destination (the external endpoint).
* The external endpoints, per protocol, live in one ``multiprocessing.shared_memory`` block:
  per index the internal address and port, a generation, the lease's expiry and last
  renewal (64-bit words), plus the pool: a counter of never-used indexes and a stack of
  freed ones.  One ``multiprocessing.Lock`` guards the pool (allocation, and reclaiming
  expired leases when it runs dry, vectorised with numpy); the entries are guarded by 64
  lock stripes (index % 64).  A WAN packet takes its entry's stripe to read it; a LAN
  packet takes it to check its own mapping is still live (same generation, not expired)
  and to renew the lease when the refresh is due.
* Each process has its own clock (the largest timestamp it has seen), as nfos's workers do.

Which external port an endpoint gets depends on how the processes interleave, so outputs
equal the sequential peer's up to the choice of external endpoint (exactly, with one
process): the tests check that multiset.  A reclaimed index is reused in no particular
order, and expired leases are reclaimed only when a pool runs dry (the sequential peer also
sweeps periodically), which changes which index is handed out, not what passes.

    outputs, seconds = run(frames, devs, times_ns, workers=4, public_ips=57)
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from multiprocessing import shared_memory

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _mp  # noqa: E402

plain = _mp.sibling("plain_nat")
LAN, WAN, TCP, UDP, FIRST_PORT, NS_PER_S = plain.LAN, plain.WAN, plain.TCP, plain.UDP, plain.FIRST_PORT, plain.NS_PER_S
STRIPES = 64
ADDR, PORT, GEN, EXPIRY, LAST = range(5)   # the words of an entry (EXPIRY 0: free)
WORDS = 5


class Table:
    """The external endpoints of one protocol, in shared memory (see the module doc)."""

    def __init__(self, ctx, size: int, lease: int, refresh_interval: int) -> None:
        self.size, self.lease, self.refresh_interval = size, lease, refresh_interval
        self.shm = shared_memory.SharedMemory(create=True, size=8 * (size * (WORDS + 1) + 2))
        self.words = self.shm.buf.cast("q")               # entries, then the free stack, then 2 words
        self.free_at = size * WORDS
        self.fresh_at = size * (WORDS + 1)                 # never-used indexes start here
        self.top_at = self.fresh_at + 1                    # free stack height
        self.pool_lock = ctx.Lock()
        self.locks = [ctx.Lock() for _ in range(STRIPES)]

    def allocate(self, now: int, addr: int, port: int) -> tuple[int, int] | None:
        """A new lease for (addr, port): (index, generation), or None when the pool is dry."""
        w = self.words
        with self.pool_lock:
            if not w[self.top_at] and w[self.fresh_at] == self.size:
                self.reclaim(now, 256)
            top = w[self.top_at]
            if top:
                i = w[self.free_at + top - 1]
                w[self.top_at] = top - 1
            elif w[self.fresh_at] < self.size:
                i = w[self.fresh_at]
                w[self.fresh_at] = i + 1
            else:
                return None
        at = i * WORDS
        with self.locks[i % STRIPES]:
            gen = w[at + GEN] + 1
            w[at + ADDR], w[at + PORT], w[at + GEN] = addr, port, gen
            w[at + EXPIRY], w[at + LAST] = now + self.lease, now
        return i, gen

    def reclaim(self, now: int, limit: int) -> None:
        """Free up to ``limit`` expired leases (the pool lock is held)."""
        w = self.words
        used = w[self.fresh_at]
        exp = np.frombuffer(self.shm.buf, dtype=np.int64, count=used * WORDS)[EXPIRY::WORDS]
        expired = np.flatnonzero((exp != 0) & (exp <= now))[:limit].tolist()
        del exp
        for i in expired:
            at = i * WORDS
            with self.locks[i % STRIPES]:
                e = w[at + EXPIRY]
                if e == 0 or e > now:   # renewed meanwhile
                    continue
                w[at + EXPIRY] = 0
            top = w[self.top_at]
            w[self.free_at + top] = i
            w[self.top_at] = top + 1

    def close(self) -> None:
        self.words.release()
        self.shm.close()
        self.shm.unlink()


def _key(frame: bytes, dev: int) -> bytes | None:
    """The shard key: the internal endpoint of a LAN packet, the destination of a WAN packet."""
    if len(frame) >= 38 and frame[12:14] == b"\x08\x00" and frame[14] == 0x45:
        if dev == LAN:
            return frame[23:24] + frame[26:30] + frame[34:36]
        return frame[23:24] + frame[30:34] + frame[36:38]
    parsed = plain.parse_slow(frame)
    if parsed is None or parsed[1] < 0 or parsed[2] == plain.ICMP:
        return None
    l3, l4, proto = parsed
    if dev == LAN:
        return bytes([proto]) + frame[l3 + 12:l3 + 16] + frame[l4:l4 + 2]
    return bytes([proto]) + frame[l3 + 16:l3 + 20] + frame[l4 + 2:l4 + 4]


def run(frames: list[bytes], devs: list[int], times_ns: list[int], workers: int = 2, public_ips: int = 57,
        public_base: str | int = "198.51.100.1", ports_per_ip: int = 64512,
        udp_timeout: int = 300 * NS_PER_S, tcp_timeout: int = 7440 * NS_PER_S,
        refresh_interval: int = NS_PER_S, filtering: str = "endpoint", mac: str = "02:00:00:00:00:aa",
        counters: dict | None = None, keep_output: bool = True) -> tuple[dict[str, list[bytes]], float]:
    """(frames out per device, seconds of the processing phase); see the module doc."""
    if filtering != "endpoint":
        raise ValueError("mp_nat implements endpoint-independent filtering only")
    base, ppi = plain._ip(public_base), ports_per_ip
    ours = bytes(int(x, 16) for x in mac.replace("-", ":").split(":"))
    n = public_ips * ppi
    ctx = multiprocessing.get_context("fork")
    tables = {TCP: Table(ctx, n, tcp_timeout, refresh_interval), UDP: Table(ctx, n, udp_timeout, refresh_interval)}
    start = times_ns[0] if times_ns else 0

    def process(frames: list[bytes], devs: list[int], times: list[int]):
        to_lan: list[bytes] = []
        to_wan: list[bytes] = []
        exhausted = 0
        mine: dict[tuple[int, int, int], tuple[int, int]] = {}   # (proto, addr, port) -> (index, generation)
        words = {p: t.words for p, t in tables.items()}
        stripes = {p: t.locks for p, t in tables.items()}
        set_addr, set_port, unpack, parse_slow = plain.set_addr, plain.set_port, plain._HDR.unpack_from, plain.parse_slow
        u16 = plain._U16.unpack_from

        def inbound(buf: bytearray, l3: int, l4: int, proto: int, dst: int, dport: int, now: int) -> None:
            k, port = dst - base, dport - FIRST_PORT
            if not (0 <= k < public_ips and 0 <= port < ppi):
                return
            i = k * ppi + port
            w, at = words[proto], i * WORDS
            with stripes[proto][i % STRIPES]:
                e = w[at + EXPIRY]
                addr, p = w[at + ADDR], w[at + PORT]
            if e <= now:   # free (0) or expired
                return
            set_addr(buf, l3, l4, proto, 16, addr)
            set_port(buf, l4, proto, 2, p)
            to_lan.append(bytes(buf))

        now = start
        for frame, dev, t in zip(frames, devs, times, strict=True):
            if t > now:
                now = t
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
                if dev == WAN and u16(frame, l3 - 2)[0] == 0x0806:
                    reply = plain.arp_reply(frame, l3, base, public_ips, ours)
                    if reply is not None:
                        to_wan.append(reply)
                continue
            if proto == plain.ICMP:   # not translated here (see the module doc)
                continue
            if l3 != 14 or l4 != 34:
                src, dst = plain.struct.unpack_from("!II", frame, l3 + 12)
                sport, dport = plain.struct.unpack_from("!HH", frame, l4)
            buf = bytearray(frame)
            if dev == WAN:
                inbound(buf, l3, l4, proto, dst, dport, now)
                continue
            key = (proto, src, sport)
            have = mine.get(key)
            live = False
            if have is not None:
                i, gen = have
                w, at = words[proto], i * WORDS
                with stripes[proto][i % STRIPES]:
                    if w[at + GEN] == gen and w[at + EXPIRY] > now:
                        live = True
                        if now - w[at + LAST] >= refresh_interval:
                            w[at + EXPIRY], w[at + LAST] = now + tables[proto].lease, now
            if not live:
                got = tables[proto].allocate(now, src, sport)
                if got is None:
                    exhausted += 1
                    continue
                mine[key] = got
                i = got[0]
            public, public_port = base + i // ppi, FIRST_PORT + i % ppi
            set_addr(buf, l3, l4, proto, 12, public)
            set_port(buf, l4, proto, 0, public_port)
            if 0 <= dst - base < public_ips:   # hairpinning
                inbound(buf, l3, l4, proto, dst, dport, now)
            else:
                to_wan.append(bytes(buf))
        return [to_lan, to_wan], {"exhausted_ports": exhausted}

    try:
        shards = _mp.split(frames, devs, times_ns, workers, _key)
        return _mp.run_sharded(process, shards, ["lan", "wan"], keep_output, counters)
    finally:
        for t in tables.values():
            t.close()
