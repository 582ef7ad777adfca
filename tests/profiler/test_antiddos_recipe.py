"""The Anti-DDoS recipe, end to end: the profiler names the merge conflict, and
raising max_staleness cuts the abort rate by at least 10x (paper §5.4).

The trace is the paper's pattern at 10 GbE line rate for 64-byte frames
(14.88 Mpps of virtual time), so 0.1 ms of staleness spans ~1,500 packets.
Abort rates need the two workers to really run at the same time: if the
machine was too busy for them to overlap, the test says so and skips.
"""

import os

import pytest

from nfos.io.gen import gen_antiddos
from nfos.runtime.replay import replay

NF = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                  "examples", "anti_ddos.py")


def test_staleness_recipe_cuts_aborts_tenfold():
    trace = gen_antiddos(150_000, rate=14.88e6, seed=1)
    ratios = []
    for _attempt in range(3):   # abort rates are timing-dependent: a busy moment can blur one try
        strict = replay(NF, trace, workers=2, params=["staleness=0"], profile=True).profile
        if strict.aborts < 200:
            continue
        top = strict.causes[0]
        assert (top.structure, top.ops, top.parameter) == ("DistributedObj 'counters'", "read vs update",
                                                           "max_staleness")
        assert top.share >= 0.9
        assert "raise max_staleness of 'counters'" in top.recipe and "--param staleness" in top.recipe
        relaxed = replay(NF, trace, workers=2, params=["staleness=0.1ms"], profile=True).profile
        ratios.append(strict.abort_rate / max(relaxed.abort_rate, 1e-9))
        if ratios[-1] >= 10:
            return
    if not ratios:
        pytest.skip("the two workers hardly overlapped (< 200 aborts): machine too busy to judge")
    assert max(ratios) >= 10, ratios
