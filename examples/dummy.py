"""Dummy NF: one shared-array access per packet (the NFOS paper's §5.3 microbenchmark).

Contract
--------
Devices ``lan`` and ``wan``.  Every packet leaves unchanged on the other
device.  Per packet the NF reads one element of a shared array of 10,000
i64; with ``mode=rw`` it first writes it (sets it to 0).

* The element is the next entry of a fixed sequence of 10,000 indexes,
  uniform (``skew=0``) or Zipf with θ = ``skew`` (0.99 in the paper).
* Packet sets are TCP/UDP sessions, both directions in one set (as in the
  firewall), idle for 60 s at most; each keeps its own cursor into the
  sequence, starting at the source port of its first packet.  Other packets
  touch no element.

Theory of operation
-------------------
The sequence is drawn once in ``@nf.init`` from ``random.Random(42)`` (Zipf
ranks with Gray et al.'s generator, "Quickly generating billion-record
synthetic databases", SIGMOD 1994) and scattered over the array by a fixed
multiplicative permutation, so hot elements are not neighbours.  It lives in
a Vector that is never written after init (four 16-bit indexes per u64
element), and the cursor is packet-set state, so every run of a trace
touches the same elements.  Reads never conflict; in ``rw`` mode two
workers writing the same element do, so ``skew`` sets the conflict rate.
"""

import random

import nfos

nf = nfos.NF("dummy", devices=["lan", "wan"],
             params={"mode": nfos.param(str, "ro", "ro: read an element; rw: write it, then read it"),
                     "skew": nfos.param(float, 0.0, "Zipf theta of the element choice (0 = uniform)")})

SIZE = 10_000
SCATTER = 7919   # a prime: i -> i * SCATTER % SIZE is a permutation
SEED = 42


class Session(nfos.Record):
    cursor: nfos.u32   # next position in the index sequence


class Config(nfos.Record):
    write: nfos.boolean


def zipf_ranks(n, theta, count, rng):
    """``count`` ranks in [0, n), rank r drawn with probability ~ 1 / (r + 1) ** theta."""
    zetan = sum(1.0 / i ** theta for i in range(1, n + 1))
    zeta2 = 1.0 + 0.5 ** theta
    alpha = 1.0 / (1.0 - theta)
    eta = (1.0 - (2.0 / n) ** (1.0 - theta)) / (1.0 - zeta2 / zetan)
    ranks = []
    for _ in range(count):
        u = rng.random()
        if u * zetan < 1.0:
            ranks.append(0)
        elif u * zetan < zeta2:
            ranks.append(1)
        else:
            ranks.append(min(int(n * (eta * u - eta + 1.0) ** alpha), n - 1))
    return ranks


@nf.init
def setup(p):
    if p.mode not in ("ro", "rw"):
        raise ValueError(f"mode must be 'ro' or 'rw', got {p.mode!r}")
    if not 0.0 <= p.skew < 1.0:
        raise ValueError(f"skew must be in [0, 1), got {p.skew}")
    nf.packet_sets(
        nfos.on("lan", ipv4=("src", "dst"), l4=("sport", "dport")),
        nfos.on("wan", ipv4=("dst", "src"), l4=("dport", "sport")),
        protocols=("tcp", "udp"), state=Session, expiry=nfos.seconds(60))
    rng = random.Random(SEED)
    if p.skew == 0.0:
        ranks = [rng.randrange(SIZE) for _ in range(SIZE)]
    else:
        ranks = zipf_ranks(SIZE, p.skew, SIZE, rng)
    # four 16-bit indexes per element: init is one transaction, and a
    # transaction holds at most 4096 objects
    nf.state.sequence = nfos.Vector(nfos.u64, SIZE // 4)
    for i in range(0, SIZE, 4):
        nf.state.sequence[i // 4] = sum(r * SCATTER % SIZE << 16 * k for k, r in enumerate(ranks[i:i + 4]))
    nf.state.data = nfos.Vector(nfos.i64, SIZE)
    nf.state.config = nfos.Vector(Config, 1)   # read-only after init: never conflicts
    nf.state.config[0].write = p.mode == "rw"


def access(pkt, s):
    i = s.cursor
    s.cursor = i + 1 if i + 1 < SIZE else 0
    at = nf.state.sequence[i >> 2] >> (i & 3) * 16 & 0xFFFF
    data = nf.state.data
    if nf.state.config[0].write:
        data[at] = 0
    data[at]   # the read  # noqa: B018
    pkt.send(1 - pkt.dev_index)


@nf.new_packet_set
def new_session(pkt):
    s = nf.register(pkt)
    s.cursor = pkt.l4.sport % SIZE
    access(pkt, s)


nf.packet(access)


@nf.orphan
def other(pkt):
    pkt.send(1 - pkt.dev_index)
