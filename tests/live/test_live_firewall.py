"""The firewall on live veths (LAN host — NF — WAN host): TCP and UDP sessions work from the
inside, nothing unsolicited gets in from the outside."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time

import pytest

from live.conftest import TCP_LISTENER

LAN_IP, WAN_IP = "192.0.2.1", "192.0.2.2"

# Counts TCP frames on h0, and SYNs to a port; stops when its stdin closes.
SNIFFER = r"""
import select, socket, struct, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("h0", 0))
print("ready", flush=True)
tcp = syn = 0
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 30)
    if not r or sys.stdin in r:
        break
    f = s.recv(65535)
    if len(f) >= 54 and f[12:14] == b"\x08\x00" and f[23] == 6:
        t = 14 + (f[14] & 15) * 4
        tcp += 1
        if struct.unpack("!H", f[t + 2:t + 4])[0] == port and f[t + 13] & 0x02:
            syn += 1
print(tcp, syn, flush=True)
"""

UDP_ECHO = r"""
import select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
n = 0
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 30)
    if not r or sys.stdin in r:
        break
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
    n += 1
print(n, flush=True)
"""


UDP_SINK = r"""
import select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
n = 0
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 30)
    if not r or sys.stdin in r:
        break
    s.recvfrom(2048)
    n += 1
print(n, flush=True)
"""


def started(p: subprocess.Popen) -> subprocess.Popen:
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    return p


def finish(p: subprocess.Popen) -> str:
    out, err = p.communicate(input="", timeout=15)   # closing stdin ends the helper
    assert p.returncode == 0, err
    return out.strip()


def spawn_helper(lab, ns, code, *args):
    p = lab.spawn(ns, sys.executable, "-c", code, *args, stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return started(p)


def test_tcp_from_lan_works_unsolicited_syns_are_filtered(wire, nfos_live, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed (apt-get install -y curl)")
    lab = wire.lab
    metrics = importlib.util.find_spec("prometheus_client") is not None   # the nfos[live] extra
    run = nfos_live(wire.box, "firewall.py", wire.ifaces, workers=2,
                    extra=("--metrics-port", "9310") if metrics else ())
    (tmp_path / "hello.txt").write_text("hello through the firewall\n")
    lab.spawn(wire.wan, sys.executable, "-m", "http.server", "8080", "--bind", WAN_IP,
              "--directory", str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sniffer = spawn_helper(lab, wire.lan, SNIFFER, "2222")
    run.wait_ready()
    listening = lab.run(wire.wan, "curl", "-s", "-o", "/dev/null", f"http://{WAN_IP}:8080/", check=False)
    deadline = time.monotonic() + 10
    while listening.returncode != 0 and time.monotonic() < deadline:   # the server is starting
        time.sleep(0.1)
        listening = lab.run(wire.wan, "curl", "-s", "-o", "/dev/null", f"http://{WAN_IP}:8080/", check=False)

    # a connection from the inside: through the firewall and back
    r = lab.run(wire.lan, "curl", "-s", "-m", "5", f"http://{WAN_IP}:8080/hello.txt", check=False)
    assert r.returncode == 0 and r.stdout == "hello through the firewall\n", r

    # SYNs from the outside: filtered, none reaches the LAN host (which listens on the port)
    listener = spawn_helper(lab, wire.lan, TCP_LISTENER, LAN_IP, "2222")
    if shutil.which("nmap"):
        # raw IP, not Ethernet: nmap's own ARP would be an orphan from the WAN, dropped
        scan = lab.run(wire.wan, "nmap", "-sS", "-Pn", "-n", "--send-ip", "--disable-arp-ping", "-p", "2222",
                       "--max-retries", "1", "--host-timeout", "10s", LAN_IP, timeout=30)
        assert "2222/tcp filtered" in scan.stdout, scan.stdout
    elif shutil.which("hping3"):
        scan = lab.run(wire.wan, "hping3", "-S", "-p", "2222", "-c", "3", "-i", "u100000", LAN_IP,
                       check=False, timeout=30)
        assert "100% packet loss" in scan.stdout + scan.stderr, scan
    else:
        pytest.skip("neither nmap nor hping3 is installed (apt-get install -y nmap hping3)")
    tcp, syns = map(int, finish(sniffer).split())
    assert tcp > 0, "the sniffer saw the LAN's own TCP connection"
    assert syns == 0, f"{syns} SYN(s) from the WAN reached the LAN host"
    assert finish(listener) == "0"

    if metrics:   # the counters are on the metrics port
        page = lab.run(wire.box, "curl", "-s", "-m", "5", "http://127.0.0.1:9310/metrics").stdout
        assert 'nfos_rx_packets_total{worker="0"}' in page and "nfos_ring_drops_total" in page

    stats = run.stop()
    assert stats["mode"] == "live" and stats["workers"] == 2
    assert stats["packets_out"]["wan"] > 0 and stats["packets_out"]["lan"] > 0
    assert stats["dropped"] >= 1 and stats["handler_errors"] == 0
    assert stats["ring_drops"] == 0 and stats["tx_errors"] == 0
    assert any(line.startswith("nfos:") and " rx " in line and "| w0 rx" in line for line in run.out)
    assert lab.pids_in(wire.box) == []   # the NF and its workers are gone


def test_udp_replies_come_back_unsolicited_udp_does_not(wire, nfos_live):
    lab = wire.lab
    run = nfos_live(wire.box, "firewall.py", wire.ifaces, workers=1, params=("expiry=0.5s",))
    echo = spawn_helper(lab, wire.wan, UDP_ECHO, WAN_IP, "7007")
    sink = spawn_helper(lab, wire.lan, UDP_SINK, LAN_IP, "6000")
    run.wait_ready()

    # LAN-initiated flows: the replies come back (nc -u as a client)
    client = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 40000))
s.settimeout(3)
got = 0
for i in range(3):
    s.sendto(b"ping %d" % i, (sys.argv[2], 7007))
    try:
        got += s.recv(100) == b"ping %d" % i
    except OSError:
        pass
print(got)
"""
    assert lab.python(wire.lan, client, LAN_IP, WAN_IP).stdout.strip() == "3"
    if shutil.which("nc"):
        r = lab.run(wire.lan, "sh", "-c", f"echo hi-nc | nc -u -w 2 -p 40001 {WAN_IP} 7007", check=False,
                    timeout=10)
        assert "hi-nc" in r.stdout, r

    # the WAN host sends to the LAN host unsolicited: dropped
    lab.python(wire.wan, r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5):
    s.sendto(b"unsolicited", (sys.argv[1], 6000))
""", LAN_IP)
    time.sleep(0.3)
    assert finish(sink) == "0"
    assert int(finish(echo)) >= 3

    time.sleep(1.0)   # idle sessions expire on the monotonic clock (swept while the worker waits)
    stats = run.stop()
    assert stats["packet_sets_created"] >= 1 and stats["dropped"] >= 5
    assert stats["packet_sets_expired"] == stats["packet_sets_created"]
    assert stats["handler_errors"] == 0 and stats["ring_drops"] == 0
    assert lab.pids_in(wire.box) == []   # the NF and its workers are gone
