"""Deterministic data-centre trace for a MAC-learning bridge (the NFOS paper's bridge pattern, §5.1).

``macs`` hosts with random unicast MACs (locally administered) and addresses
10.0.0.1, 10.0.0.2, ... are spread evenly over the ports ``p0..p{ports-1}``
(at random).  The trace starts with one broadcast gratuitous ARP request
from every host (so a bridge learns every host), then carries MAC "flows":
a flow is ``flow_packets`` UDP packets from one host to a host on another
port (traffic between hosts behind the same port never reaches the bridge
in a switched network), all flows interleaved at random over the rest of
the trace (a flow's packets keep their order).  Every frame is 64 bytes
(Ethernet/IPv4/UDP with valid checksums, or ARP, zero-padded) and arrives on
its source host's port.

Because every flow crosses ports, with two ports a unicast frame leaves on
the other port whether or not its destination has been learned yet, so any
interleaving of the frames over workers gives the same output multiset.
"""

from __future__ import annotations

import numpy as np

from nfos.io.capture import Trace
from nfos.io.gen import START_NS, _check_rate, _fold

__all__ = ["gen_bridge"]

UDP_DPORT = 5201
_GROUP = 1 << 40   # I/G bit of a 48-bit MAC
_LOCAL = 1 << 41   # U/L bit: locally administered


def _words(values: np.ndarray, n: int) -> list[np.ndarray]:
    """Split ints into ``n`` big-endian 16-bit words, most significant first."""
    return [(values >> (16 * (n - 1 - k))) & 0xFFFF for k in range(n)]


def _host_macs(rng: np.random.Generator, macs: int) -> np.ndarray:
    mac = rng.integers(0, 1 << 48, macs)
    while True:   # redraw duplicates until all MACs are distinct
        mac = mac & ~_GROUP | _LOCAL
        _, first = np.unique(mac, return_index=True)
        dup = np.setdiff1d(np.arange(macs), first)
        if not len(dup):
            return mac
        mac[dup] = rng.integers(0, 1 << 48, len(dup))


def gen_bridge(packets: int, macs: int = 256, flow_packets: int = 10_000, ports: int = 2,
               rate: float = 1e6, seed: int = 1) -> Trace:
    """A bridge trace of ``packets`` frames in all: ``macs`` ARP broadcasts, then MAC flows.

    ``flow_packets`` packets per flow (the last flow may be shorter); ``ports``
    devices ``p0..p{ports-1}``; ``rate`` frames per second from 1 s on.
    """
    if not 2 <= ports <= 32:
        raise ValueError(f"ports must be 2..32, got {ports}")
    if not ports <= macs <= (1 << 24) - 2:
        raise ValueError(f"need ports <= macs <= 2^24-2 (every port has a host), got macs={macs}")
    if packets < macs:
        raise ValueError(f"packets ({packets}) must be at least macs ({macs}): one ARP per host first")
    if flow_packets < 1:
        raise ValueError(f"flow_packets must be >= 1, got {flow_packets}")
    _check_rate(rate)
    rng = np.random.default_rng(seed)
    mac = _host_macs(rng, macs)
    ip = 0x0A000001 + np.arange(macs, dtype=np.int64)
    port = rng.permutation(np.arange(macs, dtype=np.int64) % ports)

    # flows: a source host and a destination host on another port
    body = packets - macs
    nflows = -(-body // flow_packets)
    sizes = np.full(nflows, flow_packets, dtype=np.int64)
    if nflows:
        sizes[-1] = body - flow_packets * (nflows - 1)
    src = rng.integers(0, macs, nflows)
    by_port = np.argsort(port, kind="stable")           # hosts grouped by port
    count = np.bincount(port, minlength=ports)
    start = np.cumsum(count) - count
    ps = port[src]
    r = rng.integers(0, macs - count[ps])               # r-th host not on the source's port
    dst = by_port[r + np.where(r >= start[ps], count[ps], 0)]
    sport = rng.integers(1024, 65536, nflows)
    flow = rng.permutation(np.repeat(np.arange(nflows), sizes))

    n = packets
    w = np.zeros((n, 32), dtype=np.int64)
    s = np.concatenate([np.arange(macs), src[flow]])    # source host of every frame
    w[:, 3], w[:, 4], w[:, 5] = _words(mac[s], 3)
    # the ARP broadcasts: gratuitous requests (sender = target = the host)
    a = slice(0, macs)
    w[a, 0] = w[a, 1] = w[a, 2] = 0xFFFF
    w[a, 6], w[a, 7], w[a, 8], w[a, 9], w[a, 10] = 0x0806, 1, 0x0800, 0x0604, 1
    w[a, 11], w[a, 12], w[a, 13] = _words(mac, 3)
    w[a, 14], w[a, 15] = _words(ip, 2)
    w[a, 19], w[a, 20] = _words(ip, 2)
    # the flows: UDP, 28 bytes of IP datagram, the rest Ethernet padding
    u = slice(macs, n)
    d = dst[flow]
    w[u, 0], w[u, 1], w[u, 2] = _words(mac[d], 3)
    w[u, 6], w[u, 7], w[u, 8] = 0x0800, 0x4500, 28
    w[u, 9] = np.arange(macs, n) & 0xFFFF               # IP id
    w[u, 10], w[u, 11] = 0x4000, 0x4011                 # DF; TTL 64, UDP
    w[u, 13], w[u, 14] = _words(ip[s[u]], 2)
    w[u, 15], w[u, 16] = _words(ip[d], 2)
    w[u, 17], w[u, 18], w[u, 19] = sport[flow], UDP_DPORT, 8
    w[u, 12] = _fold(w[u, 7:17].sum(axis=1))
    l4 = _fold(w[u, 13:20].sum(axis=1) + 17 + 8)        # pseudo header + UDP header
    w[u, 20] = np.where(l4 == 0, 0xFFFF, l4)            # UDP: 0 means "no checksum"

    buf = w.astype(">u2").tobytes()
    times = (np.arange(n, dtype=np.float64) * (1e9 / rate)).astype(np.int64) + START_NS
    return Trace([f"p{i}" for i in range(ports)], [buf[i:i + 64] for i in range(0, 64 * n, 64)],
                 times.tolist(), port[s].tolist(), [])
