"""The firewall on live veths, with no static neighbours: ARP crosses it both ways, so ``ping`` and
``curl`` from the LAN just work; ``ping`` and ``nmap -sS`` from the WAN are blocked; and path-MTU
discovery through it works: ``tracepath`` and ``ping -M do`` from the LAN to a host behind a
router whose far link has MTU 1400 get the router's fragmentation-needed back (RFC 1191).

    LAN host L ─ firewall N ─ router R ─(MTU 1400)─ far host F
    192.0.2.1     lan0|wan0   192.0.2.254 | 198.51.100.1    198.51.100.2, .3

L and R share 192.0.2.0/24 (the firewall is transparent); L's default route is R.  Each test runs
with 1 and with 2 workers: with 2, an ICMP error is steered by the kernel fanout program to the
worker of the session it quotes, or it is dropped.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from live.conftest import TCP_LISTENER, need, wait_until

LAN_IP, ROUTER_IP, ROUTER_FAR, FAR_IP = "192.0.2.1", "192.0.2.254", "198.51.100.1", "198.51.100.2"
FAR_IP2 = "198.51.100.3"   # F's second address: a destination whose path MTU L has not learned
WORKERS = pytest.mark.parametrize("workers", [1, 2])


class PathLab:
    """The four namespaces above, addressed and routed; no static neighbour anywhere."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.lan, self.box, self.router, self.far = lab.hops(
            f"{LAN_IP}/24", ROUTER_IP, f"{ROUTER_IP}/24", f"{ROUTER_FAR}/24", (f"{FAR_IP}/24", f"{FAR_IP2}/24"))
        for ns, dev in ((self.router, "h1"), (self.far, "h0")):   # the smaller-MTU hop
            lab.sh("ip", "-n", ns, "link", "set", dev, "mtu", "1400")
        self.ifaces = {"lan": "lan0", "wan": "wan0"}


@pytest.fixture
def path(lab):
    return PathLab(lab)


@WORKERS
def test_ping_and_curl_from_lan_with_no_static_neighbours(path, nfos_live, tmp_path, workers):
    need("ping", "curl")
    lab = path.lab
    (tmp_path / "hello.txt").write_text("hello from behind the router\n")
    lab.spawn(path.far, sys.executable, "-m", "http.server", "8080", "--bind", FAR_IP, "--directory",
              str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = nfos_live(path.box, "firewall.py", path.ifaces, workers=workers)
    run.wait_ready()
    assert wait_until(lambda: lab.run(path.far, "curl", "-s", "-o", "/dev/null", f"http://{FAR_IP}:8080/",
                                      check=False).returncode == 0, timeout=10), "the web server did not start"
    for target in (ROUTER_IP, FAR_IP):   # L resolves R by ARP through the firewall (R's reply comes in)
        r = lab.run(path.lan, "ping", "-c", "3", "-i", "0.2", "-W", "2", target, check=False, timeout=20)
        assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout + r.stderr
    r = lab.run(path.lan, "curl", "-s", "-m", "5", f"http://{FAR_IP}:8080/hello.txt", check=False)
    assert r.returncode == 0 and r.stdout == "hello from behind the router\n", r
    neigh = lab.sh("ip", "-n", path.lan, "neigh", "show", ROUTER_IP).stdout
    assert "PERMANENT" not in neigh and "lladdr" in neigh, neigh   # learned, not configured
    stats = run.stop()
    assert stats["handler_errors"] == 0 and stats["ring_drops"] == 0 and stats["tx_errors"] == 0
    assert stats["packets_out"]["lan"] > 0 and stats["packets_out"]["wan"] > 0




@WORKERS
def test_ping_and_syn_scan_from_wan_are_blocked(path, nfos_live, workers):
    need("ping", "nmap")
    lab = path.lab
    listener = lab.spawn(path.lan, sys.executable, "-c", TCP_LISTENER, LAN_IP, "2222", stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "ready"
    run = nfos_live(path.box, "firewall.py", path.ifaces, workers=workers)
    run.wait_ready()
    r = lab.run(path.router, "ping", "-c", "3", "-i", "0.2", "-W", "1", LAN_IP, check=False, timeout=20)
    assert r.returncode != 0 and "100% packet loss" in r.stdout, r.stdout
    # ARP crosses the firewall now: nmap resolves L itself (no --send-ip needed); -Pn: no ping
    scan = lab.run(path.router, "nmap", "-sS", "-Pn", "-n", "-p", "2222", "--max-retries", "1",
                   "--host-timeout", "15s", LAN_IP, timeout=40)
    assert "2222/tcp filtered" in scan.stdout, scan.stdout
    out, err = listener.communicate(input="", timeout=15)
    assert out.strip() == "0", err
    # from the inside, the same ping works (its replies are a session's)
    r = lab.run(path.lan, "ping", "-c", "2", "-i", "0.2", "-W", "2", ROUTER_IP, check=False, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    stats = run.stop()
    assert stats["dropped"] >= 3 and stats["handler_errors"] == 0 and stats["ring_drops"] == 0


@WORKERS
def test_path_mtu_discovery_through_the_firewall(path, nfos_live, workers):
    need("tracepath", "ping")
    lab = path.lab
    run = nfos_live(path.box, "firewall.py", path.ifaces, workers=workers)
    run.wait_ready()
    # tracepath: UDP probes with DF; R answers time exceeded, then fragmentation needed (MTU 1400);
    # F answers port unreachable ("reached").  Every one is an ICMP error crossing WAN -> LAN.
    r = lab.run(path.lan, "tracepath", "-n", "-m", "5", FAR_IP, check=False, timeout=60)
    assert "pmtu 1400" in r.stdout and "reached" in r.stdout, r.stdout + r.stderr
    assert ROUTER_IP in r.stdout, r.stdout   # hop 1 answered (time exceeded)
    # ping with DF and a 1500-byte packet to a destination L knows no path MTU for: R's
    # fragmentation needed comes back about the echo request (the ping's session)
    r = lab.run(path.lan, "ping", "-M", "do", "-s", "1472", "-c", "1", "-W", "2", FAR_IP2, check=False,
                timeout=20)
    assert f"From {ROUTER_IP}" in r.stdout and "mtu = 1400" in r.stdout, r.stdout + r.stderr
    r = lab.run(path.lan, "ping", "-M", "do", "-s", "1372", "-c", "2", "-i", "0.3", "-W", "2", FAR_IP2,
                check=False, timeout=20)
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout + r.stderr   # 1400 bytes fit
    stats = run.stop()
    assert stats["handler_errors"] == 0 and stats["ring_drops"] == 0 and stats["tx_errors"] == 0
