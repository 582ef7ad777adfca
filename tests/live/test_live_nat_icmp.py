"""The NAT as a router on live veths, with ICMP: ``ping`` from the LAN through it works, and
``tracepath`` through it sees the hops behind it (their time-exceeded and port-unreachable errors
are translated back to the LAN host, RFC 5508 REQ-4).

    LAN host L ─ NAT N ───────── router R ─────── far host F
    10.0.0.2    lan0 | wan0   203.0.113.254 | 192.0.2.1   192.0.2.2
                10.0.0.1 (lan_ip), 203.0.113.1 (public)

R is the NAT's ``wan_gateway``; F is two hops behind the NAT.  ``tcpdump`` on L records what the
NAT delivers; every ICMP error in it must quote L's own packet, with valid checksums (the ICMP
checksum and the quoted IPv4 header's, as ``frames.assert_icmp_checksums_valid`` recomputes them).
Each test runs with 1 and with 2 workers.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

import frames as F
from live.conftest import need
from nfos.io.capture import read_capture

LAN_HOST, LAN_GW, PUBLIC = "10.0.0.2", "10.0.0.1", "203.0.113.1"
WAN_GW, ROUTER_FAR, FAR = "203.0.113.254", "192.0.2.1", "192.0.2.2"
WORKERS = pytest.mark.parametrize("workers", [1, 2])


class Hops:
    """The four namespaces above, addressed and routed."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.lan, self.box, self.router, self.far = lab.hops(
            f"{LAN_HOST}/24", LAN_GW, f"{WAN_GW}/24", f"{ROUTER_FAR}/24", (f"{FAR}/24",))
        self.ifaces = {"lan": "lan0", "wan": "wan0"}
        self.params = (f"lan_ip={LAN_GW}", f"public_base={PUBLIC}", "public_ips=1", f"wan_gateway={WAN_GW}",
                       "wan_prefix=203.0.113.0/24")


@pytest.fixture
def hops(lab):
    return Hops(lab)


@WORKERS
def test_ping_and_tracepath_through_the_router_mode_nat(hops, nfos_live, tmp_path, workers):
    need("ping", "tracepath", "tcpdump")
    lab = hops.lab
    run = nfos_live(hops.box, "nat.py", hops.ifaces, workers=workers, params=hops.params)
    pcap = tmp_path / "lan.pcap"
    # --immediate-mode: no packet waits in tcpdump's ring for its block timeout when it is stopped
    dump = lab.spawn(hops.lan, "tcpdump", "-i", "h0", "-n", "-U", "--immediate-mode", "-w", str(pcap), "icmp or udp",
                     stderr=subprocess.PIPE, text=True)
    assert "listening on" in dump.stderr.readline()
    run.wait_ready()
    # the NAT resolves L and R by ARP: the first packets may be dropped while it asks
    for target in (WAN_GW, FAR):
        r = lab.run(hops.lan, "ping", "-c", "4", "-i", "0.3", "-W", "2", target, check=False, timeout=20)
        assert r.returncode == 0, r.stdout + r.stderr
        assert " 0% packet loss" in r.stdout or " 25% packet loss" in r.stdout, r.stdout
    r = lab.run(hops.lan, "ping", "-c", "3", "-i", "0.2", "-W", "2", FAR, check=False, timeout=20)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout
    # tracepath: hop 1 is the NAT (it sends no time exceeded: "no reply"), hop 2 R, then F
    r = lab.run(hops.lan, "tracepath", "-n", "-m", "4", FAR, check=False, timeout=90)
    assert f" 2:  {WAN_GW}" in r.stdout and "reached" in r.stdout and "hops 3" in r.stdout, r.stdout + r.stderr
    dump.send_signal(signal.SIGTERM)
    dump.wait(timeout=10)
    frames = [f for f in read_capture(pcap).frames if f[12:14] == b"\x08\x00" and f[14] == 0x45]
    probes = {f[26:38] for f in frames if f[23] == 17 and f[26:30] == F.ip(LAN_HOST)}   # L's UDP 4-tuples
    errors = [f for f in frames if f[23] == 1 and f[34] in (3, 11)]
    assert {f[34] for f in errors} == {3, 11}, "time exceeded (R) and port unreachable (F) reached L"
    for f in errors:
        F.assert_icmp_checksums_valid(f)
        assert f[30:34] == F.ip(LAN_HOST), f.hex()
        assert f[42] == 0x45 and f[42 + 12:42 + 24] in probes, f.hex()   # it quotes L's own probe
    stats = run.stop()
    assert stats["handler_errors"] == 0 and stats["ring_drops"] == 0 and stats["tx_errors"] == 0
