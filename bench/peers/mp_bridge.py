"""The MAC-learning bridge hand-parallelised in plain Python: what a developer writes with
``multiprocessing`` and no nfos (the parallel peer of ``plain_bridge.py``).

Same contract as ``plain_bridge.py`` / ``examples/bridge.py``: devices ``p0..p{ports-1}``; a
unicast source MAC is learned on its input port with a lease of ``validity`` ns (0: forever),
renewed only if the last renewal is at least ``refresh_interval`` old, following the host
when it moves; no new MAC is learned while ``capacity`` entries exist (expired ones are
reclaimed first); a frame to a group, unknown or expired destination is flooded to the other
ports, to a known one sent to its port, dropped if that is the input port; frames the nfos
parser calls malformed are dropped (``plain_bridge.malformed``).

Parallelisation (``workers`` processes, ``fork``):

* Input is flow-sharded by source MAC before the processes start, so one process learns and
  renews each MAC (a host's frames keep their order, whatever port they arrive on).
* The MAC table is shared by all processes: a hash table in one
  ``multiprocessing.shared_memory`` block, ``buckets`` (a power of two >= capacity) of 8
  slots, a slot = MAC + 1 (0: empty) and (port, expiry, last renewal), as 64-bit words;
  a MAC in the bucket a multiplicative hash picks (the keys of a bucket are contiguous).  The buckets are guarded by 64 lock stripes
  (``multiprocessing.Lock``, bucket % 64): each frame takes its source's stripe (learn or
  renew) and its destination's stripe (look up the port).  One more lock guards the entry
  count and the earliest expiry; it is taken only to learn a MAC (and then, when the table
  is full and something has expired, to reclaim expired entries: a numpy scan).
* Each process has its own clock (the largest timestamp it has seen), as nfos's workers do.

With one process the output is the sequential peer's, frame for frame.  With several, a
frame may be forwarded before or after another process learned its destination, so the
output is that of *some* interleaving; on traces where that cannot matter (every unicast
frame crosses ports on a 2-port bridge, like ``nfos gen bridge``) the output multiset equals
the sequential one, which the tests check.  A MAC whose bucket already holds 8 entries is not
learned (about one bucket in a million at a full table).

    outputs, seconds = run(frames, devs, times_ns, workers=4, ports=2)
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import sys
from multiprocessing import shared_memory

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _mp  # noqa: E402

plain = _mp.sibling("plain_bridge")
NS_PER_S = plain.NS_PER_S
NEVER = (1 << 63) - 1
STRIPES = 64
SLOTS = 8                     # per bucket
PORT, EXPIRY, LAST = range(3)
WORDS = 3                     # per slot, after the keys
COUNT, SOONEST = 0, 1         # header words (after the table)
GOLDEN = 0x9E3779B97F4A7C15
# plain_bridge's header struct with each MAC as two ints (16 + 32 bits)
_HDR = struct.Struct("!HIHIHBxH2xHxB22xB")
_MACS = struct.Struct("!HIHI")


def _key(frame: bytes, dev: int) -> bytes | None:
    return frame[6:12] if len(frame) >= 12 else None


def run(frames: list[bytes], devs: list[int], times_ns: list[int], workers: int = 2, ports: int = 2,
        capacity: int = 65536, validity: int = 120 * NS_PER_S, refresh_interval: int = 60 * NS_PER_S,
        counters: dict | None = None, keep_output: bool = True) -> tuple[dict[str, list[bytes]], float]:
    """(frames out per device, seconds of the processing phase); see the module doc."""
    if not 2 <= ports <= 32 or capacity < 1:
        raise ValueError(f"need 2 <= ports <= 32 and capacity >= 1, got ports={ports}, capacity={capacity}")
    if validity and refresh_interval >= validity:
        raise ValueError("refresh_interval must be shorter than validity")
    buckets = 1 << max(0, (capacity - 1).bit_length())
    shift = 64 - buckets.bit_length() + 1          # hash: the top bits of MAC * GOLDEN
    nslots = buckets * SLOTS
    vals = nslots                                  # slot s's words at vals + s * WORDS
    head = vals + nslots * WORDS
    ctx = multiprocessing.get_context("fork")
    shm = shared_memory.SharedMemory(create=True, size=8 * (head + 2))
    words = shm.buf.cast("q")
    words[head + SOONEST] = NEVER
    locks = [ctx.Lock() for _ in range(STRIPES)]
    count_lock = ctx.Lock()
    start = times_ns[0] if times_ns else 0

    def reclaim(now: int) -> None:
        """Drop the expired entries (the count lock is held)."""
        keys = np.frombuffer(shm.buf, dtype=np.int64, count=nslots)
        exp = np.frombuffer(shm.buf, dtype=np.int64, count=nslots * WORDS, offset=8 * vals)[EXPIRY::WORDS]
        gone = 0
        for s in np.flatnonzero((keys != 0) & (exp <= now)).tolist():
            with locks[(s // SLOTS) % STRIPES]:
                if words[s] and words[vals + s * WORDS + EXPIRY] <= now:
                    words[s] = 0
                    gone += 1
        live = exp[keys != 0]
        words[head + SOONEST] = int(live.min()) if len(live) else NEVER
        words[head + COUNT] -= gone
        del keys, exp, live

    def learn(key: int, b: int, dev: int, now: int) -> None:
        """Insert a MAC that has no entry (only its owner process learns it)."""
        with count_lock:
            count = words[head + COUNT]
            if count >= capacity and validity and words[head + SOONEST] <= now:
                reclaim(now)
                count = words[head + COUNT]
            if count >= capacity:
                return
            first = b * SLOTS
            with locks[b % STRIPES]:
                keys = words[first:first + SLOTS].tolist()
                if 0 not in keys:
                    return   # the bucket is full: not learned
                s = first + keys.index(0)
                exp = now + validity if validity else NEVER
                at = vals + s * WORDS
                words[s], words[at + PORT], words[at + EXPIRY], words[at + LAST] = key, dev, exp, now
            words[head + COUNT] = count + 1
            if exp < words[head + SOONEST]:
                words[head + SOONEST] = exp

    def process(frames: list[bytes], devs: list[int], times: list[int]):
        out: list[list[bytes]] = [[] for _ in range(ports)]
        others = [[out[p] for p in range(ports) if p != q] for q in range(ports)]
        unpack, macs, malformed = _HDR.unpack_from, _MACS.unpack_from, plain.malformed
        w = words
        now = start
        for frame, dev, t in zip(frames, devs, times, strict=True):
            if t > now:
                now = t
            n = len(frame)
            if n >= 47:
                dhi, dlo, shi, slo, etype, vihl, total, frag, proto, doff = unpack(frame)
                if etype == 0x0800:
                    if not (vihl == 0x45 and not frag & 0x3FFF and 20 <= total <= n - 14
                            and (proto == 17 and total >= 28
                                 or proto == 6 and 0x50 <= doff and doff >> 4 << 2 <= total - 20
                                 or proto != 17 and proto != 6)) and malformed(frame):
                        continue
                elif etype == 0x8100 and malformed(frame):
                    continue
            elif malformed(frame):
                continue
            else:
                dhi, dlo, shi, slo = macs(frame)

            # learning
            if not shi & 0x100:   # a unicast source
                key = (shi << 32 | slo) + 1
                b = (key * GOLDEN & 0xFFFFFFFFFFFFFFFF) >> shift
                first = b * SLOTS
                known = gone = False
                with locks[b % STRIPES]:
                    keys = w[first:first + SLOTS].tolist()
                    if key in keys:
                        at = vals + (first + keys.index(key)) * WORDS
                        if not validity or w[at + EXPIRY] > now:
                            known = True
                            if now - w[at + LAST] >= refresh_interval:
                                w[at + EXPIRY], w[at + LAST] = now + validity, now
                            if w[at + PORT] != dev:
                                w[at + PORT] = dev
                        else:   # expired: forget it, then learn it afresh
                            w[first + keys.index(key)] = 0
                            gone = True
                if gone:   # (the count lock is never taken while a stripe is held)
                    with count_lock:
                        w[head + COUNT] -= 1
                if not known:
                    learn(key, b, dev, now)

            # forwarding
            if not dhi & 0x100:   # a unicast destination
                key = (dhi << 32 | dlo) + 1
                b = (key * GOLDEN & 0xFFFFFFFFFFFFFFFF) >> shift
                first = b * SLOTS
                port = -1
                with locks[b % STRIPES]:
                    keys = w[first:first + SLOTS].tolist()
                    if key in keys:
                        at = vals + (first + keys.index(key)) * WORDS
                        if not validity or w[at + EXPIRY] > now:
                            port = w[at + PORT]
                if port >= 0:
                    if port != dev:
                        out[port].append(frame)
                    continue
            for o in others[dev]:
                o.append(frame)
        return out, {}

    try:
        shards = _mp.split(frames, devs, times_ns, workers, _key)
        return _mp.run_sharded(process, shards, [f"p{i}" for i in range(ports)], keep_output, counters)
    finally:
        words.release()
        shm.close()
        shm.unlink()
