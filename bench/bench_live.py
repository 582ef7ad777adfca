"""Live forwarding benchmark: examples/firewall.py on AF_PACKET vs dpdk-testpmd vs an nftables firewall.

One veth testbed, three network namespaces (as root):

    gen (trafgen, CPU 0) ── h0 | lan0 [box] wan0 | h0 ── sink (counts frames)

and three boxes in turn, each given CPU 1:

* ``nfos``: ``nfos run examples/firewall.py --iface lan=lan0,wan=wan0 --workers 1`` (pinned to CPU 1);
* ``testpmd``: ``dpdk-testpmd --no-huge --vdev=net_af_packet0,iface=lan0 --vdev=net_af_packet1,iface=wan0``
  in ``io`` forwarding mode, forwarding lcore 1 (the main lcore 0 only prints statistics);
* ``nftables``: the kernel forwards (ip_forward=1, addresses and routes on lan0/wan0, static
  neighbours) through an ``inet`` forward chain: policy drop, established/related accepted, new
  connections accepted from lan0 to wan0 only (the firewall's contract).

The generator sends 60-byte UDP frames (without FCS) of 1,004 flows (251 source ports x 4
destinations) LAN -> WAN.  For the AF_PACKET boxes the frames are addressed to a MAC that is
not the box's (a bump in the wire: the box's own stack drops them at once); for nftables to
lan0's MAC (the box is the router).  Frames leaving the box are for no host in the sink (dropped
there at once); the sink's veth counter is the forwarded count.

Where the kernel's receive work runs is the ``placement``:

* ``rx-on-generator-cpu`` (veth's default): a veth delivers a frame in the sender's softirq, so
  the box's receive path -- AF_PACKET's copy into the ring, or the whole of nftables forwarding
  -- runs on CPU 0 with the generator; CPU 1 runs only the user-space forwarder (idle for
  nftables).
* ``rx-on-box-cpu``: RPS on lan0 moves that work to CPU 1, so the box is exactly one CPU.

For each box and placement: the generator's top rate (``trafgen -t 0``), the forwarded rate at
that overload, and by bisection the highest offered rate forwarded with at most ``--loss``
(default 1 %) lost (``trafgen -b RATEpps``), each trial ``--seconds`` long after a warm-up.
If even the top rate passes, the point is generator-bound (a lower bound) and says so.
2 workers vs 1 needs a third CPU (2 for the workers, 1 for the generator): on a 2-CPU machine it
is not measured and the JSON says so.

    python bench/bench_live.py --out bench/results/live-2core/live.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's bench/
from bench.harness import machine  # noqa: E402

FIREWALL = ROOT / "examples" / "firewall.py"
FOREIGN_MAC = "02:00:00:00:99:99"
GEN_CPU, BOX_CPU = 0, 1
PLACEMENTS = ("rx-on-generator-cpu", "rx-on-box-cpu")
BOXES = ("nfos", "testpmd", "nftables")
NFT_RULES = """table inet nfosbench {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" ct state new accept
  }
}
"""


def sh(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()}")
    return r


class Bed:
    """gen — box — sink; close() kills every process in them and removes them."""

    def __init__(self) -> None:
        tag = f"nfb{os.getpid() % 100000}"
        self.gen, self.box, self.sink = f"{tag}G", f"{tag}N", f"{tag}S"
        self.names: list[str] = []
        for ns in (self.gen, self.box, self.sink):
            sh("ip", "netns", "add", ns)
            self.names.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            self.run(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1", check=False)
        self.veth(self.gen, "h0", self.box, "lan0")
        self.veth(self.box, "wan0", self.sink, "h0")

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)

    def spawn(self, ns: str, *cmd: str, out: Path | None = None) -> subprocess.Popen:
        sink = open(out, "w") if out else subprocess.DEVNULL   # noqa: SIM115 (closed with the process)
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT)

    def veth(self, a: str, da: str, b: str, db: str) -> None:
        sh("ip", "link", "add", da, "netns", a, "type", "veth", "peer", "name", db, "netns", b)
        for ns, dev in ((a, da), (b, db)):
            if shutil.which("ethtool"):
                self.run(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", check=False)
            sh("ip", "-n", ns, "link", "set", dev, "up")

    def mac(self, ns: str, dev: str) -> str:
        return self.run(ns, "cat", f"/sys/class/net/{dev}/address").stdout.strip()

    def counter(self, ns: str, dev: str, what: str) -> int:
        return int(self.run(ns, "cat", f"/sys/class/net/{dev}/statistics/{what}").stdout)

    def rps(self, cpus_mask: int) -> None:
        self.run(self.box, "sh", "-c", f"echo {cpus_mask:x} > /sys/class/net/lan0/queues/rx-0/rps_cpus")

    def pids(self, ns: str) -> list[int]:
        return [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]

    def kill_all(self, ns: str, sig: int = signal.SIGKILL, wait: float = 5) -> None:
        for pid in self.pids(ns):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while self.pids(ns) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        for ns in self.names:
            self.kill_all(ns)
        for ns in self.names:
            sh("ip", "netns", "del", ns, check=False)


def trafgen_config(dst_mac: str, src_mac: str) -> str:
    def octets(m: str) -> str:
        return ", ".join(f"0x{b}" for b in m.split(":"))

    return (f"{{ {octets(dst_mac)}, {octets(src_mac)}, c16(0x0800),\n"
            "  0x45, 0x00, c16(46), c16(0), c16(0), 64, 17, csumip(14, 33),\n"
            "  10, 0, 0, 2, 10, 1, 0, dinc(2, 5),\n"
            "  0x40, dinc(0, 250), c16(9), c16(26), c16(0),\n"
            "  fill(0x00, 18) }\n")


def cpu_times() -> dict[str, tuple[int, int]]:
    """Per CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in vals]
                out[name] = (sum(v) - v[3] - v[4], sum(v))   # all but idle and iowait
    return out


