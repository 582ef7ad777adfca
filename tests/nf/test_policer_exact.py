"""The policer is the real-valued token bucket, exactly (no fraction of a byte lost per packet).

The reference below is written from the contract alone, with exact rational
arithmetic (``fractions.Fraction``): refill ``elapsed_s * rate`` capped at
``burst``, pass when the bucket holds at least the frame length, an unknown
host starting with a full bucket.  It never forgets a host, so it also checks
that forgetting an idle host changes no decision.
"""

import os
from fractions import Fraction

import pytest

from frames import udp_frame
from nfos.io import gen_caida
from nfos.io.capture import Trace
from nfos.runtime.replay import replay

POLICER = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "policer.py")
RATE, BURST = 200_000, 3_000


def reference(trace: Trace, rate: int, burst: int) -> tuple[list[bool], list[bool]]:
    """Per WAN->LAN IPv4 packet, in trace order: (passes with the exact bucket, with a bucket
    that floors each refill to whole bytes, the old formula)."""
    exact: dict[bytes, list] = {}
    floored: dict[bytes, list] = {}
    out_exact, out_floor = [], []
    for frame, dev, t in zip(trace.frames, trace.devs, trace.times_ns, strict=True):
        if dev != 1 or frame[12:14] != b"\x08\x00":
            continue
        n, dst = len(frame), frame[30:34]
        for hosts, out, refill in ((exact, out_exact, lambda dt: Fraction(dt * rate, 10**9)),
                                   (floored, out_floor, lambda dt: dt * rate // 10**9)):
            h = hosts.get(dst)
            if h is None:
                ok = n <= burst
                if ok:
                    hosts[dst] = [burst - n, t]
            else:
                tokens = min(h[0] + refill(t - h[1]), burst)
                h[1] = t
                ok = tokens >= n
                h[0] = tokens - n if ok else tokens
            out.append(ok)
    return out_exact, out_floor


def wan_to_lan_passed(trace: Trace, workers: int, rate: int, burst: int) -> list[bytes]:
    r = replay(POLICER, trace, workers=workers, params=[f"rate={rate}", f"burst={burst}"],
               keep_output=True)
    return r.outputs["lan"]


@pytest.mark.parametrize("workers", [0, 2])
def test_decisions_equal_the_real_valued_bucket(workers):
    trace = gen_caida(60_000, 300, reverse=1.0, seed=1)
    exact, floored = reference(trace, RATE, BURST)
    assert exact != floored, "the trace must exercise fractional refills"
    wan = [f for f, d in zip(trace.frames, trace.devs, strict=True) if d == 1 and f[12:14] == b"\x08\x00"]
    want = [f for f, ok in zip(wan, exact, strict=True) if ok]
    got = wan_to_lan_passed(trace, workers, RATE, BURST)
    if workers == 0:
        assert got == want
    else:   # a host's packets stay in order on one worker; workers interleave
        assert sorted(got) == sorted(want)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_faster_than_one_byte_per_packet_gets_the_rate(workers):
    """100-byte frames every microsecond (0.2 byte of refill each) for 0.2 s: rate * 0.2 s plus
    the initial burst pass, not just the burst."""
    frame = udp_frame("198.51.100.1", "10.0.0.2", 5000, 6000, payload=b"x" * 58)
    assert len(frame) == 100
    n, gap, start = 200_000, 1_000, 10**9
    trace = Trace(["lan", "wan"], [frame] * n, [start + i * gap for i in range(n)], [1] * n)
    passed = len(wan_to_lan_passed(trace, workers, RATE, BURST)) * len(frame)
    span_s = (n - 1) * gap / 1e9
    assert BURST + RATE * span_s - len(frame) < passed <= BURST + RATE * span_s
