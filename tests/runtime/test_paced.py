"""Paced mode: the generator queues exactly rate x duration packets, every queued packet is
processed and timed, and without a spare core the search says so instead of giving a number."""

import os

from nfos.io.gen import gen_caida
from nfos.runtime import paced

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIREWALL = os.path.join(ROOT, "examples", "firewall.py")


def test_low_rate_loses_nothing_and_times_every_packet():
    trace = gen_caida(2000, 200, reverse=0.5, seed=3)
    r = paced.paced_run(FIREWALL, trace, workers=1, rate=20_000, duration=0.2)
    assert r["offered"] == 4000          # rate x duration, cycling the 3,000-frame trace
    assert r["lost"] == 0 and r["loss"] == 0.0
    lat = r["latency_us"]
    assert lat["p50"] is not None and lat["p50"] <= lat["p99"] <= lat["p99.9"]


def test_percentiles_from_the_log_linear_histogram():
    hist = [0] * 640
    hist[5] = 50            # 5 ns
    hist[16 + 6 * 16] = 50  # 1024 ns: e = 10, sub = 0
    assert paced.bucket_low(16 + 6 * 16) == 1024
    assert paced.percentiles(hist, (50, 99)) == {"p50": 0.005, "p99": 1.024}
    assert paced.percentiles([0] * 640, (50,)) == {"p50": None}


def test_no_spare_core_is_reported_not_measured():
    too_many = (os.cpu_count() or 1)
    r = paced.max_rate(FIREWALL, gen_caida(100, 10), workers=too_many)
    assert r["max_rate_pps"] is None and r["note"].startswith("not measured: no spare core")
