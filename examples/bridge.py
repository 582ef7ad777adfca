"""MAC-learning bridge (IEEE 802.1Q learning; the NFOS paper's "br", §5.1, §5.4).

Contract
--------
Devices ``p0`` .. ``p{ports-1}`` (param ``ports``, default 2).  Frames leave
unchanged.  Every frame is handled the same way (no packet sets):

1. **Learning.**  A unicast source MAC (group bit clear) is learned on the
   input port:

   * unknown (or its entry's lease has expired) → it gets a table entry with
     a lease of ``validity`` (default 120 s); if the table already holds
     ``capacity`` live entries (default 65,536) it is not learned — the
     frame is still forwarded;
   * known → its lease is refreshed (see below) and, if it arrives on another
     port than the one recorded (the host moved), the entry's port is
     updated.  (NFOS's bridge ignored moves; this one does not.)

   A multicast or broadcast source is never learned.
2. **Forwarding** by destination MAC, after learning:

   * broadcast or multicast (group bit set), unknown, or known with an
     expired lease → flooded to every port but the input one;
   * known on another port → sent to that port only;
   * known on the input port → dropped (filtered).

**Leases.**  A refresh at time ``t`` renews the lease to ``t + validity``,
but only if the last renewal is at least ``refresh_interval`` old (default
60 s); a younger refresh changes nothing.  So an entry lives ``validity``
after its last *renewal*, which may be up to ``refresh_interval`` before
the host's last frame.  ``refresh_interval=0`` renews on every frame (the
paper's "default semantics": an entry lives ``validity`` after the host's
last frame).  ``validity=0`` means entries never expire.  An expired entry
counts as unknown at once, even before it is reclaimed.

Malformed frames (e.g. an IPv4 header that does not fit the frame) are
counted and dropped by the runtime before the bridge sees them.

Theory of operation
-------------------
The table is a ``Map`` MAC → (port, lease index); leases come from an
``Allocator`` of ``capacity`` indexes, which bounds the table and reclaims
expired leases (in the control process, or lazily when a worker's pool is
empty); ``on_expire(index)`` then deletes the Map entry, whose MAC it finds
in the ``macs`` Vector.

Why this scales: every frame *reads* the table twice (source and
destination) and reads two lease cells, but aggregate state is *written*
only when a MAC is learned, moves, or its lease renewal is due.  Reads of
the same MACs by all workers never conflict; in steady state (hosts known,
not moving) transactions are read-only.  The one knob is the recipe
``refresh_interval``: with 0, every frame renews its source's lease, which
writes the lease cell (and, about once a second, the owning pool's expiry
list), so a host's frames on several workers conflict on its cell.  With a
refresh interval of 60 s a host's lease is written once a minute, at the
price of a lease ending up to 60 s early.  Learning writes one Map bucket
(two MACs conflict only if they share a bucket: the Map has two buckets per
entry of capacity) and the learning worker's own pool head.
"""

import nfos

GROUP_BIT = 1 << 40   # the I/G bit (first octet & 1) of a 48-bit MAC held as an int


def _ports(p):
    return [f"p{i}" for i in range(p.ports)]


nf = nfos.NF("bridge", devices=_ports,
             params={"ports": nfos.param(int, 2, "bridge ports: devices p0..p{ports-1}"),
                     "capacity": nfos.param(int, 65536, "MAC table entries"),
                     "validity": nfos.param(nfos.Duration, nfos.seconds(120),
                                            "an entry's lifetime after its last renewal (0 = forever)"),
                     "refresh_interval": nfos.param(nfos.Duration, nfos.seconds(60),
                                                    "a lease is renewed at most this often (0 = every frame)")})


class Entry(nfos.Record):
    port: nfos.u8    # the port the MAC was last seen on
    idx: nfos.u32    # its lease: an index of nf.state.leases


def forget(idx):
    """on_expire: the lease of ``idx`` was reclaimed; drop its table entry."""
    table = nf.state.table
    mac = nf.state.macs[idx]
    e = table.get(mac)
    if e is not None and e.idx == idx:
        table.delete(mac)


@nf.init
def setup(p):
    if not 2 <= p.ports <= 32:
        raise ValueError(f"ports must be 2..32, got {p.ports}")
    if p.capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {p.capacity}")
    if p.validity and p.refresh_interval >= p.validity:
        raise ValueError(f"refresh_interval ({p.refresh_interval} ns) must be shorter than validity "
                         f"({p.validity} ns), or no lease would ever be renewed")
    buckets = 2 << max(0, (p.capacity - 1).bit_length())   # two buckets per entry
    nf.state.table = nfos.Map(nfos.mac, Entry, p.capacity, buckets=buckets)
    nf.state.macs = nfos.Vector(nfos.mac, p.capacity)
    nf.state.leases = nfos.Allocator(p.capacity, lease=p.validity or None,
                                     refresh_interval=p.refresh_interval, on_expire=forget)


def learn(mac, port, e):
    """Give ``mac`` (``e``: its entry with an expired lease, or None) a new lease on ``port``."""
    st = nf.state
    leases = st.leases
    if e is not None:
        leases.free(e.idx)   # the expired lease: never reclaimed (on_expire) now
    idx = leases.allocate()
    if idx is None:          # table full: not learned
        if e is not None:
            st.table.delete(mac)
        return
    if e is None:
        try:
            e = st.table.set(mac)
        except nfos.MapFull:   # the MAC's bucket is full (2 buckets per entry: very unlikely)
            leases.free(idx)
            return
    e.port = port
    e.idx = idx
    st.macs[idx] = mac


@nf.orphan
def bridge(pkt):
    st = nf.state
    table, leases = st.table, st.leases
    eth = pkt.eth
    src, dst, port = eth.src, eth.dst, pkt.dev_index
    if not src & GROUP_BIT:
        e = table.get(src)
        if e is None:
            learn(src, port, None)
        elif not leases.refresh(e.idx):   # expired, not yet reclaimed
            learn(src, port, e)
        elif e.port != port:              # the host moved
            e.port = port
    if dst & GROUP_BIT:
        pkt.flood()
        return
    d = table.get(dst)
    if d is None or not leases.is_allocated(d.idx):
        pkt.flood()
    elif d.port != port:
        pkt.send(d.port)
    # else: the destination is on the input port: filtered (dropped)
