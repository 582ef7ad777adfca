"""The policer on live veths (LAN host — NF — WAN host): a UDP stream from the WAN at twice the
configured rate reaches the LAN host at the configured rate, as iperf3's receiver measures it."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from live.conftest import wait_until

LAN_IP = "192.0.2.1"
RATE = 125_000     # bytes/s of frames: 1 Mbit/s, little CPU
BURST = 15_000     # ten full frames: adds 4 % over the 3 s stream


def test_wan_to_lan_udp_at_twice_the_rate_is_received_at_the_rate(wire, nfos_live):
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 not installed (apt-get install -y iperf3)")
    lab = wire.lab
    run = nfos_live(wire.box, "policer.py", wire.ifaces, workers=1, params=(f"rate={RATE}", f"burst={BURST}"))
    lab.spawn(wire.lan, "iperf3", "-s", "-1", "-B", LAN_IP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run.wait_ready()
    listening = f"ss -Hltn src {LAN_IP}:5201"
    assert wait_until(lambda: lab.run(wire.lan, "sh", "-c", listening).stdout.strip()), "iperf3 -s did not start"
    # the control connection is LAN-bound too, so it is policed with the data (it needs little)
    r = lab.run(wire.wan, "iperf3", "-c", LAN_IP, "-u", "-b", str(2 * 8 * RATE), "-l", "1448", "-t", "3",
                "--json", check=False, timeout=30)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    end = json.loads(r.stdout)["end"]
    sent, received = end["sum_sent"], end["sum_received"]
    # iperf3 counts UDP payload; the policer whole frames (+ 8 UDP, 20 IP, 14 Ethernet bytes)
    frame_share = 1448 / (1448 + 42)
    assert sent["bits_per_second"] >= 1.8 * 8 * RATE * frame_share, sent
    got = received["bits_per_second"] / frame_share / 8
    assert 0.85 * RATE <= got <= 1.15 * RATE, f"received {got:,.0f} B/s of frames, policed at {RATE:,} B/s"
    stats = run.stop()
    assert stats["handler_errors"] == 0 and stats["ring_drops"] == 0
    assert stats["dropped"] > 0.3 * sent["packets"]   # about half of the stream
