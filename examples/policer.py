"""Per-host traffic policer (the NFOS paper's "pol", Table 6).

Contract
--------
Devices ``lan`` (inside) and ``wan`` (outside).  Frames leave unchanged.

* LAN->WAN: every packet is forwarded, unpoliced.
* WAN->LAN: IPv4 packets are policed per destination host with a token bucket
  of ``burst`` bytes (default 100,000) refilled at ``rate`` bytes/s (default
  1,000,000): the real-valued bucket, computed exactly.  A packet of ``len``
  bytes (the frame length) is forwarded and takes ``len`` tokens if the bucket
  holds at least ``len``; otherwise it is dropped.
* An unknown host starts with a full bucket: its first packet is dropped
  (and the host stays unknown) if ``len > burst``; otherwise the host is
  registered with ``burst - len`` tokens and the packet forwarded.
* A known host's bucket is refilled first, on every packet, by
  ``(now - last) / 1e9 * rate`` bytes (``now`` and ``last`` in ns), capped at
  ``burst``, and ``last = now``; the refilled bucket is stored whether the
  packet passes or not.  No fraction of a byte is lost: the bucket is kept in
  units of 1e-9 byte (``tokens * 1e9``, integers), so a host whose packets
  come closer together than one byte of refill is refilled all the same, and
  every decision equals that of the real-valued bucket.
* A host is forgotten after ``ceil(burst * 1e9 / rate)`` ns without packets
  (its bucket is full again by then, so forgetting never changes a decision).
* Non-IPv4 WAN packets are dropped.

Theory of operation
-------------------
A host's bucket is the state of its packet set, keyed by the destination
address on ``wan`` only: RSS sends all of a host's traffic to one worker, so
no bucket is ever shared and no transaction conflicts.  ``lan`` has no
packet-set definition, so LAN packets are orphans (forwarded to WAN), as are
non-IPv4 WAN packets (dropped).  The expiry equals the refill time of an
empty bucket, so forgetting a host never changes a decision.
"""

import nfos

nf = nfos.NF("policer", devices=["lan", "wan"],
             params={"rate": nfos.param(int, 1_000_000, "refill rate per host, bytes/s"),
                     "burst": nfos.param(int, 100_000, "bucket size per host, bytes")})

NS_PER_S = 1_000_000_000


class Host(nfos.Record):
    credit: nfos.i64   # tokens left, in units of 1e-9 byte (bytes * NS_PER_S): no remainder is lost
    last: nfos.u64     # time of the last refill, ns


class Config(nfos.Record):
    rate: nfos.i64
    burst: nfos.i64


@nf.init
def setup(p):
    if p.rate <= 0 or p.burst <= 0:
        raise ValueError(f"rate and burst must be > 0, got rate={p.rate}, burst={p.burst}")
    if p.burst * NS_PER_S >= 1 << 63:
        raise ValueError(f"burst {p.burst} is too large: at most {((1 << 63) - 1) // NS_PER_S} bytes")
    full_after = -(-p.burst * NS_PER_S // p.rate)   # ns for an empty bucket to fill (ceil)
    nf.packet_sets(nfos.on("wan", ipv4=("dst",)), state=Host, expiry=full_after)
    nf.state.config = nfos.Vector(Config, 1)   # read-only after init: never conflicts
    cfg = nf.state.config[0]
    cfg.rate = p.rate
    cfg.burst = p.burst


@nf.new_packet_set
def new_host(pkt):
    burst = nf.state.config[0].burst
    if pkt.len > burst:
        return   # more than a full bucket: dropped, the host stays unknown
    h = nf.register(pkt)
    h.credit = (burst - pkt.len) * NS_PER_S
    h.last = nfos.now()
    pkt.send("lan")


@nf.packet
def police(pkt, h):
    cfg = nf.state.config[0]
    now = nfos.now()
    full = cfg.burst * NS_PER_S
    # (now - last) ns at rate bytes/s is (now - last) * rate units of 1e-9 byte: exact
    credit = min(h.credit + (now - h.last) * cfg.rate, full)
    h.last = now
    need = pkt.len * NS_PER_S
    if credit >= need:
        credit -= need
        pkt.send("lan")
    h.credit = credit


@nf.orphan
def unpoliced(pkt):
    if pkt.dev == "lan":
        pkt.send("wan")
