"""Issue 10.2, live: a periodic handler that scans a 65,536-bucket Map while the workers process
traffic (real time: the control process runs it, concurrently) completes with at most one abort
per run — too large for one transaction, it runs irrevocably at once — and prints once per run."""

from __future__ import annotations

import re

from .conftest import LAN_IP, WAN_IP

SCANNER = '''
import nfos

nf = nfos.NF("live_scan", devices=["lan", "wan"])


@nf.init
def setup(p):
    nf.state.m = nfos.Map(nfos.u32, nfos.u32, 65536)   # 65,536 buckets
    nf.state.runs = nfos.Vector(nfos.u32, 1)


@nf.orphan
def count(pkt):
    if pkt.udp is not None:
        k = pkt.udp.sport
        nf.state.m[k] = nf.state.m.get(k, 0) + 1


@nf.periodic(nfos.millis(100))
def scan():
    run = nf.state.runs[0] + 1
    nf.state.runs[0] = run
    print(f"scan {run} start")
    seen = sum(v for _k, v in nf.state.m.items())
    print(f"scan {run} saw {seen}")
'''

SENDER = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
socks = []
for i in range(64):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("{LAN_IP}", 0))
    socks.append(u)
end = time.monotonic() + 1.5
n = 0
while time.monotonic() < end:
    socks[n % 64].sendto(b"x" * 32, ("{WAN_IP}", 9))
    n += 1
    if n % 50 == 0:
        time.sleep(0.002)
print(n)
"""


def test_a_periodic_scan_of_a_big_map_aborts_at_most_once_per_run(wire, nfos_live, tmp_path):
    nf = tmp_path / "scan.py"
    nf.write_text(SCANNER)
    run = nfos_live(wire.box, str(nf), wire.ifaces, workers=2)
    run.wait_ready()
    sent = int(wire.lab.python(wire.lan, SENDER, timeout=30).stdout.split()[-1])
    assert sent > 0
    stats = run.stop()
    starts = [int(m.group(1)) for line in run.out if (m := re.fullmatch(r"scan (\d+) start", line))]
    ends = [int(m.group(1)) for line in run.out if (m := re.fullmatch(r"scan (\d+) saw \d+", line))]
    assert len(starts) >= 5, run.out
    assert starts == list(range(1, len(starts) + 1)), "a run's print appeared twice (or not at all)"
    assert ends == starts
    assert stats["packets_in"] > 0 and stats["handler_errors"] == 0
    # the workers never conflict here (one flow of addresses: one worker, its own keys): every abort
    # is a scan's (too large, or a worker's commit met first), and each scan aborted at most once
    # before running alone
    assert 1 <= stats["aborts"] <= len(starts), stats["aborts_by_cause"]
    assert stats["aborts_by_cause"]["too_large"] >= 1
    assert stats["irrevocable"] >= stats["aborts"]