def cpu_busy(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]]) -> dict[str, float]:
    return {c: round((b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]), 3) for c in sorted(b) if c in a}


class Generator:
    def __init__(self, bed: Bed, config: Path, log: Path) -> None:
        self.bed, self.config, self.log = bed, config, log

    def trial(self, rate: int | None, seconds: float, warmup: float = 0.7) -> dict[str, float]:
        """Offer ``rate`` pps (None: as fast as trafgen goes); returns offered and forwarded pps."""
        bed = self.bed
        pace = ["-t", "0"] if rate is None else ["-b", f"{rate}pps"]
        # -P 1: one process; -Q: leave IRQ affinities alone; -C: no CPU statistics
        bed.spawn(bed.gen, "taskset", "-c", str(GEN_CPU), "trafgen", "-o", "h0", "-i", str(self.config), "-P", "1",
                  "-Q", "-C", *pace, out=self.log)
        time.sleep(warmup)
        c0 = cpu_times()
        t0, tx0, rx0 = time.monotonic(), bed.counter(bed.gen, "h0", "tx_packets"), bed.counter(bed.sink, "h0",
                                                                                               "rx_packets")
        time.sleep(seconds)
        t1, tx1, rx1 = time.monotonic(), bed.counter(bed.gen, "h0", "tx_packets"), bed.counter(bed.sink, "h0",
                                                                                               "rx_packets")
        c1 = cpu_times()
        bed.kill_all(bed.gen, signal.SIGINT, wait=2)
        bed.kill_all(bed.gen)
        time.sleep(0.3)   # let the box drain
        dt = t1 - t0
        offered, forwarded = (tx1 - tx0) / dt, (rx1 - rx0) / dt
        return {"rate": rate, "offered_pps": round(offered), "forwarded_pps": round(forwarded),
                "loss": round(1 - forwarded / offered, 4) if offered else None, "cpu_busy": cpu_busy(c0, c1)}


def search(gen: Generator, seconds: float, loss: float, steps: int) -> dict[str, object]:
    """The generator's top rate, the forwarded rate there, and the highest rate lost <= ``loss``."""
    top = gen.trial(None, seconds)
    trials = [top]
    best = None
    if top["loss"] is not None and top["loss"] <= loss:
        best = top
    else:
        lo, hi = 0, int(top["offered_pps"])
        for _ in range(steps):
            mid = (lo + hi) // 2
            t = gen.trial(mid, seconds)
            trials.append(t)
            if t["loss"] is not None and t["loss"] <= loss:
                lo, best = mid, t
            else:
                hi = mid
    return {"generator_top_pps": top["offered_pps"], "forwarded_at_top_pps": top["forwarded_pps"],
            "cpu_busy_at_top": top["cpu_busy"],
            "max_pps_within_loss": best["forwarded_pps"] if best else 0,
            "offered_at_max_pps": best["offered_pps"] if best else 0,
            "generator_bound": best is top, "trials": trials}


