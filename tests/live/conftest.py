"""Live-interface test rig: network namespaces joined by veth pairs, an `nfos run --iface` in the middle.

Everything a test creates — namespaces (and with them their veths), servers,
the NF run — is removed by the fixtures' finalizers, also when the test
fails, and the finalizer then checks that nothing is left: no process in
the namespaces, no namespace.  Every command has a timeout, and the NF run
has a --duration, so no test can hang.  Tests skip, with the reason, where
namespaces cannot be made (not root, no iproute2) or a tool is missing.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
_ids = itertools.count()
_skip_reason: list[str | None] = []


def live_skip_reason() -> str | None:
    """Why live tests cannot run here (None: they can)."""
    if _skip_reason:
        return _skip_reason[0]
    reason = None
    if sys.platform != "linux":
        reason = "live interfaces are Linux-only (AF_PACKET)"
    elif os.geteuid() != 0:
        reason = "live tests need root (network namespaces, veth pairs, AF_PACKET sockets)"
    elif shutil.which("ip") is None:
        reason = "the ip command (iproute2) is not installed"
    else:
        probe = f"nfosprobe{os.getpid()}"
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            reason = f"cannot create network namespaces here: {r.stderr.strip()}"
        else:
            subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    _skip_reason.append(reason)
    return reason


def namespaces() -> set[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in r.stdout.splitlines() if line.strip()}


class Lab:
    """Network namespaces and veth pairs; close() removes them and every process in them."""

    def __init__(self) -> None:
        self.tag = f"nfl{os.getpid() % 100000}x{next(_ids)}"
        self.names: list[str] = []
        self.procs: list[subprocess.Popen] = []
        # False: veth() turns TSO/GSO/GRO off (whole frames only); True: the kernel's defaults stay
        # (TSO and GSO on: TCP super-frames cross the veths, as in a user's containers)
        self.kernel_defaults = False

    # ------------------------------------------------------------ building
    def ns(self, role: str) -> str:
        name = f"{self.tag}{role}"
        self.sh("ip", "netns", "add", name)
        self.names.append(name)
        self.sh("ip", "-n", name, "link", "set", "lo", "up")
        # no IPv6 chatter (router solicitations, MLD): the tests count packets
        self.run(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                 check=False)
        return name

    def veth(self, ns_a: str, dev_a: str, ns_b: str, dev_b: str) -> None:
        self.sh("ip", "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b)
        for ns, dev in ((ns_a, dev_a), (ns_b, dev_b)):
            if not self.kernel_defaults and shutil.which("ethtool"):   # whole frames only: no TSO/GSO, no GRO
                self.run(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", check=False)
            self.sh("ip", "-n", ns, "link", "set", dev, "up")

    def hops(self, lan_cidr: str, lan_gw: str, wan_gw_cidr: str, far_gw_cidr: str,
             far_cidrs: tuple[str, ...]) -> tuple[str, str, str, str]:
        """Four namespaces in a row, addressed and routed: a LAN host (L, h0) - the NF's box (N,
        lan0 | wan0) - a router (R, h0 | h1, forwarding, no ICMP rate limit) - a far host (F, h0,
        no ICMP rate limit); L routes via `lan_gw`, F via the router.  No static neighbour."""
        lan, box, router, far = self.ns("L"), self.ns("N"), self.ns("R"), self.ns("F")
        self.veth(lan, "h0", box, "lan0")
        self.veth(box, "wan0", router, "h0")
        self.veth(router, "h1", far, "h0")
        self.addr(lan, "h0", lan_cidr)
        self.sh("ip", "-n", lan, "route", "add", "default", "via", lan_gw)
        self.addr(router, "h0", wan_gw_cidr)
        self.addr(router, "h1", far_gw_cidr)
        for cidr in far_cidrs:
            self.addr(far, "h0", cidr)
        self.sh("ip", "-n", far, "route", "add", "default", "via", far_gw_cidr.split("/")[0])
        self.run(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for ns in (router, far):   # answer every probe: no per-host ICMP rate limit
            self.run(ns, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
        return lan, box, router, far

    def addr(self, ns: str, dev: str, cidr: str) -> None:
        self.sh("ip", "-n", ns, "addr", "add", cidr, "dev", dev)

    def mac(self, ns: str, dev: str) -> str:
        out = self.run(ns, "cat", f"/sys/class/net/{dev}/address").stdout
        return out.strip()

    def neigh(self, ns: str, ip: str, mac: str, dev: str) -> None:
        self.sh("ip", "-n", ns, "neigh", "replace", ip, "lladdr", mac, "dev", dev, "nud", "permanent")

    # ------------------------------------------------------------ running
    @staticmethod
    def sh(*cmd: str, check: bool = True, timeout: float = 15) -> subprocess.CompletedProcess:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 15) -> subprocess.CompletedProcess:
        return self.sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)

    def spawn(self, ns: str, *cmd: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kw)
        self.procs.append(p)
        return p

    def python(self, ns: str, code: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return self.run(ns, sys.executable, "-c", code, *args, timeout=timeout)

    def spawn_python(self, ns: str, code: str, *args: str) -> subprocess.Popen:
        return self.spawn(ns, sys.executable, "-c", code, *args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)

    # ------------------------------------------------------------ cleanup
    @staticmethod
    def pids_in(ns: str) -> list[int]:
        r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
        return [int(p) for p in r.stdout.split()]

    def pids(self) -> list[int]:
        return [p for ns in self.names for p in self.pids_in(ns)]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.pids():   # anything else started in the namespaces
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def assert_clean(self) -> None:
        left = set(self.names) & namespaces()
        assert not left, f"namespaces left behind: {sorted(left)}"
        assert all(p.poll() is not None for p in self.procs), "a test process is still running"


class LiveRun:
    """`nfos run NF --iface ...` in a namespace, read line by line; stop() returns its stats."""

    def __init__(self, lab: Lab, ns: str, nf: str, ifaces: dict[str, str], workers: int, tmp: Path,
                 params: tuple[str, ...] = (), duration: float = 60, extra: tuple[str, ...] = ()) -> None:
        self.stats_path = tmp / f"stats-{next(_ids)}.json"
        cmd = [sys.executable, "-m", "nfos", "run", nf, "--iface", ",".join(f"{d}={i}" for d, i in ifaces.items()),
               "--workers", str(workers), "--duration", str(duration), "--stats-interval", "0.25",
               "--stats-json", str(self.stats_path), "-q", *(a for p in params for a in ("--param", p)), *extra]
        self.proc = lab.spawn(ns, *cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _read(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith("nfos: ready:") for line in self.out):
            if self.proc.poll() is not None:
                time.sleep(0.1)
                raise AssertionError(f"nfos exited ({self.proc.returncode}): {' | '.join(self.err + self.out)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nfos did not become ready: {' | '.join(self.err + self.out)}")
            time.sleep(0.02)

    def stop(self, timeout: float = 20) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # reaches nfos itself: `ip netns exec` execs it
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.05)
        assert rc == 0, f"nfos exited with {rc}: {' | '.join(self.err)}"
        return json.loads(self.stats_path.read_text())


#: A TCP listener run in a namespace (argv: address, port): "ready", then the connections it
#: accepted, printed when its stdin closes.
TCP_LISTENER = r"""
import select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("ready", flush=True)
n = 0
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 30)
    if not r or sys.stdin in r:
        break
    s.accept()
    n += 1
