"""Allocator: unique indexes under concurrency, exact accounting, leases, stealing."""

import os
import random
import struct

import pytest

from nfos.io.capture import Trace
from nfos.runtime.replay import replay
from nfos.testing import Harness

HERE = os.path.dirname(os.path.abspath(__file__))
NF = os.path.join(HERE, "alloc_ops_nf.py")
ALLOCATE, FREE, REFRESH, QUERY = 1, 2, 3, 4


def op_frame(code: int, arg: int = 0, src: int = 0x0A000001) -> bytes:
    payload = struct.pack("!Bi", code, arg) + bytes(3)
    udp = struct.pack("!HHHH", 5000, 6000, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src.to_bytes(4, "big"),
                     bytes([10, 2, 0, 1]))
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + udp


def values(out, n=1):
    assert len(out) == 1, out
    return struct.unpack(f"!{n}q", out[0][1][-8 * n:])


def test_concurrent_allocate_free_never_duplicates_and_accounts_exactly():
    rng = random.Random(7)
    frames = []
    for _ in range(6000):
        src = 0x0A000000 + rng.randrange(4096)
        if rng.random() < 0.55:
            frames.append(op_frame(ALLOCATE, src=src))
        else:
            frames.append(op_frame(FREE, rng.randrange(64), src=src))
    trace = Trace(["a", "b"], frames, [1_000_000_000 + i for i in range(len(frames))], [0] * len(frames), [])
    for workers in (0, 2):
        r = replay(NF, trace, workers=workers, keep_output=True, params=["capacity=64"])
        s = r.stats
        assert s["handler_errors"] == 0       # no index handed out twice
        assert s["packets_in"] == len(frames)
        report = [f for f in r.outputs["b"] if f[12:14] == b"\x88\xb5"]
        used, free = struct.unpack("!qq", report[0][14:30])
        assert used + free == 64
        # replay the replies in order: allocated set size must match `used`
        allocated = set()
        for f in r.outputs["b"]:
            if f[12:14] == b"\x08\x00" and f[42] == ALLOCATE:
                (i,) = struct.unpack("!q", f[-8:])
                if i >= 0:
                    allocated.add(i)
        assert used <= 64 and all(0 <= i < 64 for i in allocated)
        if workers == 2:
            assert all(w["packets"] > 0 for w in s["per_worker"])


