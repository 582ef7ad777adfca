"""Live soak (issue 13, point 6): the firewall on veths for --minutes, under steady UDP traffic
with flow churn, printing --stats-interval lines; every process's RSS and open file
descriptors sampled; at the end: does anything grow?

    sudo python bench/soak_live.py --minutes 30 --out bench/results/soak-live-2core   # the 30-minute soak
    sudo python bench/soak_live.py --minutes 3                                         # a short one

Topology (network namespaces this script creates and removes, names unique to it):
LAN host -- [lan0  nfos run examples/firewall.py  wan0] -- WAN host.  The LAN host sends UDP
datagrams to a UDP echo on the WAN host from a window of source ports that moves on every few
seconds (new sessions all the time; expiry is 2 s, so the old ones expire all the time); the
echoes come back through the firewall.  Only addresses inside these namespaces are used.

Flat means, after the warm-up (the first --warmup fraction of the run): each nfos process's
RSS within +-5 % of its mean and the same number of open file descriptors.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAN_IP, WAN_IP = "192.0.2.1", "192.0.2.2"

SENDER = r"""
import socket, sys, time
rate, ports, dst, window, phase = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
socks = []
for i in range(ports):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 20000 + i))
    s.setblocking(False)
    socks.append(s)
sent = 0
t0 = time.monotonic()
while True:
    now = time.monotonic()
    due = t0 + sent / rate
    if now < due:
        time.sleep(min(due - now, 0.01))
    # a window of `window` source ports, moving on every `phase` seconds: new sessions
    # begin, the previous window's go idle and expire
    base = int((now - t0) / phase) * window
    s = socks[(base + sent % window) % ports]
    try:
        s.sendto(b"x" * 64, (dst, 7007))
    except OSError:
        pass
    sent += 1
    if sent % 256 == 0:   # drain the echoes
        for k in range(window):
            try:
                while True:
                    socks[(base + k) % ports].recv(2048)
            except OSError:
                pass
