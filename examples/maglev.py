"""Maglev load balancer (Eisenbud et al., "Maglev: A Fast and Reliable Software
Network Load Balancer", NSDI 2016): consistent hashing with connection affinity.

Contract
--------
Devices ``wan`` (clients) and ``lan`` (backends).

* Backends announce themselves with heartbeats: UDP packets to
  ``heartbeat_port`` (default 7777) arriving on ``lan``; the source IP and
  source MAC identify the backend.  Heartbeats are consumed (never
  forwarded).  A backend is alive from its first heartbeat until its lease
  runs out: ``backend_timeout`` (default 10 s) after the last recorded
  heartbeat.  A heartbeat closer than ``refresh_interval`` (default 1 s) to
  the last recorded one is not recorded, so a backend may time out up to
  one interval early.  At most ``max_backends`` (default 32, at most 254)
  backends are alive; heartbeats of others are ignored meanwhile.  A
  heartbeat from a live backend's IP with another MAC is a new host at that
  IP: the old host's flows are re-assigned.  A heartbeat after the lease
  ran out starts a new backend.
* The lookup table has ``table_size`` entries M (a prime, default 65537),
  filled by the paper's Pseudocode 1 (§3.4) over the alive backends sorted
  by IP: backend ``b`` prefers entries ``(offset + j * skip) % M``, j = 0,
  1, ..., with ``offset = crc32(ip, SEED_OFFSET) % M`` and ``skip =
  crc32(ip, SEED_SKIP) % (M - 1) + 1`` (``ip`` as 4 big-endian bytes), and
  the backends take turns claiming their next preferred free entry until
  the table is full (:func:`maglev_table`).  It is rebuilt when a backend
  joins and when one is found dead: by the lease housekeeping (every
  ``min(backend_timeout / 16, 1 s)``), or at once when a packet would go to
  a backend whose lease ran out -- then every lapsed backend is removed.
  So no packet goes to a backend after its lease ran out.
* A flow is a TCP or UDP 5-tuple arriving on ``wan`` to one of ``vips``
  (default 118.0.0.1, 118.0.0.2); all other traffic from ``wan`` is
  dropped.  A new flow takes the backend of ``table[flow_hash(5-tuple) %
  M]`` (:func:`flow_hash`: crc32 of the packed 5-tuple) and keeps it while
  that backend lives, whatever happens to the table meanwhile (connection
  affinity, §3.3).  A flow whose backend died (even if it came back, or its
  slot went to another host) is re-assigned through the current table on
  its next packet.  Flows are forgotten after ``flow_expiry`` (default
  60 s) without packets.
* A client packet leaves on ``lan`` with its backend's MAC as destination,
  ``mac`` (default 02:00:00:00:00:bb) as source and, when ``rewrite_ip``,
  its backend's IP as destination (IP and TCP/UDP checksums stay valid).
  With no alive backend it is dropped (and no flow is recorded).
* Anything else arriving on ``lan`` (backend -> client traffic) goes to
  ``wan`` unchanged, so the balancer can sit inline.  Replies are not
  translated back: with ``rewrite_ip`` the backends answer from the VIP
  themselves (direct server return, as in the paper).

Theory of operation
-------------------
Flows are packet sets keyed by the client 5-tuple on ``wan``: software RSS
pins a flow to one worker, so its state (backend index + the backend's
generation) needs no synchronisation and flows never conflict.  Backends
live in shared structures: an ``Allocator`` whose leases are the heartbeats
(its index is the backend's slot), a ``Map`` from backend IP to index and a
``Vector`` of backend records {ip, mac, gen, alive}.  ``gen`` goes up when a
lease starts, when it ends and when the host changes, so a flow holding
(index, gen) knows whether its backend is still the one it was given, even
after the index was re-used.

The table is read-mostly: every new flow reads one entry, only backend
changes write it.  It is a ``Vector`` of 128-entry chunks (one byte per
entry: the backend index, 255 = none), 513 objects for M = 65537, so a
rebuild writes far fewer objects than a transaction holds (4096) and
commits as one ordinary transaction; it costs 10-30 ms (the Python fill
loop: 1 to 32 backends) and aborts only the concurrent new-flow
transactions that read a chunk it replaced (they retry on the new table).
A later packet reads its backend's record and lease, written only when the
backend joins, leaves or refreshes.  Heartbeats refresh their lease;
recipe: a backend's heartbeats on several workers conflict on its lease
cell, so ``refresh_interval`` makes all but one refresh per interval a
read-only no-op.
"""

