"""The NAT as a router on live veths: LAN host — NAT box — WAN host (gateway, STUN and web server).

The NAT runs in router mode (``lan_ip``): the LAN host knows it only as its default gateway, the
WAN host only as the public address; both learn its MAC by ARP, and it learns theirs by ARP.  The
WAN host holds the gateway address and the web server on the WAN link (203.0.113.0/24: on-link,
the NAT resolves them directly) and the STUN server's two addresses (198.51.100.10/.11: off-link,
the NAT sends to them through ``wan_gateway``).  Debian's ``stun`` (RFC 3489 tests) classifies the
NAT against ``stund``; ``curl`` fetches a page through it; ``tcpdump`` on the WAN host shows that
no private address ever reaches the WAN link.
"""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import sys
import time

import pytest

from live.conftest import need, wait_until
from nfos.io.capture import read_capture

LAN_HOST, LAN_GW = "10.0.0.2", "10.0.0.1"
PUBLIC = "203.0.113.1"
WAN_GW, WEB = "203.0.113.254", "203.0.113.20"
STUN_1, STUN_2 = "198.51.100.10", "198.51.100.11"
NAT_MAC = "02:00:00:00:00:aa"


class Routed:
    """The three namespaces, addressed as described in the module docstring."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.lan, self.box, self.wan = lab.ns("L"), lab.ns("N"), lab.ns("W")
        lab.veth(self.lan, "h0", self.box, "lan0")
        lab.veth(self.box, "wan0", self.wan, "h0")
        lab.addr(self.lan, "h0", f"{LAN_HOST}/24")
        lab.sh("ip", "-n", self.lan, "route", "add", "default", "via", LAN_GW)
        for cidr in (f"{WAN_GW}/24", f"{WEB}/32", f"{STUN_1}/32", f"{STUN_2}/32"):
            lab.addr(self.wan, "h0", cidr)
        self.ifaces = {"lan": "lan0", "wan": "wan0"}

    def params(self, filtering: str) -> tuple[str, ...]:
        return (f"lan_ip={LAN_GW}", f"public_base={PUBLIC}", "public_ips=1", f"wan_gateway={WAN_GW}",
                "wan_prefix=203.0.113.0/24", f"filtering={filtering}")

    def neighbor(self, ns: str, ip: str) -> str:
        return self.lab.sh("ip", "-n", ns, "neigh", "show", ip).stdout


@pytest.fixture
def routed(lab):
    return Routed(lab)


def stun(net: Routed) -> str:
    """The classification line of Debian's stun client (RFC 3489 tests I, II, III, hairpin)."""
    r = net.lab.run(net.lan, "stun", STUN_1, check=False, timeout=30)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("Primary:")), "")
    assert line, r.stdout + r.stderr
    return line


def start_stund(net: Routed) -> None:
    net.lab.spawn(net.wan, "stund", "-h", STUN_1, "-a", STUN_2, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    listening = f"ss -Hlun src {STUN_1}:3478"   # stund is up once its primary socket is bound
    assert wait_until(lambda: net.lab.run(net.wan, "sh", "-c", listening).stdout.strip(), timeout=10)


def test_nat_is_endpoint_independent_web_works_wan_sees_public_addresses_only(routed, nfos_live, tmp_path):
    need("stun", "stund", "curl", "tcpdump")
    net, lab = routed, routed.lab
    run = nfos_live(net.box, "nat.py", net.ifaces, workers=2, params=net.params("endpoint"))
    start_stund(net)
    (tmp_path / "hello.txt").write_text("hello through the NAT\n")
    lab.spawn(net.wan, sys.executable, "-m", "http.server", "8080", "--bind", WEB, "--directory", str(tmp_path),
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pcap = tmp_path / "wan.pcap"
    dump = lab.spawn(net.wan, "tcpdump", "-i", "h0", "-n", "-U", "-w", str(pcap), "ip",
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert "listening on" in dump.stderr.readline()
    run.wait_ready()
    assert wait_until(lambda: lab.run(net.wan, "curl", "-s", "-o", "/dev/null", f"http://{WEB}:8080/",
                                      check=False).returncode == 0, timeout=10), "the web server did not start"

    # RFC 4787 behaviour as a STUN client sees it (REQ-1 EIM, REQ-8 EIF, REQ-9 hairpinning)
    line = stun(net)
    assert "Independent Mapping, Independent Filter" in line and "will hairpin" in line, line
    # TCP through the NAT (RFC 5382), to an on-link WAN host
    r = lab.run(net.lan, "curl", "-s", "-m", "5", f"http://{WEB}:8080/hello.txt", check=False)
    assert r.returncode == 0 and r.stdout == "hello through the NAT\n", r

    # both sides know the NAT by ARP (RFC 826), each by the address it uses
    assert f"lladdr {NAT_MAC}" in net.neighbor(net.lan, LAN_GW)
    assert f"lladdr {NAT_MAC}" in net.neighbor(net.wan, PUBLIC)

    time.sleep(0.2)
    dump.send_signal(signal.SIGTERM)   # `ip netns exec` execs tcpdump: the signal reaches it
    dump.wait(timeout=10)
    frames = read_capture(pcap).frames
    pairs = [(ipaddress.ip_address(f[26:30]), ipaddress.ip_address(f[30:34])) for f in frames
             if f[12:14] == b"\x08\x00"]
    sources = {src for src, _ in pairs}
    wan_host = {ipaddress.ip_address(a) for a in (WAN_GW, WEB, STUN_1, STUN_2)}
    assert ipaddress.ip_address(PUBLIC) in sources, sources
    assert sources <= wan_host | {ipaddress.ip_address(PUBLIC)}, f"non-public sources on the WAN: {sources}"
    lan_net = ipaddress.ip_network("10.0.0.0/8")
    assert not [p for p in pairs if p[0] in lan_net or p[1] in lan_net], "a LAN address appeared on the WAN"

    stats = run.stop()
    assert stats["handler_errors"] == 0 and stats["ring_drops"] == 0 and stats["tx_errors"] == 0
    assert stats["packets_out"]["wan"] > 0 and stats["packets_out"]["lan"] > 0


def test_nat_address_dependent_filtering(routed, nfos_live):
    need("stun", "stund")
    net = routed
    run = nfos_live(net.box, "nat.py", net.ifaces, workers=1, params=net.params("address"))
    start_stund(net)
    run.wait_ready()
    line = stun(net)
    assert "Independent Mapping, Address Dependent Filter" in line, line
    stats = run.stop()
    assert stats["handler_errors"] == 0 and stats["ring_drops"] == 0