@pytest.mark.parametrize("workers", [0, 2])
def test_one_worker_allocates_everything_by_stealing(workers):
    with Harness(NF, workers=workers, params={"capacity": 64}) as h:
        got = [values(h.send("a", op_frame(ALLOCATE)))[0] for _ in range(64)]   # one source: one worker
        assert sorted(got) == list(range(64))
        assert values(h.send("a", op_frame(ALLOCATE)))[0] == -1                 # exhausted
        busy = [w["packets"] for w in h.stats()["per_worker"]]
        assert sorted(busy)[-1] == 65 and sum(busy) == 65
        assert h.transact(lambda: h.nf.state.alloc.counts()) == (64, 0)
        assert values(h.send("a", op_frame(FREE, 5)))[0] == 1
        assert values(h.send("a", op_frame(FREE, 5)))[0] == 0                  # double free: no-op
        assert values(h.send("a", op_frame(REFRESH, 5)))[0] == 0               # refresh of a free index
        assert values(h.send("a", op_frame(ALLOCATE)))[0] == 5
        assert h.transact(lambda: h.nf.state.alloc.counts()) == (64, 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_leases_expire_at_the_right_virtual_time(workers):
    with Harness(NF, workers=workers, params={"capacity": 4, "lease": "10s"}) as h:
        (i,) = values(h.send("a", op_frame(ALLOCATE), time=1.0))
        assert values(h.send("a", op_frame(QUERY, i), time=3.0), 2) == (1, 8_000_000_000)
        assert values(h.send("a", op_frame(QUERY, i), time=10.999999999), 2) == (1, 1)
        assert values(h.send("a", op_frame(QUERY, i), time=11.0), 2) == (0, -1)   # expired on the dot
        assert values(h.send("a", op_frame(REFRESH, i)))[0] == 0                  # too late to refresh
        assert h.transact(lambda: h.nf.state.expired[i]) == 0                     # not reclaimed yet
        h.advance(2.0)   # the control process reclaims leases periodically
        assert h.transact(lambda: h.nf.state.expired[i]) == 1                     # on_expire ran once
        assert h.transact(lambda: h.nf.state.alloc.counts()) == (0, 4)


@pytest.mark.parametrize("workers", [0, 2])
def test_refresh_interval_makes_recent_refreshes_no_ops(workers):
    with Harness(NF, workers=workers, params={"capacity": 4, "lease": "10s", "refresh": "5s"}) as h:
        (i,) = values(h.send("a", op_frame(ALLOCATE), time=1.0))
        assert values(h.send("a", op_frame(REFRESH, i), time=4.0))[0] == 1   # within 5 s: no-op
        assert values(h.send("a", op_frame(QUERY, i)), 2) == (1, 7_000_000_000)
        assert values(h.send("a", op_frame(REFRESH, i), time=6.0))[0] == 1   # due: lease renewed
        assert values(h.send("a", op_frame(QUERY, i)), 2) == (1, 10_000_000_000)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_lease_renewed_in_place_is_reclaimed_once_expired(workers):
    """A refresh renews the cell and moves the index in its pool's expiry list only once the
    lease is a sweep period (lease/16: 625 ms here) past the list's key; a sweep steps over
    renewed indexes, so a sweep at t reclaims exactly the indexes expired by t."""
    with Harness(NF, workers=workers, params={"capacity": 8, "lease": "10s"}) as h:
        ids = [values(h.send("a", op_frame(ALLOCATE), time=1.0))[0] for _ in range(4)]
        i, j, k, m = ids
        assert values(h.send("a", op_frame(REFRESH, i), time=1.6))[0] == 1   # stays before k in the list
        assert values(h.send("a", op_frame(REFRESH, j), time=2.0))[0] == 1   # moved to the tail
        assert values(h.send("a", op_frame(REFRESH, m), time=2.5))[0] == 1   # moved behind j
        assert values(h.send("a", op_frame(REFRESH, m), time=2.6))[0] == 1   # the tail, renewed in place
        expiry = {i: 11.6, j: 12.0, k: 11.0, m: 12.6}
        alloc = h.nf.state.alloc
        while h.now < 13.0:
            h.advance(0.05)
            h.transact(alloc.expire)   # a sweep now, besides the periodic ones
            reclaimed = h.transact(lambda: [h.nf.state.expired[x] for x in ids])
            assert reclaimed == [int(expiry[x] <= h.now + 1e-9) for x in ids], h.now
        assert h.transact(alloc.counts) == (0, 8)


EXPIRE_FREES_NEXT = '''
import nfos

nf = nfos.NF("chain", devices=["a", "b"])


def forget(i):
    nf.state.gone[i] += 1
    nxt = (i + 1) % 16
    if nf.state.alloc.free(nxt):   # on_expire changes the list the sweep is walking
        nf.state.gone[nxt] += 1


@nf.init
def setup(p):
    nf.state.alloc = nfos.Allocator(16, lease=nfos.seconds(10), on_expire=forget)
    nf.state.gone = nfos.Vector(nfos.u32, 16)


@nf.orphan
def op(pkt):
    nf.state.alloc.allocate()
'''


@pytest.mark.parametrize("workers", [0, 2])
def test_on_expire_may_free_the_next_index_of_the_walk(tmp_path, workers):
    nf = tmp_path / "chain.py"
    nf.write_text(EXPIRE_FREES_NEXT)
    with Harness(str(nf), workers=workers) as h:
        for n in range(16):
            h.send("a", op_frame(ALLOCATE, src=0x0A000001 + n), time=1.0 + n * 0.01)
        assert h.transact(lambda: h.nf.state.alloc.counts()) == (16, 0)
        h.advance(12.0)
        assert h.transact(lambda: h.nf.state.alloc.counts()) == (0, 16)
        assert h.transact(lambda: [h.nf.state.gone[x] for x in range(16)]) == [1] * 16
