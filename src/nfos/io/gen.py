"""Deterministic synthetic traces (header-only 64-byte Ethernet/IPv4/TCP|UDP frames).

Frames are built for all packets at once as a (packets, 32) array of big-endian
16-bit words -- every header field of these frames sits on a 16-bit boundary --
so checksums and field patches are vectorised numpy operations. Only
``Generator.random``/``integers``/``permutation`` are used for draws, so a seed
gives the same bytes on every machine.
"""

from __future__ import annotations

import struct

import numpy as np

from nfos.io.capture import Trace

__all__ = ["checksum16", "gen_antiddos", "gen_caida"]

START_NS = 1_000_000_000  # first packet time; time 0 is never a packet time
DEV_NAMES = ["lan", "wan"]
SYN, FIN, ACK = 0x02, 0x01, 0x10
_TCP_PORTS = np.array([80, 443, 22, 25, 8080, 993, 3389, 143], dtype=np.int64)
_UDP_PORTS = np.array([53, 123, 443, 500, 1900, 5353], dtype=np.int64)
_WAN_OCTETS = np.array([o for o in range(1, 127) if o != 10], dtype=np.int64)
PARETO_ALPHA = 1.2  # flow-size tail: many one-to-few packet flows, a few elephants


def checksum16(data: bytes) -> int:
    """Internet checksum (RFC 1071); 0 when computed over data holding a valid checksum."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _fold(s: np.ndarray) -> np.ndarray:
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _build(sip: np.ndarray, dip: np.ndarray, sport: np.ndarray, dport: np.ndarray,
           tcp: np.ndarray, seq: np.ndarray, ack: np.ndarray, flags: np.ndarray,
           reply: np.ndarray, rate: float) -> Trace:
    """Assemble frames (one row of per-packet fields each) into a Trace; replies go on ``wan``."""
    n = len(sip)
    w = np.zeros((n, 32), dtype=">u2")
    w[:, 0] = w[:, 3] = 0x0200  # MACs 02:00:00:00:00:01 (lan side) and :02 (wan side)
    w[:, 2] = np.where(reply, 1, 2)
    w[:, 5] = np.where(reply, 2, 1)
    w[:, 6] = 0x0800
    w[:, 7] = 0x4500
    w[:, 8] = np.where(tcp, 40, 28)  # IP header + L4 header; the rest is Ethernet padding
    w[:, 9] = np.arange(n) & 0xFFFF  # IP id
    w[:, 10] = 0x4000  # DF
    w[:, 11] = np.where(tcp, 0x4006, 0x4011)  # TTL 64, protocol
    w[:, 13], w[:, 14] = sip >> 16, sip & 0xFFFF
    w[:, 15], w[:, 16] = dip >> 16, dip & 0xFFFF
    w[:, 17], w[:, 18] = sport, dport
    w[:, 19] = np.where(tcp, seq >> 16, 8)  # TCP seq high / UDP length
    w[:, 20] = np.where(tcp, seq & 0xFFFF, 0)
    w[:, 21] = np.where(tcp, ack >> 16, 0)
    w[:, 22] = np.where(tcp, ack & 0xFFFF, 0)
    w[:, 23] = np.where(tcp, 0x5000 | flags, 0)
    w[:, 24] = np.where(tcp, 0xFFFF, 0)  # window
    w[:, 12] = _fold(w[:, 7:17].sum(axis=1, dtype=np.int64))
    pseudo = w[:, 13:27].sum(axis=1, dtype=np.int64) + np.where(tcp, 6 + 20, 17 + 8)
    l4 = _fold(pseudo)
    w[:, 25] = np.where(tcp, l4, 0)
    w[:, 20] = np.where(tcp, w[:, 20], np.where(l4 == 0, 0xFFFF, l4))  # UDP: 0 means "none"
    buf = w.tobytes()
    times = (np.arange(n, dtype=np.float64) * (1e9 / rate)).astype(np.int64) + START_NS
    return Trace(list(DEV_NAMES), [buf[i:i + 64] for i in range(0, 64 * n, 64)],
                 times.tolist(), reply.astype(np.int64).tolist(), [])


def _check_rate(rate: float) -> None:
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")


def _draw_flows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random flow tuples as rows (lan ip, wan ip, lan port, wan port, is tcp)."""
    sip = 0x0A000000 | rng.integers(0, 1 << 24, n)
    dip = _WAN_OCTETS[rng.integers(0, len(_WAN_OCTETS), n)] << 24 | rng.integers(0, 1 << 24, n)
    sport = rng.integers(1024, 65536, n)
    tcp = rng.random(n) < 0.8
    popular = np.where(tcp, _TCP_PORTS[rng.integers(0, len(_TCP_PORTS), n)],
                       _UDP_PORTS[rng.integers(0, len(_UDP_PORTS), n)])
    dport = np.where(rng.random(n) < 0.8, popular, rng.integers(1024, 65536, n))
    return np.stack([sip, dip, sport, dport, tcp.astype(np.int64)], axis=1)