# ------------------------------------------------------------------ boxes

def start_nfos(bed: Bed, tmp: Path) -> tuple[subprocess.Popen, Path]:
    stats = tmp / "nfos-stats.json"
    p = bed.spawn(bed.box, "taskset", "-c", str(BOX_CPU), sys.executable, "-m", "nfos", "run", str(FIREWALL),
                  "--iface", "lan=lan0,wan=wan0", "--workers", "1", "--duration", "3600", "-q",
                  "--stats-json", str(stats), out=tmp / "nfos.log")
    deadline = time.monotonic() + 30
    while "nfos: ready:" not in (tmp / "nfos.log").read_text():
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nfos did not start: {(tmp / 'nfos.log').read_text()[-500:]}")
        time.sleep(0.05)
    return p, stats


def start_testpmd(bed: Bed, tmp: Path) -> subprocess.Popen:
    log = tmp / "testpmd.log"
    p = bed.spawn(bed.box, "dpdk-testpmd", "-l", f"{GEN_CPU},{BOX_CPU}", "--main-lcore", str(GEN_CPU), "--no-huge",
                  "-m", "256", "--no-pci", "--file-prefix", f"nfosbench{os.getpid()}",
                  "--vdev=net_af_packet0,iface=lan0", "--vdev=net_af_packet1,iface=wan0", "--",
                  "--forward-mode=io", "--auto-start", "--nb-cores=1", "--total-num-mbufs=16384",
                  "--stats-period", "1", out=log)
    deadline = time.monotonic() + 30
    while "Port statistics" not in log.read_text():
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dpdk-testpmd did not start: {log.read_text()[-800:]}")
        time.sleep(0.1)
    return p


