"""Deterministic load-balancer traces: HTTP-like client flows to VIPs plus backend heartbeats.

Devices ``wan`` (0, clients) and ``lan`` (1, backends).  Frames are the 64-byte
Ethernet/IPv4/TCP|UDP frames of :mod:`nfos.io.gen` (valid checksums), at
``START_NS + i / rate`` like every generated trace.
"""

from __future__ import annotations

import math

import numpy as np

from nfos.io.capture import Trace
from nfos.io.gen import (
    _WAN_OCTETS,
    ACK,
    FIN,
    START_NS,
    SYN,
    _build,
    _check_rate,
    _flow_sizes,
)

__all__ = ["LB_MAC", "gen_lb"]

LB_DEV_NAMES = ["wan", "lan"]
LB_MAC = 0x0200000000BB           # the balancer: destination MAC of every frame
CLIENT_ROUTER_MAC = 0x020000000001  # source MAC of client frames
BACKEND_MAC_BASE = 0x020000000100   # backend k (1-based) is 02:00:00:00:01:kk
BACKEND_IP_BASE = 0x0A000000        # backend k is 10.0.0.k
HEARTBEAT_DST = 0x0A0000FE          # heartbeats go to 10.0.0.254 (the balancer)
HTTP_PORT = 80


def _ip_int(text: str) -> int:
    parts = [int(x) for x in text.split(".")]
    if len(parts) != 4 or not all(0 <= x < 256 for x in parts):
        raise ValueError(f"not an IPv4 address: {text!r}")
    return parts[0] << 24 | parts[1] << 16 | parts[2] << 8 | parts[3]


def _heartbeat_slots(packets: int, backends: int, interval: float, rate: float) -> list[int]:
    """First frame slot of each heartbeat round: round r at slot ceil(r * interval * rate)
    (or right after the previous round), while client packets remain after it."""
    starts: list[int] = []
    end = 0   # first slot after the previous round
    while True:
        r = len(starts)
        at = max(math.ceil(r * interval * rate - 1e-9), end)
        # slots before `at` that are client packets: at - backends * r; a round
        # only comes when at least one client packet is still to follow it
        if at - backends * r >= packets:
            return starts
        starts.append(at)
        end = at + backends


def gen_lb(packets: int, flows: int, backends: int = 3, vips=("118.0.0.1", "118.0.0.2"),
           heartbeat_interval: float = 1.0, heartbeat_port: int = 7777, rate: float = 1e6,
           seed: int = 1) -> Trace:
    """Client TCP flows to the ``vips`` on ``wan`` and backend heartbeats on ``lan``.

    ``packets`` counts client packets (heartbeats come in addition), ``flows``
    distinct client 5-tuples (random client IP outside 10/8, port 1024..65535,
    a random VIP, port 80) with heavy-tailed sizes (as in ``gen_caida``),
    interleaved at random; each flow is SYN, ACK..., FIN|ACK (a one-packet flow
    is a SYN).  Backend k = 1..``backends`` is 10.0.0.k with MAC
    02:00:00:00:01:kk; each sends a UDP heartbeat ``heartbeat_port`` ->
    ``heartbeat_port`` to 10.0.0.254 at virtual time 0 (the first frames) and
    every ``heartbeat_interval`` seconds after, while client packets remain.
    Every frame goes to MAC 02:00:00:00:00:bb (client frames come from
    02:00:00:00:00:01).  Frame i is at ``1 s + i / rate``.
    """
    if not 1 <= flows <= packets:
        raise ValueError(f"need 1 <= flows <= packets, got flows={flows}, packets={packets}")
    if not 1 <= backends <= 253:
        raise ValueError(f"backends must be 1..253, got {backends}")
    if not vips:
        raise ValueError("vips must name at least one address")
    if not heartbeat_interval > 0:
        raise ValueError(f"heartbeat_interval must be positive, got {heartbeat_interval}")
    if not 0 < heartbeat_port < 65536:
        raise ValueError(f"heartbeat_port must be 1..65535, got {heartbeat_port}")
    _check_rate(rate)
    if not heartbeat_interval * rate > backends:
        raise ValueError(f"a heartbeat round ({backends} frames) must fit in heartbeat_interval * rate "
                         f"= {heartbeat_interval * rate:g} frame slots")
    vip = np.array([_ip_int(v) for v in vips], dtype=np.int64)
    rng = np.random.default_rng(seed)

    def draw(n: int) -> np.ndarray:   # rows (client ip, client port, vip)
        cip = _WAN_OCTETS[rng.integers(0, len(_WAN_OCTETS), n)] << 24 | rng.integers(0, 1 << 24, n)
        return np.stack([cip, rng.integers(1024, 65536, n), vip[rng.integers(0, len(vip), n)]], axis=1)

    table = draw(flows)
    while True:   # redraw duplicated 5-tuples until all flows are distinct
        _, first = np.unique(table, axis=0, return_index=True)
        dup = np.setdiff1d(np.arange(flows), first)
        if not len(dup):
            break
        table[dup] = draw(len(dup))
    cip, cport, dip = table.T
    sizes = _flow_sizes(rng, packets, flows)
    isn = rng.integers(0, 1 << 32, (2, flows))
    flow = rng.permutation(np.repeat(np.arange(flows), sizes))   # a flow's packets keep order
    k = np.empty(packets, dtype=np.int64)
    k[np.argsort(flow, kind="stable")] = np.arange(packets) - np.repeat(np.cumsum(sizes) - sizes, sizes)

    starts = _heartbeat_slots(packets, backends, heartbeat_interval, rate)
    total = packets + backends * len(starts)
    hb = np.zeros(total, dtype=bool)
    for s in starts:
        hb[s:s + backends] = True
    backend = np.zeros(total, dtype=np.int64)
    backend[hb] = np.tile(np.arange(1, backends + 1), len(starts))

    f = np.zeros(total, dtype=np.int64)
    kk = np.zeros(total, dtype=np.int64)
    f[~hb], kk[~hb] = flow, k
    first, last = kk == 0, kk == sizes[f] - 1
    flags = np.where(first, SYN, np.where(last, FIN | ACK, ACK))
    seq = (isn[0][f] + ~first) & 0xFFFFFFFF
    ack = np.where(first, 0, isn[1][f] + 1) & 0xFFFFFFFF
    port = np.int64(heartbeat_port)
    base = _build(np.where(hb, BACKEND_IP_BASE + backend, cip[f]),
                  np.where(hb, HEARTBEAT_DST, dip[f]),
                  np.where(hb, port, cport[f]), np.where(hb, port, HTTP_PORT),
                  ~hb, seq, ack, flags, hb, rate)
    # MACs are in no checksum: patch them over _build's
    w = np.frombuffer(b"".join(base.frames), dtype=">u2").reshape(total, 32).copy()
    src_mac = np.where(hb, BACKEND_MAC_BASE + backend, CLIENT_ROUTER_MAC)
    for j, shift in enumerate((32, 16, 0)):
        w[:, j] = (LB_MAC >> shift) & 0xFFFF
        w[:, 3 + j] = (src_mac >> shift) & 0xFFFF
    buf = w.tobytes()
    frames = [buf[i:i + 64] for i in range(0, 64 * total, 64)]
    times = (np.arange(total, dtype=np.float64) * (1e9 / rate)).astype(np.int64) + START_NS
    return Trace(list(LB_DEV_NAMES), frames, times.tolist(), hb.astype(np.int64).tolist(), [])