import struct
import zlib

import nfos

nf = nfos.NF("maglev", devices=["wan", "lan"], params={
    "vips": nfos.param(list[nfos.IPv4], "118.0.0.1,118.0.0.2", "virtual IPs served"),
    "heartbeat_port": nfos.param(int, 7777, "UDP port of backend heartbeats on lan"),
    "backend_timeout": nfos.param(nfos.Duration, nfos.seconds(10), "a backend without heartbeats is dead"),
    "refresh_interval": nfos.param(nfos.Duration, nfos.seconds(1), "leases refreshed at most this often"),
    "max_backends": nfos.param(int, 32, "backends alive at once (<= 254)"),
    "table_size": nfos.param(int, 65537, "lookup table entries M (a prime)"),
    "rewrite_ip": nfos.param(bool, False, "also rewrite the destination IP to the backend's"),
    "mac": nfos.param(str, "02:00:00:00:00:bb", "source MAC of frames sent to backends"),
    "flow_expiry": nfos.param(nfos.Duration, nfos.seconds(60), "flow idle timeout"),
    "capacity": nfos.param(int, 1 << 18, "flows per worker"),
})

SEED_OFFSET = 0x4D61676C   # "Magl"
SEED_SKIP = 0x65765331     # "evS1"
NONE = 0xFF                # table entry / position of no backend
CHUNK = 128                # table entries per Vector element
_IP = struct.Struct("!I")
_FIVE_TUPLE = struct.Struct("!IIHHB")


# ------------------------------------------------------------------ pure functions

def maglev_table(ips, m):
    """The Maglev lookup table over the backends ``ips`` (ints, in this order) of size ``m``.

    Returns ``m`` bytes: entry e holds the position in ``ips`` of the backend
    that owns it (255 for every entry when ``ips`` is empty).  The paper's
    Pseudocode 1: each backend walks its permutation ``offset, offset + skip,
    ...`` (mod m) and the backends take turns claiming their next free entry.
    """
    n = len(ips)
    if n == 0:
        return bytes([NONE]) * m
    if n >= NONE:
        raise ValueError(f"at most {NONE - 1} backends, got {n}")
    keys = [_IP.pack(ip) for ip in ips]
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


def is_prime(n):
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def flow_hash(src, dst, sport, dport, proto):
    """The hash that picks a new flow's table entry (taken mod M)."""
    return zlib.crc32(_FIVE_TUPLE.pack(src, dst, sport, dport, proto))


# ------------------------------------------------------------------ state

class Flow(nfos.Record):
    backend: nfos.u8   # backend index (Allocator index)
    gen: nfos.u32      # the backend's lease generation when assigned


class Backend(nfos.Record):
    ip: nfos.ip4
    mac: nfos.mac
    gen: nfos.u32      # + 1 when a lease starts, + 1 when it ends (or the host changes)
    alive: nfos.boolean


class Chunk(nfos.Record):
    entries: nfos.Bytes(CHUNK)   # backend index per table entry, NONE = no backend


class Config(nfos.Record):
    mac: nfos.mac
    table_size: nfos.u32
    max_backends: nfos.u16
    rewrite_ip: nfos.boolean


def backend_expired(index):
    """on_expire of a lease (housekeeping): the backend is gone, and so is any other lapsed one."""
    retire(index)
    reap()
    rebuild_table()