"""

ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7007))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def ns_pids(ns: str) -> list[int]:
    return [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]


def proc_sample(pid: int) -> tuple[int, int] | None:
    """(RSS KiB, open fds) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=20000, help="datagrams per second from the LAN host")
    ap.add_argument("--ports", type=int, default=2000, help="source ports the LAN host uses")
    ap.add_argument("--window", type=int, default=200, help="source ports in use at a time")
    ap.add_argument("--phase", type=float, default=3.0, help="seconds before the window moves on")
    ap.add_argument("--stats-interval", type=float, default=10.0)
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS / fd samples")
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--out", default=None, help="directory for soak.log, stats.json and soak.json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak_live.py needs root (network namespaces, veths, AF_PACKET)")
    tag = f"nfsoak{os.getpid() % 100000}"
    lan, box, wan = tag + "L", tag + "N", tag + "W"
    out = a.out or os.path.join(ROOT, "build", "soak-live")
    os.makedirs(out, exist_ok=True)
    procs: list[subprocess.Popen] = []
    log = open(os.path.join(out, "soak.log"), "w")

    def say(line: str) -> None:
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    try:
        for ns in (lan, box, wan):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        for a_ns, a_dev, b_ns, b_dev in ((lan, "h0", box, "lan0"), (box, "wan0", wan, "h0")):
            sh("ip", "link", "add", a_dev, "netns", a_ns, "type", "veth", "peer", "name", b_dev, "netns", b_ns)
            for ns, dev in ((a_ns, a_dev), (b_ns, b_dev)):
                sh("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
                   check=False)
                sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", lan, "addr", "add", f"{LAN_IP}/24", "dev", "h0")
        sh("ip", "-n", wan, "addr", "add", f"{WAN_IP}/24", "dev", "h0")
        mac = {ns: sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/h0/address").stdout.strip() for ns in (lan, wan)}
        sh("ip", "-n", lan, "neigh", "replace", WAN_IP, "lladdr", mac[wan], "dev", "h0", "nud", "permanent")
        sh("ip", "-n", wan, "neigh", "replace", LAN_IP, "lladdr", mac[lan], "dev", "h0", "nud", "permanent")

        stats_path = os.path.join(out, "stats.json")
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"), COLUMNS="200")
        nfos = subprocess.Popen(
            ["ip", "netns", "exec", box, sys.executable, "-m", "nfos", "run", os.path.join(ROOT, "examples", "firewall.py"),
             "--iface", "lan=lan0,wan=wan0", "--workers", str(a.workers), "--param", "expiry=2s",
             "--stats-interval", str(a.stats_interval), "--stats-json", stats_path, "-q"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(nfos)
        ready = threading.Event()

        def pump() -> None:
            for line in nfos.stdout:
                say(line.rstrip("\n"))
                if line.startswith("nfos: ready:"):
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(60):
            raise RuntimeError("nfos did not become ready")
        procs.append(subprocess.Popen(["ip", "netns", "exec", wan, sys.executable, "-c", ECHO, WAN_IP]))
        time.sleep(0.5)
        procs.append(subprocess.Popen(["ip", "netns", "exec", lan, sys.executable, "-c", SENDER, str(a.rate),
                                       str(a.ports), WAN_IP, str(a.window), str(a.phase)]))
        pids = ns_pids(box)
        say(f"soak: {a.minutes} min, firewall with {a.workers} workers, {a.rate:.0f} datagrams/s from "
            f"{a.window} of {a.ports} source ports at a time, the next {a.window} every {a.phase} s; nfos pids {pids}")
        samples = []
        t0 = time.monotonic()
        end = t0 + 60 * a.minutes
        while time.monotonic() < end:
            time.sleep(a.sample)
            row = {"t": round(time.monotonic() - t0, 1), "procs": {}}
            for pid in pids:
                s = proc_sample(pid)
                if s is None:
                    raise RuntimeError(f"nfos process {pid} is gone")
                row["procs"][pid] = {"rss_kb": s[0], "fds": s[1]}
            samples.append(row)
            say(f"soak: {row['t']:>7.1f}s " + " ".join(f"{pid}: rss {v['rss_kb']} KiB fds {v['fds']}"
                                                     for pid, v in row["procs"].items()))
        nfos.send_signal(signal.SIGTERM)
        rc = nfos.wait(timeout=30)
        stats = json.load(open(stats_path)) if os.path.exists(stats_path) else {}
        after = [r for r in samples if r["t"] >= a.warmup * 60 * a.minutes]
        verdict: dict = {"minutes": a.minutes, "workers": a.workers, "exit_code": rc, "processes": {}}
        for pid in pids:
            rss = [r["procs"][pid]["rss_kb"] for r in after]
            fds = {r["procs"][pid]["fds"] for r in after}
            mean = sum(rss) / len(rss)
            verdict["processes"][pid] = {"rss_mean_kb": round(mean), "rss_min_kb": min(rss), "rss_max_kb": max(rss),
                                         "spread_pct": round(100 * max(abs(v - mean) for v in rss) / mean, 2),
                                         "fds": sorted(fds)}
        verdict["rss_flat"] = all(p["spread_pct"] <= 5 for p in verdict["processes"].values())
        verdict["fds_flat"] = all(len(p["fds"]) == 1 for p in verdict["processes"].values())
        for k in ("packets_in", "packets_out", "dropped", "handler_errors", "ring_drops", "tx_errors",
                  "packet_sets_created", "packet_sets_expired", "wall_s"):
            verdict[k] = stats.get(k)
        with open(os.path.join(out, "soak.json"), "w") as f:
            json.dump({"verdict": verdict, "samples": samples}, f, indent=1)
        say("soak: " + json.dumps(verdict))
        return 0 if rc == 0 and verdict["rss_flat"] and verdict["fds_flat"] else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in (lan, box, wan):
            for pid in ns_pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
