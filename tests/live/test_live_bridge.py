"""The MAC-learning bridge on live veths: hosts on different ports reach each other (ping, arping),
and when a host moves to another port the traffic follows it."""

from __future__ import annotations

import re
import shutil

import pytest

A_IP, B_IP = "198.51.100.1", "198.51.100.2"


def received(ping_output: str) -> int:
    m = re.search(r"(\d+) (?:packets )?received", ping_output)
    return int(m.group(1)) if m else 0


def test_bridge_forwards_learns_and_follows_a_move(lab, nfos_live):
    for tool in ("ping", "arping"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (apt-get install -y iputils-ping arping)")
    a, b, c, box = lab.ns("A"), lab.ns("B"), lab.ns("C"), lab.ns("N")
    for host, port in ((a, "p0"), (b, "p1"), (c, "p2")):
        lab.veth(host, "h0", box, port)
    lab.addr(a, "h0", f"{A_IP}/24")
    lab.addr(b, "h0", f"{B_IP}/24")
    run = nfos_live(box, "bridge.py", {"p0": "p0", "p1": "p1", "p2": "p2"}, workers=2, params=("ports=3",))
    run.wait_ready()

    # ARP is flooded, the reply learned: ping and arping work across the bridge
    r = lab.run(a, "ping", "-c", "3", "-i", "0.2", "-W", "2", B_IP, check=False, timeout=15)
    assert received(r.stdout) == 3, r.stdout
    r = lab.run(a, "arping", "-c", "2", "-w", "5", "-i", "h0", B_IP, check=False, timeout=15)
    assert r.returncode == 0 and received(r.stdout) == 2, r.stdout + r.stderr

    # host B moves from port p1 to port p2 (same MAC and address, its old link goes down)
    mac_b = lab.mac(b, "h0")
    lab.sh("ip", "-n", b, "link", "set", "h0", "down")
    lab.sh("ip", "-n", c, "link", "set", "h0", "address", mac_b)
    lab.addr(c, "h0", f"{B_IP}/24")
    # the moved host speaks first (its ARP request teaches the bridge the new port) ...
    r = lab.run(c, "ping", "-c", "2", "-i", "0.2", "-W", "2", A_IP, check=False, timeout=15)
    assert received(r.stdout) >= 1, r.stdout
    # ... and then traffic to it follows it to p2
    r = lab.run(a, "ping", "-c", "3", "-i", "0.2", "-W", "2", B_IP, check=False, timeout=15)
    assert received(r.stdout) == 3, r.stdout
    r = lab.run(a, "arping", "-c", "2", "-w", "5", "-i", "h0", B_IP, check=False, timeout=15)
    assert r.returncode == 0 and received(r.stdout) == 2, r.stdout + r.stderr

    stats = run.stop()
    assert stats["handler_errors"] == 0 and stats["ring_drops"] == 0
    assert stats["packets_out"]["p2"] > 0 and stats["packets_out"]["p1"] > 0