def _flow_sizes(rng: np.random.Generator, packets: int, flows: int, alpha: float = PARETO_ALPHA) -> np.ndarray:
    """Heavy-tailed (Pareto, tail index ``alpha``) sizes >= 1 summing exactly to ``packets``."""
    weight = (1.0 - rng.random(flows)) ** (-1.0 / alpha)
    share = weight / weight.sum() * (packets - flows)
    sizes = np.floor(share).astype(np.int64)
    left = packets - flows - int(sizes.sum())
    sizes[np.argsort(sizes - share, kind="stable")[:left]] += 1  # largest remainders
    return sizes + 1


def gen_caida(packets: int, flows: int, reverse: float = 0.0, rate: float = 1e6,
              seed: int = 1, alpha: float = PARETO_ALPHA) -> Trace:
    """CAIDA-like LAN->WAN trace: ``flows`` distinct 5-tuples, heavy-tailed sizes, interleaved.

    ``packets`` counts LAN->WAN packets (mean flow size ``packets / flows``). A
    ``reverse`` fraction of the flows also gets one WAN->LAN reply right after
    each of its packets, in addition to ``packets``; ``rate`` is frames per
    second over the whole trace.  ``alpha`` is the flow sizes' Pareto tail index: the
    default 1.2 (infinite variance) gives a few elephants, the largest often several percent
    of all packets; 2 or more gives flows of more even sizes.
    """
    if not alpha > 1.0:
        raise ValueError(f"alpha must be > 1, got {alpha}")
    if not 1 <= flows <= packets:
        raise ValueError(f"need 1 <= flows <= packets, got flows={flows}, packets={packets}")
    if not 0.0 <= reverse <= 1.0:
        raise ValueError(f"reverse must be in [0, 1], got {reverse}")
    _check_rate(rate)
    rng = np.random.default_rng(seed)
    table = _draw_flows(rng, flows)
    while True:  # redraw duplicated 5-tuples until all flows are distinct
        _, first = np.unique(table, axis=0, return_index=True)
        dup = np.setdiff1d(np.arange(flows), first)
        if not len(dup):
            break
        table[dup] = _draw_flows(rng, len(dup))
    sip, dip, sport, dport, tcp = table.T
    tcp = tcp.astype(bool)
    sizes = _flow_sizes(rng, packets, flows, alpha)
    isn = rng.integers(0, 1 << 32, (2, flows))
    answered = np.zeros(flows, dtype=bool)
    answered[rng.permutation(flows)[:round(reverse * flows)]] = True

    flow = rng.permutation(np.repeat(np.arange(flows), sizes))  # a flow's packets keep order
    k = np.empty(packets, dtype=np.int64)  # index of each packet within its flow
    by_flow = np.argsort(flow, kind="stable")
    k[by_flow] = np.arange(packets) - np.repeat(np.cumsum(sizes) - sizes, sizes)

    rep = answered[flow]
    pos = np.arange(packets) + np.cumsum(rep) - rep  # request slots, replies follow them
    total = packets + int(rep.sum())
    f = np.empty(total, dtype=np.int64)
    kk = np.empty(total, dtype=np.int64)
    reply = np.zeros(total, dtype=bool)
    f[pos], kk[pos] = flow, k
    f[pos[rep] + 1], kk[pos[rep] + 1], reply[pos[rep] + 1] = flow[rep], k[rep], True

    first, last = kk == 0, kk == sizes[f] - 1
    req_flags = np.where(first, SYN, np.where(last, FIN | ACK, ACK))
    flags = np.where(reply, np.where(first, SYN | ACK, ACK), req_flags)
    cli, srv = isn[0][f], isn[1][f]
    seq = np.where(reply, srv + ~first, cli + ~first) & 0xFFFFFFFF
    ack = np.where(reply, cli + 1 + (last & ~first), np.where(first, 0, srv + 1)) & 0xFFFFFFFF
    return _build(np.where(reply, dip[f], sip[f]), np.where(reply, sip[f], dip[f]),
                  np.where(reply, dport[f], sport[f]), np.where(reply, sport[f], dport[f]),
                  tcp[f], seq, ack, flags, reply, rate)


def gen_antiddos(packets: int, rate: float = 1e6, seed: int = 1) -> Trace:
    """The NFOS paper's Anti-DDoS pattern: a new TCP flow every 5 packets.

    Every 5th new flow is the "normal" one that gets all non-new packets until the
    next one, so 80% of flows have one packet and 20% have 21. The seed only
    rotates source ports, which keeps 5-tuples unique and flow sizes unchanged.
    """
    _check_rate(rate)
    i = np.arange(packets, dtype=np.int64)
    new = i % 5 == 0
    flow = np.where(new, i // 5, i // 25 * 5)
    k = np.where(new, 0, i % 25 - i % 25 // 5)
    port_shift = int(np.random.default_rng(seed).integers(0, 2048))
    zero = np.zeros(packets, dtype=np.int64)
    return _build(0x40000000 + flow // 2048, zero + 0x64000001,  # to server 100.0.0.1:80
                  1024 + (flow + port_shift) % 2048, zero + 80, np.ones(packets, dtype=bool),
                  zero + (k > 0), zero, np.where(k == 0, SYN, ACK),
                  np.zeros(packets, dtype=bool), rate)
