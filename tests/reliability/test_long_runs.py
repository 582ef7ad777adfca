"""Long runs are flat (issue 13, point 6): bench/long_run.py streams the NAT and the bridge
(expiry active: mappings, sessions and MAC leases live 50 ms of trace time and pieces come
back after 0.2 s) and samples every process.  The default suite runs 400k packets each and
checks what must be exact from the start: the arena's bump pointer does not move (the
streamed frames' data ring is reused), no file descriptor is opened, every allocator's
allocated + free is its capacity, and expired state is reclaimed.  The 10M-packet runs also
check RSS within +-5 % after the warm-up (slow; figures in docs/reliability.md):

    python bench/long_run.py --nf nat,bridge --packets 10000000 --json bench/results/long-runs-2core/long_runs.json
"""

from __future__ import annotations

import pytest

pytest.importorskip("psutil", reason="psutil is in the test extra")

from bench.long_run import long_run  # noqa: E402


@pytest.mark.parametrize("nf", ["nat", "bridge"])
def test_streaming_keeps_the_arena_fds_and_allocators_flat(nf):
    run = long_run(nf, 400_000, workers=2, piece=50_000, samples=8)
    v = run.verdict(warmup=0.0)
    assert v["arena_flat"] and v["fds_flat"] and v["allocators_whole"], v
    assert max(v["allocated_live"]) > 0 and v["allocated_after_expiry"] == [0]
    assert run.samples[-1].packets == 400_000


def test_harness_streaming_does_not_grow_the_arena():
    """The Harness injects one frame at a time: its copies go to the reused data ring."""
    import frames as F
    from conftest import EXAMPLES
    from nfos import _core
    from nfos.testing import Harness

    with Harness(str(EXAMPLES / "firewall.py"), workers=2) as h:
        used = _core.arena_used()
        for _ in range(2):   # ~6 MB of frames: the arena would grow by as much
            h.send_many([("lan", F.udp_frame(sport=1000 + j % 5000)) for j in range(40_000)])
        assert _core.arena_used() == used


@pytest.mark.slow
@pytest.mark.parametrize("nf", ["nat", "bridge"])
def test_ten_million_packets_are_flat(nf):
    v = long_run(nf, 10_000_000, workers=2).verdict(warmup=0.3, tolerance=0.05)
    assert v["rss_flat"] and v["fds_flat"] and v["arena_flat"] and v["allocators_whole"], v
    assert v["allocated_after_expiry"] == [0]
