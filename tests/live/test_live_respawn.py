"""Issue 13, live: a live worker that dies is respawned in its place in the fanout groups.

The control process holds every worker's ring sockets (opened and joined in slot order before
the fork), so a dead worker's socket keeps its member index; its replacement inherits it and
goes on from where the dead one was in its ring, with the same packet-set table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import frames as F
from nfos import _core
from nfos.runtime.session import Session

from .conftest import LAN_IP, UDP_ECHO, WAN_IP, LiveRun

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FLOWS_PER_WORKER = 4
#: the other worker's flows may not pause longer than this: the goal's 100 ms, plus a margin for
#: the 2-core VM the tests run on, where the sender, the echo and the two workers share 2 CPUs
#: (measured there: see the test's printed figures)
MAX_PAUSE_S = 0.1 + 0.2


# Every flow (a LAN source port) pings the WAN echo every 5 ms for argv[4] seconds; prints
# {port: [monotonic time of each reply]}.
PINGER = r"""
import json, select, socket, sys, time
ports = [int(p) for p in sys.argv[3].split(",")]
socks = {}
for p in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], p))
    s.setblocking(False)
    socks[s] = p
got = {p: [] for p in ports}
end = time.monotonic() + float(sys.argv[4])
next_send = 0.0
while True:
    now = time.monotonic()
    if now >= end:
        break
    if now >= next_send:
        for s in socks:
            try:
                s.sendto(b"ping", (sys.argv[2], 7007))
            except OSError:
                pass
        next_send = now + 0.005
    r, _, _ = select.select(list(socks), [], [], max(0.0, next_send - now))
    t = time.monotonic()
    for s in r:
        while True:
            try:
                s.recv(100)
            except BlockingIOError:
                break
            got[socks[s]].append(t)
print(json.dumps(got))
"""


def flows_per_worker(workers: int = 2) -> list[list[int]]:
    """LAN source ports of UDP flows to the WAN echo, FLOWS_PER_WORKER per worker (software RSS,
    which the fanout program computes too: tests/live/test_live_steering.py)."""
    s = Session(str(EXAMPLES / "firewall.py"), workers=workers, collect_output=False)
    try:
        s.init()
        out: list[list[int]] = [[] for _ in range(workers)]
        port = 30000
        while min(len(o) for o in out) < FLOWS_PER_WORKER:
            w, in_set, _ = _core.steer_frame(F.udp_frame(LAN_IP, WAN_IP, port, 7007), 0)
            assert in_set
            if len(out[w]) < FLOWS_PER_WORKER:
                out[w].append(port)
            port += 1
        return out
    finally:
        s.close()


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(p) for p in f.read().split())


def max_gap(times: list[float], start: float, end: float) -> float:
    """The longest time without a reply within [start, end]."""
    ts = [start] + [t for t in times if start < t < end] + [end]
    return max(b - a for a, b in zip(ts, ts[1:], strict=False))


def test_a_killed_live_worker_is_respawned_in_its_place(wire, nfos_live):
    lab = wire.lab
    per = flows_per_worker(2)
    echo = lab.spawn(wire.wan, sys.executable, "-c", UDP_ECHO, WAN_IP, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    assert echo.stdout.readline().strip() == "ready"
    run = nfos_live(wire.box, "firewall.py", wire.ifaces, workers=2)
    run.wait_ready()
    ports = per[0] + per[1]
    pinger = lab.spawn(wire.lan, sys.executable, "-c", PINGER, LAN_IP, WAN_IP, ",".join(map(str, ports)), "4",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    nfos_pid = next(p for p in lab.pids_in(wire.box) if len(children(p)) == 2)
    victim = children(nfos_pid)[-1]   # one of the two workers (which slot: the stats say)
    t_kill = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    out, err = pinger.communicate(timeout=30)
    echo.communicate(input="", timeout=10)
    stats = run.stop()
    replies = {int(p): ts for p, ts in json.loads(out).items()}

    assert stats["respawns"] == 1, stats["respawns"]
    dead = next(i for i, w in enumerate(stats["per_worker"]) if w["respawns"] == 1)
    other = 1 - dead
    end = t_kill + 2.0
    pauses = {p: max_gap(replies[p], t_kill - 0.5, end) for p in ports}
    back = {p: min((t for t in replies[p] if t > t_kill + 0.01), default=None) for p in per[dead]}
    print(f"\nkilled worker {dead}: its flows' pause {max(pauses[p] for p in per[dead]) * 1e3:.0f} ms, "
          f"the other worker's longest pause {max(pauses[p] for p in per[other]) * 1e3:.0f} ms, "
          f"packets_lost {stats['packets_lost']}")
    # the dead worker's flows pass again after the respawn, and their sets were kept: no set
    # was created twice (a LAN-initiated session whose state was lost would be a new set)
    for p in per[dead]:
        assert back[p] is not None and replies[p][-1] > end - 0.2, f"flow {p}: no reply after the respawn"
    assert stats["packet_sets_created"] == len(ports), stats["packet_sets_created"]
    # the other worker's flows never waited (beyond the margin: MAX_PAUSE_S)
    for p in per[other]:
        assert pauses[p] < MAX_PAUSE_S, f"flow {p} of the surviving worker paused {pauses[p] * 1e3:.0f} ms"
    assert stats["handler_errors"] == 0
    assert lab.pids_in(wire.box) == []


EXITING = """
import os
import nfos

nf = nfos.NF("exiting", devices=["lan", "wan"])


@nf.orphan
def forward(pkt):
    if pkt.l4 is not None and pkt.l4.dport == 6666:
        os._exit(3)
    pkt.send("wan" if pkt.dev == "lan" else "lan")
"""

POISON = r"""
import socket, sys, time
for i in range(60):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 31000 + i))
    s.sendto(b"die", (sys.argv[2], 6666))
    s.close()
    time.sleep(0.1)
"""


def test_a_live_handler_that_exits_stops_the_run_after_5_deaths(wire, tmp_path):
    lab = wire.lab
    nf = tmp_path / "exiting.py"
    nf.write_text(EXITING)
    run = LiveRun(lab, wire.box, str(nf), wire.ifaces, 2, tmp_path)
    run.wait_ready()
    t0 = time.monotonic()
    lab.python(wire.lan, POISON, LAN_IP, WAN_IP, timeout=30)
    rc = run.proc.wait(timeout=20)
    time.sleep(0.1)
    errors = [line for line in run.err if line.startswith("nfos: error:")]
    assert rc != 0 and len(errors) == 1, run.err
    assert "died 5 times within 10 s" in errors[0] and "exit code 3" in errors[0], errors
    assert time.monotonic() - t0 < 10
    assert lab.pids_in(wire.box) == []