print(n, flush=True)
"""


#: A UDP echo on port 7007 run in a namespace (argv: address): "ready", then echoes until its
#: stdin closes.
UDP_ECHO = r"""
import select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((sys.argv[1], 7007))
print("ready", flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 30)
    if not r or sys.stdin in r:
        break
    data, peer = s.recvfrom(100)
    s.sendto(data, peer)
"""


def need(*tools: str) -> None:
    """Skip the test unless every tool it drives is installed (the README's apt-get line has them)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (the README's apt-get line installs it)")


def wait_until(predicate, timeout: float = 10, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture
def lab():
    reason = live_skip_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()
    lab.assert_clean()


LAN_IP, WAN_IP = "192.0.2.1", "192.0.2.2"


class Wire:
    """LAN host — NF box — WAN host, one subnet (the NF is a bump in the wire), static ARP."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.lan, self.box, self.wan = lab.ns("L"), lab.ns("N"), lab.ns("W")
        lab.veth(self.lan, "h0", self.box, "lan0")
        lab.veth(self.box, "wan0", self.wan, "h0")
        lab.addr(self.lan, "h0", f"{LAN_IP}/24")
        lab.addr(self.wan, "h0", f"{WAN_IP}/24")
        # static ARP: the hosts know each other whatever the NF does with ARP (the firewall passes it
        # both ways; test_live_firewall_icmp.py runs without static neighbours)
        lab.neigh(self.lan, WAN_IP, lab.mac(self.wan, "h0"), "h0")
        lab.neigh(self.wan, LAN_IP, lab.mac(self.lan, "h0"), "h0")
        self.ifaces = {"lan": "lan0", "wan": "wan0"}


@pytest.fixture
def wire(lab):
    return Wire(lab)


@pytest.fixture
def nfos_live(lab, tmp_path):
    """``nfos_live(ns, "firewall.py", {"lan": "lan0", ...}, workers=2, params=(), extra=())`` -> a started LiveRun."""

    def start(ns: str, nf: str, ifaces: dict[str, str], workers: int = 1, params: tuple[str, ...] = (),
              extra: tuple[str, ...] = (), duration: float = 60) -> LiveRun:
        return LiveRun(lab, ns, str(EXAMPLES / nf), ifaces, workers, tmp_path, params, duration, extra)

    return start
