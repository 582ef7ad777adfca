"""The STM keeps a transfer invariant exactly, under real contention, with aborts happening.

N workers run transfers between 8 accounts (Vector elements) and count them in
a DistributedObj; every transaction also checks the total of all accounts, so
a non-serializable (or non-opaque) execution shows up as a handler error.
"""

import os
import random
import struct

import pytest

from nfos.io.capture import Trace
from nfos.io.gen import checksum16
from nfos.runtime.replay import replay

NF = os.path.join(os.path.dirname(__file__), "transfer_nf.py")
ACCOUNTS, START = 8, 1_000_000


def udp_frame(src_ip: int, sport: int, dport: int, amount: int) -> bytes:
    payload = bytes([amount]) + b"\0" * 7
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     src_ip.to_bytes(4, "big"), bytes([10, 9, 9, 9]))
    ip = ip[:10] + struct.pack("!H", checksum16(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + udp


def transfer_trace(n: int, seed: int) -> tuple[Trace, list[tuple[int, int, int]]]:
    rng = random.Random(seed)
    moves = [(rng.randrange(ACCOUNTS), rng.randrange(ACCOUNTS), rng.randrange(1, 256)) for _ in range(n)]
    frames = [udp_frame(0x0A000000 + rng.randrange(1 << 16), s, d, a) for s, d, a in moves]
    return Trace(["in", "out"], frames, [1_000_000_000 + i * 1000 for i in range(n)], [0] * n, []), moves


def final_state(outputs: dict[str, list[bytes]]):
    report = [f for f in outputs["out"] if f[12:14] == b"\x88\xb5"]
    assert len(report) == 1
    vals = struct.unpack(f"<{ACCOUNTS}q{ACCOUNTS}Q3q", report[0][14:])
    return list(vals[:ACCOUNTS]), list(vals[ACCOUNTS:2 * ACCOUNTS]), vals[2 * ACCOUNTS:]


@pytest.mark.parametrize("workers,batch", [(0, 32), (2, 32), (2, 1), (3, 8)])
def test_transfer_invariant(workers, batch):
    n = 20_000
    trace, moves = transfer_trace(n, seed=workers * 10 + batch)
    r = replay(NF, trace, workers=workers, keep_output=True, batch=batch)
    s = r.stats
    balances, counts, (amount, transfers, biggest) = final_state(r.outputs)
    # Every transfer committed exactly once, none saw an inconsistent state.
    assert s["handler_errors"] == 0
    assert s["packets_in"] == n
    assert s["packets_out"]["out"] == n + 1          # + the exit report
    assert sum(balances) == ACCOUNTS * START
    # The final state is the one every serial order gives (transfers commute).
    expect = [START] * ACCOUNTS
    expect_moves = [0] * ACCOUNTS
    for src, dst, a in moves:
        expect[src] -= a
        expect[dst] += a
        expect_moves[src] += 1
    assert balances == expect
    assert counts == expect_moves
    assert (amount, transfers, biggest) == (sum(a for _, _, a in moves), n, max(a for _, _, a in moves))
    if workers == 0:
        assert s["aborts"] == 0
    else:
        # 8 hot accounts and a merge on every read: conflicts must really happen.
        assert s["aborts"] > 0, s
        assert s["commits"] + s["aborts"] == s["transactions"]
