"""The Maglev load balancer on live veths: a client, the balancer, three web backends behind a switch.

    client ── wan0 [maglev] lan0 ── switch (Linux bridge) ── backend 1, 2, 3

The backends hold the VIP on their loopback (``arp_ignore``/``arp_announce`` so they never claim it
on the link) and announce themselves with UDP heartbeats broadcast to the heartbeat port.  The
balancer sends a client packet to its backend's MAC with the VIP unchanged; the backend answers the
client directly from the VIP (direct server return), through the balancer, which forwards lan ->
wan unchanged, so it can sit inline.  The balancer answers no ARP: the client knows the VIP's MAC
and the backends the client's statically, as hosts behind a router would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

CLIENT, VIP, BROADCAST = "192.0.2.100", "198.51.100.80", "192.0.2.255"
BACKENDS = {"b1": "192.0.2.11", "b2": "192.0.2.12", "b3": "192.0.2.13"}
TIMEOUT_S = 1.0   # backend_timeout

# An HTTP/1.1 server on VIP:80 answering its name (keep-alive unless the client says close).
SERVER = r"""
import http.server, sys
name = sys.argv[2].encode() + b"\n"
class Name(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], 80), Name).serve_forever()
"""

# Heartbeats every 0.1 s for at most 60 s (bounded even if nobody stops it).
HEARTBEATS = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind((sys.argv[1], 0))
end = time.monotonic() + 60
while time.monotonic() < end:
    s.sendto(b"alive", (sys.argv[2], 7777))
    time.sleep(0.1)
"""

# Keep-alive connections to the VIP until every backend holds one; prints {conn: backend}; on a
# line from stdin asks again on each connection and prints {conn: backend or the error}.
SESSIONS = r"""
import http.client, json, sys
def ask(c):
    c.request("GET", "/")
    return c.getresponse().read().decode().strip()
conns, names = [], []
while len(set(names)) < 3 and len(conns) < 60:
    c = http.client.HTTPConnection(sys.argv[1], 80, timeout=3)
    names.append(ask(c))
    conns.append(c)
print(json.dumps(names), flush=True)
sys.stdin.readline()
again = []
for c in conns:
    try:
        again.append(ask(c))
    except Exception as e:
        again.append(type(e).__name__)
print(json.dumps(again), flush=True)
"""


class Farm:
    def __init__(self, lab) -> None:
        self.lab = lab
        self.client, self.box, self.switch = lab.ns("C"), lab.ns("N"), lab.ns("S")
        lab.veth(self.client, "h0", self.box, "wan0")
        lab.veth(self.box, "lan0", self.switch, "s0")
        try:
            lab.sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        except RuntimeError as e:
            pytest.skip(f"no Linux bridge here (the backends' switch): {e}")
        lab.sh("ip", "-n", self.switch, "link", "set", "s0", "master", "br0")
        lab.addr(self.client, "h0", f"{CLIENT}/24")
        lab.sh("ip", "-n", self.client, "route", "add", f"{VIP}/32", "dev", "h0")
        lab.neigh(self.client, VIP, lab.mac(self.box, "wan0"), "h0")
        client_mac = lab.mac(self.client, "h0")
        self.backends: dict[str, str] = {}
        for i, (name, ip) in enumerate(BACKENDS.items()):
            ns = lab.ns(name.upper())
            self.backends[name] = ns
            lab.veth(ns, "h0", self.switch, f"s{i + 1}")
            lab.sh("ip", "-n", self.switch, "link", "set", f"s{i + 1}", "master", "br0")
            lab.addr(ns, "h0", f"{ip}/24")
            lab.addr(ns, "lo", f"{VIP}/32")
            lab.run(ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
                    "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.h0.rp_filter=0")
            lab.neigh(ns, CLIENT, client_mac, "h0")
        lab.sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        self.ifaces = {"wan": "wan0", "lan": "lan0"}
        self.heartbeats: dict[str, subprocess.Popen] = {}

    def start_backends(self) -> None:
        for name, ns in self.backends.items():
            self.lab.spawn(ns, sys.executable, "-c", SERVER, VIP, name, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            self.heartbeats[name] = self.lab.spawn(ns, sys.executable, "-c", HEARTBEATS, BACKENDS[name], BROADCAST,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def curl(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return self.lab.run(self.client, "curl", "-s", "-m", "10", *args, check=False, timeout=timeout)

    def names(self, n: int) -> list[str]:
        """Backend names of ``n`` requests, each on a new connection (so each a new flow)."""
        r = self.curl("-H", "Connection: close", *[f"http://{VIP}/"] * n)
        assert r.returncode == 0, r
        return r.stdout.split()


def test_maglev_spreads_connections_keeps_affinity_and_moves_only_a_dead_backends_flows(lab, nfos_live):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed (apt-get install -y curl)")
    farm = Farm(lab)
    run = nfos_live(farm.box, "maglev.py", farm.ifaces, workers=2,
                    params=(f"vips={VIP}", f"backend_timeout={TIMEOUT_S}s", "refresh_interval=0.1s"))
    run.wait_ready()
    farm.start_backends()
    # the three backends are up once one connection's answer comes from each
    deadline = time.monotonic() + 15
    seen: set[str] = set()
    while seen != set(BACKENDS) and time.monotonic() < deadline:
        seen.update(farm.names(6))
    assert seen == set(BACKENDS), f"only {sorted(seen)} answered"

    # new connections are spread over all three backends
    names = farm.names(30)
    assert len(names) == 30 and set(names) == set(BACKENDS), names

    # one connection (keep-alive: curl reuses it for all five requests) stays on one backend
    r = farm.curl("-w", "%{num_connects}\n", *[f"http://{VIP}/"] * 5)   # each body is "name\n"
    words = r.stdout.split()
    assert r.returncode == 0 and words[1::2] == ["1", "0", "0", "0", "0"], r.stdout
    assert len(set(words[0::2])) == 1 and words[0] in BACKENDS, r.stdout

    # long-lived connections on every backend; then b3's heartbeats stop
    sessions = lab.spawn(farm.client, sys.executable, "-c", SESSIONS, VIP, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = json.loads(sessions.stdout.readline() or "null")
    assert before is not None and set(before) == set(BACKENDS), sessions.stderr.read() if before is None else before
    farm.heartbeats["b3"].kill()
    time.sleep(TIMEOUT_S + 0.6)   # past backend_timeout (+ housekeeping at backend_timeout / 16)
    out, err = sessions.communicate(input="go\n", timeout=30)
    after = json.loads(out.strip())
    for was, now in zip(before, after, strict=True):
        if was == "b3":   # its flows moved: to a backend that knows nothing of the connection (reset)
            assert now not in BACKENDS, (before, after)
        else:             # everyone else's stay where they were
            assert now == was, (before, after)
    # new connections avoid the dead backend
    names = farm.names(15)
    assert len(names) == 15 and set(names) <= {"b1", "b2"}, names

    stats = run.stop()
    assert stats["handler_errors"] == 0 and stats["ring_drops"] == 0 and stats["tx_errors"] == 0
    assert stats["packets_out"]["lan"] > 0 and stats["packets_out"]["wan"] > 0