def setup_nftables(bed: Bed, tmp: Path) -> None:
    b = bed.box
    sh("ip", "-n", b, "addr", "add", "10.0.0.1/24", "dev", "lan0")
    sh("ip", "-n", b, "addr", "add", "10.1.0.1/24", "dev", "wan0")
    bed.run(b, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for last in range(2, 6):
        sh("ip", "-n", b, "neigh", "replace", f"10.1.0.{last}", "lladdr", FOREIGN_MAC, "dev", "wan0", "nud",
           "permanent")
    (tmp / "fw.nft").write_text(NFT_RULES)
    bed.run(b, "nft", "-f", str(tmp / "fw.nft"))


def teardown_nftables(bed: Bed) -> int:
    b = bed.box
    conntrack = bed.run(b, "cat", "/proc/sys/net/netfilter/nf_conntrack_count", check=False).stdout.strip()
    bed.run(b, "nft", "delete", "table", "inet", "nfosbench", check=False)
    bed.run(b, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    sh("ip", "-n", b, "addr", "flush", "dev", "lan0")
    sh("ip", "-n", b, "addr", "flush", "dev", "wan0")
    return int(conntrack) if conntrack.isdigit() else -1


def missing(box: str) -> str | None:
    need = {"nfos": [], "testpmd": ["dpdk-testpmd"], "nftables": ["nft"]}[box]
    gone = [t for t in need if shutil.which(t) is None]
    if gone:
        pkg = {"dpdk-testpmd": "dpdk-dev (Debian: dpdk-testpmd is in dpdk-dev)", "nft": "nftables"}
        return f"not measured: {gone[0]} is not installed (apt-get install -y {pkg[gone[0]]})"
    return None


def measure(bed: Bed, box: str, tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    dst = bed.mac(bed.box, "lan0") if box == "nftables" else FOREIGN_MAC
    cfg = tmp / f"{box}.cfg"
    cfg.write_text(trafgen_config(dst, bed.mac(bed.gen, "h0")))
    gen = Generator(bed, cfg, tmp / "trafgen.log")
    proc, extra = None, {}
    try:
        if box == "nfos":
            proc, stats_path = start_nfos(bed, tmp)
        elif box == "testpmd":
            proc = start_testpmd(bed, tmp)
        else:
            setup_nftables(bed, tmp)
        result = search(gen, args.seconds, args.loss, args.steps)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        bed.kill_all(bed.box)
        if box == "testpmd":   # DPDK's runtime directory for --file-prefix
            shutil.rmtree(f"/var/run/dpdk/nfosbench{os.getpid()}", ignore_errors=True)
    if box == "nfos" and stats_path.exists():
        s = json.loads(stats_path.read_text())
        extra = {k: s.get(k) for k in ("packets_in", "ring_drops", "tx_errors", "handler_errors",
                                       "packet_sets_created")}
    elif box == "testpmd":
        extra = {"log_tail": (tmp / "testpmd.log").read_text()[-600:].splitlines()[-12:]}
    else:
        extra = {"conntrack_entries": teardown_nftables(bed)}
    return {**result, "box_stats": extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per trial")
    ap.add_argument("--loss", type=float, default=0.01, help="largest loss counted as forwarding the rate")
    ap.add_argument("--steps", type=int, default=7, help="bisection steps per box")
    ap.add_argument("--boxes", default=",".join(BOXES))
    ap.add_argument("--placements", default=",".join(PLACEMENTS))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_live: needs root (network namespaces, AF_PACKET)")
    if shutil.which("trafgen") is None:
        sys.exit("bench_live: trafgen is not installed (apt-get install -y netsniff-ng)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench_live: needs 2 CPUs (one for the generator, one for the box)")
    boxes = args.boxes.split(",")
    placements = args.placements.split(",")
    result: dict[str, object] = {
        "command": "python bench/bench_live.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "setup": {"frame_bytes": 60, "flows": 1004, "generator": "trafgen (netsniff-ng), 1 process on CPU 0",
                  "box_cpu": BOX_CPU, "loss_threshold": args.loss, "trial_seconds": args.seconds,
                  "bisection_steps": args.steps,
                  "nfos": "examples/firewall.py, --workers 1, taskset -c 1",
                  "testpmd": "io forwarding, forwarding lcore 1, --no-huge, net_af_packet vdevs",
                  "nftables": "ip_forward, inet forward chain: drop, established/related accept, "
                              "lan0->wan0 new accept"},
        "placements": {}, "ratios": {},
        "workers_2_vs_1": ("not measured: 2 workers need 2 CPUs and the generator a third; this machine has "
                           f"{os.cpu_count()}" if (os.cpu_count() or 1) < 3 else
                           "not measured by this script (run --boxes nfos with more CPUs: see docs)"),
    }
    tmp = Path(tempfile.mkdtemp(prefix="nfos-bench-live-"))
    bed = Bed()
    try:
        for placement in placements:
            bed.rps(1 << BOX_CPU if placement == "rx-on-box-cpu" else 0)
            points: dict[str, object] = {}
            for box in boxes:
                why = missing(box)
                if why:
                    points[box] = why
                    print(f"{placement} {box}: {why}", flush=True)
                    continue
                try:
                    points[box] = measure(bed, box, tmp, args)
                except RuntimeError as e:
                    points[box] = f"not measured: {e}"
                print(f"{placement} {box}: {json.dumps(points[box])[:300]}", flush=True)
            result["placements"][placement] = points
            ratios: dict[str, object] = {}
            nf = points.get("nfos")
            for other in ("testpmd", "nftables"):
                o = points.get(other)
                if not (isinstance(nf, dict) and isinstance(o, dict)):
                    continue
                if not o["max_pps_within_loss"]:
                    ratios[f"nfos/{other}"] = f"undefined: {other} lost more than the threshold at every rate tried"
                    continue
                bound = [b for b, r in (("nfos", nf), (other, o)) if r["generator_bound"]]
                ratios[f"nfos/{other}"] = {
                    "ratio": round(nf["max_pps_within_loss"] / o["max_pps_within_loss"], 3),
                    "meaning": ("both generator-bound: a ratio of what the generator offered, not of capacities"
                                if len(bound) == 2 else f"{bound[0]} is generator-bound (a lower bound)" if bound
                                else "both measured below the generator's top rate")}
            result["ratios"][placement] = ratios
    finally:
        bed.close()
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