@nf.init
def setup(p):
    if not is_prime(p.table_size) or p.table_size >= 1 << 31:
        raise ValueError(f"table_size must be a prime, got {p.table_size}")
    if not 1 <= p.max_backends < NONE:
        raise ValueError(f"max_backends must be 1..{NONE - 1}, got {p.max_backends}")
    if not 0 < p.heartbeat_port < 65536:
        raise ValueError(f"heartbeat_port must be 1..65535, got {p.heartbeat_port}")
    if p.backend_timeout <= 0:
        raise ValueError("backend_timeout must be > 0")
    nf.packet_sets(nfos.on("wan", ipv4=("src", "dst"), l4=("sport", "dport")),
                   protocols=("tcp", "udp"), state=Flow, expiry=p.flow_expiry, capacity=p.capacity)
    nf.state.leases = nfos.Allocator(p.max_backends, lease=p.backend_timeout,
                                     refresh_interval=p.refresh_interval, on_expire=backend_expired)
    nf.state.by_ip = nfos.Map(nfos.ip4, nfos.u8, 4 * p.max_backends)
    nf.state.backends = nfos.Vector(Backend, p.max_backends)
    nf.state.table = nfos.Vector(Chunk, (p.table_size + CHUNK - 1) // CHUNK)
    nf.state.config = nfos.Vector(Config, 1)   # read-only after init: never conflicts
    cfg = nf.state.config[0]
    cfg.mac = nfos.mac(p.mac)
    cfg.table_size = p.table_size
    cfg.max_backends = p.max_backends
    cfg.rewrite_ip = p.rewrite_ip
    rebuild_table()   # no backend: every entry NONE


# ------------------------------------------------------------------ backends

def retire(index):
    """End the backend at ``index`` (its lease ended): flows holding it re-assign."""
    b = nf.state.backends[index]
    nf.state.by_ip.delete(b.ip)
    b.gen += 1
    b.alive = False


def reap():
    """Retire every backend whose lease ran out but was not reclaimed yet; True if any."""
    leases, backends = nf.state.leases, nf.state.backends
    found = False
    for i in range(nf.state.config[0].max_backends):
        if backends[i].alive and not leases.is_allocated(i):
            leases.free(i)
            retire(i)
            found = True
    return found


def rebuild_table():
    """Refill the lookup table from the alive backends (sorted by IP)."""
    cfg = nf.state.config[0]
    backends = nf.state.backends
    alive = []
    for i in range(cfg.max_backends):
        b = backends[i]
        if b.alive:
            alive.append((b.ip, i))
    alive.sort()
    to_index = bytes([i for _, i in alive]) + bytes(range(len(alive), 256))
    entries = maglev_table([ip for ip, _ in alive], cfg.table_size).translate(to_index)
    table = nf.state.table
    for k in range(len(table)):
        table[k].entries = entries[k * CHUNK:(k + 1) * CHUNK]


def heartbeat(pkt):
    ip, mac = pkt.ip.src, pkt.eth.src
    index = nf.state.by_ip.get(ip)
    if index is not None:
        if nf.state.leases.refresh(index):
            b = nf.state.backends[index]
            if b.mac != mac:   # another host took over the IP
                b.mac = mac
                b.gen += 1
            return
        reap()                 # its lease ran out (not reclaimed yet): a new lease
    new = nf.state.leases.allocate()
    if new is not None:
        b = nf.state.backends[new]
        b.ip = ip
        b.mac = mac
        b.gen += 1
        b.alive = True
        nf.state.by_ip.set(ip, new)
    elif index is None:
        return                 # max_backends alive: ignored
    rebuild_table()


# ------------------------------------------------------------------ traffic

def lookup(e):
    return nf.state.table[e // CHUNK].entries[e % CHUNK]


def assign(pkt, flow):
    """Pick a backend for ``pkt`` from the table; None when no backend is alive."""
    ip, l4 = pkt.ip, pkt.l4
    e = flow_hash(ip.src, ip.dst, l4.sport, l4.dport, ip.proto) % nf.state.config[0].table_size
    index = lookup(e)
    if index != NONE and not nf.state.leases.is_allocated(index):
        reap()                 # the table names a lapsed backend: retire all those, rebuild
        rebuild_table()
        index = lookup(e)
    if index == NONE:
        return None
    if flow is None:
        flow = nf.register(pkt)
    b = nf.state.backends[index]
    flow.backend = index
    flow.gen = b.gen
    return b


def forward(pkt, b):
    cfg = nf.state.config[0]
    pkt.eth.dst = b.mac
    pkt.eth.src = cfg.mac
    if cfg.rewrite_ip:
        pkt.ip.dst = b.ip
    pkt.send("lan")


@nf.new_packet_set
def new_flow(pkt):
    if pkt.ip.dst not in nf.params.vips:
        return   # not for us: dropped
    b = assign(pkt, None)
    if b is not None:
        forward(pkt, b)


@nf.packet
def flow_packet(pkt, flow):
    index = flow.backend
    b = nf.state.backends[index]
    if b.gen != flow.gen or not nf.state.leases.is_allocated(index):   # its lease ended
        b = assign(pkt, flow)
        if b is None:
            return
    forward(pkt, b)


@nf.orphan
def other(pkt):
    if pkt.dev != "lan":
        return   # not TCP/UDP from clients: dropped
    udp = pkt.udp
    if udp is not None and udp.dport == nf.params.heartbeat_port:
        heartbeat(pkt)
    else:
        pkt.send("wan")
