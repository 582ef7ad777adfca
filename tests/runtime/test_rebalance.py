"""RSS++ rebalancing of a replay (issue 11, point 5): the indirection table's buckets move from
the busiest worker to the least busy one epoch by epoch, the moved buckets' packet sets move
with them at the epoch's boundary, and the output stays the sequential run's.  Counting tests
(packets per worker, sets moved), never timing."""

import collections
import os

import pytest

from nfos.io.gen import gen_caida
from nfos.runtime.replay import replay
from nfos.runtime.session import Session

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIREWALL = os.path.join(ROOT, "examples", "firewall.py")
COUNTING = os.path.join(HERE, "counting_nf.py")
EPOCH_NS = 5_000_000   # 5 ms of trace time


@pytest.fixture(scope="module")
def heavy_tailed():
    """The 20,000-flow heavy-tailed trace (400,000 LAN packets, half the flows answered: 630k)."""
    return gen_caida(400_000, 20_000, reverse=0.5, seed=1)


def steered(trace, workers: int, rebalance_ns: int) -> list[int]:
    """Packets per worker as the replay steers them (no worker runs)."""
    s = Session(FIREWALL, workers, collect_output=False)
    try:
        s.init(start_time_ns=trace.times_ns[0])
        return s.load_trace(trace.frames, trace.times_ns, list(trace.devs), rebalance_ns=rebalance_ns)
    finally:
        s.close()


def imbalance(counts: list[int]) -> float:
    return max(counts) / (sum(counts) / len(counts))


@pytest.mark.parametrize("workers", [2, 4])
def test_rebalancing_evens_out_the_heavy_tailed_trace(heavy_tailed, workers):
    static, balanced = steered(heavy_tailed, workers, 0), steered(heavy_tailed, workers, EPOCH_NS)
    assert sum(static) == sum(balanced) == len(heavy_tailed)
    assert imbalance(static) > 1.1           # the static table: 278k : 352k at 2 workers
    assert imbalance(balanced) <= 1.05


def outputs_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(collections.Counter(a[d]) == collections.Counter(b[d]) for d in a)


@pytest.mark.parametrize("laps", [1, 2])
def test_a_migrated_packet_set_keeps_its_state_and_its_output(laps):
    trace = gen_caida(12_000, 600, reverse=0.5, seed=5)
    seq = replay(COUNTING, trace, workers=0, keep_output=True, laps=laps)
    r = replay(COUNTING, trace, workers=2, keep_output=True, laps=laps, rebalance_ns=1_000_000, max_moves=8)
    moved_in = sum(m for m, _ in r.migrated)
    assert moved_in > 0 and all(d == 0 for _, d in r.migrated)   # sets did move, none was lost
    assert outputs_equal(r.outputs, seq.outputs)                  # every TTL: the set's own count
    assert r.stats["packets_in"] == len(trace) * laps


def test_the_firewall_with_rebalancing_is_the_sequential_firewall():
    trace = gen_caida(20_000, 1_500, reverse=0.5, seed=9)
    seq = replay(FIREWALL, trace, workers=0, keep_output=True)
    r = replay(FIREWALL, trace, workers=3, keep_output=True, rebalance_ns=2_000_000)
    assert sum(m for m, _ in r.migrated) > 0
    assert outputs_equal(r.outputs, seq.outputs)


@pytest.mark.parametrize("drift_ns", [0, 1_000_000])
def test_rebalancing_under_the_drift_horizon_and_periodic_barriers(tmp_path, drift_ns):
    """Rebalancing under the drift horizon (even Δ = 0) with a periodic handler's barriers
    between the epoch boundaries: the output, the periodic handler's snapshots of a counter
    every packet updates included, is the sequential run's.  (A worker waiting at a boundary
    publishes its progress first, so a worker the horizon holds can reach the boundary: that
    wait depends on timing, so this run shows it completes, not that it would hang without.)"""
    nf = tmp_path / "counting_periodic.py"
    nf.write_text(open(COUNTING).read()
                  .replace("    nf.packet_sets(", "    nf.state.seen = nfos.Vector(nfos.u64, 1)\n    nf.packet_sets(")
                  .replace("    s.n += 1\n", "    s.n += 1\n    nf.state.seen[0] += 1\n") + '''

@nf.periodic(nfos.seconds(0.001))
def snapshot():
    """What every worker counted before this moment, sent out as a frame."""
    nf.emit(bytes(12) + b"\\x88\\xb5" + nf.state.seen[0].to_bytes(8, "big") + bytes(38), "lan")
''')
    trace = gen_caida(12_000, 600, reverse=0.5, seed=7)
    seq = replay(str(nf), trace, workers=0, keep_output=True)
    r = replay(str(nf), trace, workers=2, keep_output=True, rebalance_ns=1_000_000, max_moves=8, max_drift_ns=drift_ns)
    assert sum(m for m, _ in r.migrated) > 0
    assert outputs_equal(r.outputs, seq.outputs)
    assert r.stats["packets_in"] == len(trace)
    snaps = [f for f in seq.outputs["lan"] if f[12:14] == b"\x88\xb5"]
    assert len(snaps) > 10 and len(set(snaps)) > 10   # the snapshots themselves differ over time
