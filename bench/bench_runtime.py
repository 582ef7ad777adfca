"""Runtime benchmark (issue: runtime core): saturation throughput per NF and worker count.

Measured in one run on one machine, RX rings pre-filled (trace loading excluded):
  - per-worker throughput of the empty NF, firewall.py and policer.py (0, 1, 2 workers);
  - firewall.py 1 worker / the plain idiomatic Python firewall (bench/peers/plain_firewall.py);
  - firewall.py 2 workers / 1 worker on a 20,000-flow trace;
  - anti_ddos.py (staleness 0.1 ms) 1 worker / --workers 0: the price of transactions;
  - peak memory per worker.
Each point is the median of --repeat runs.  Writes JSON (and a PNG if matplotlib is present).

    python bench/bench_runtime.py --out bench/results/runtime-<machine>.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from nfos.io import gen_antiddos, gen_caida
from nfos.runtime.replay import replay

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's bench/
from bench.harness.configs import load_peer, machine  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "examples")


def nfos_point(nf: str, trace, workers: int, params: list[str], repeat: int) -> dict[str, object]:
    runs = [replay(nf, trace, workers=workers, params=params).stats for _ in range(repeat)]
    pps = [r["throughput_pps"] for r in runs]
    best = runs[pps.index(statistics.median_high(pps))]
    return {"workers": workers, "pps": statistics.median(pps), "runs_pps": pps,
            "abort_rate": best["abort_rate"], "aborts": best["aborts"], "transactions": best["transactions"],
            "peak_rss_kb": [w["peak_rss_kb"] for w in best["per_worker"]],
            "pss_kb": [w["pss_kb"] for w in best["per_worker"]]}


def peer_point(peer, trace, repeat: int, **params) -> dict[str, object]:
    pps = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        peer.run(trace.frames, trace.devs, trace.times_ns, **params)
        pps.append(len(trace) / (time.perf_counter() - t0))
    return {"pps": statistics.median(pps), "runs_pps": pps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=400_000, help="LAN->WAN packets of the CAIDA-like trace")
    ap.add_argument("--flows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]

    caida = gen_caida(args.packets, args.flows, reverse=0.5, seed=1)
    ddos = gen_antiddos(args.packets, seed=1)
    result: dict[str, object] = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "trace": {"caida_packets": len(caida), "flows": args.flows, "reverse": 0.5,
                  "antiddos_packets": len(ddos)},
        "nfs": {}, "peers": {}, "ratios": {}}
    nfs = {
        "empty": (os.path.join(ROOT, "bench", "nfs", "forward.py"), caida, []),
        "firewall": (os.path.join(EX, "firewall.py"), caida, []),
        "policer": (os.path.join(EX, "policer.py"), caida, []),
        "anti_ddos_0.1ms": (os.path.join(EX, "anti_ddos.py"), ddos, ["staleness=0.1ms"]),
        "anti_ddos_0": (os.path.join(EX, "anti_ddos.py"), ddos, ["staleness=0"]),
    }
    for name, (path, trace, params) in nfs.items():
        points = []
        for w in workers:
            p = nfos_point(path, trace, w, params, args.repeat)
            points.append(p)
            print(f"{name:16s} workers={w}  {p['pps'] / 1e6:6.3f} Mpps  aborts {p['abort_rate']:.2%}", flush=True)
        result["nfs"][name] = points
    for peer_name, kw in (("plain_firewall", {}), ("plain_policer", {})):
        p = peer_point(load_peer(peer_name), caida, args.repeat, **kw)
        result["peers"][peer_name] = p
        print(f"{peer_name:16s}            {p['pps'] / 1e6:6.3f} Mpps", flush=True)

    def pps(nf: str, w: int) -> float:
        return next(p["pps"] for p in result["nfs"][nf] if p["workers"] == w)

    r = result["ratios"]
    if 1 in workers:
        r["firewall_1w_over_plain_python"] = pps("firewall", 1) / result["peers"]["plain_firewall"]["pps"]
        r["policer_1w_over_plain_python"] = pps("policer", 1) / result["peers"]["plain_policer"]["pps"]
    if 1 in workers and 2 in workers:
        for nf in nfs:
            r[f"{nf}_2w_over_1w"] = pps(nf, 2) / pps(nf, 1)
    if 0 in workers and 1 in workers:
        for nf in nfs:
            r[f"{nf}_1w_over_sequential"] = pps(nf, 1) / pps(nf, 0)
    r["targets"] = {"firewall_1w_over_plain_python >= 1.5": r.get("firewall_1w_over_plain_python", 0) >= 1.5,
                    "firewall_2w_over_1w >= 1.8": r.get("firewall_2w_over_1w", 0) >= 1.8,
                    "anti_ddos_0.1ms_1w_over_sequential >= 0.85":
                        r.get("anti_ddos_0.1ms_1w_over_sequential", 0) >= 0.85}
    for k, v in r.items():
        if k != "targets":
            print(f"{k:45s} {v:6.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.splitext(args.out)[0] + ".png")


def plot(result: dict, png: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG", file=sys.stderr)
        return
    nfs = list(result["nfs"])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(p) for p in result["nfs"].values())
    for j, w in enumerate(sorted({p["workers"] for pts in result["nfs"].values() for p in pts})):
        xs, ys = [], []
        for i, nf in enumerate(nfs):
            for p in result["nfs"][nf]:
                if p["workers"] == w:
                    xs.append(i + j * width)
                    ys.append(p["pps"] / 1e6)
        ax.bar(xs, ys, width, label="sequential reference" if w == 0 else f"{w} worker(s)")
    peers = {"firewall": "plain_firewall", "policer": "plain_policer"}
    for i, nf in enumerate(nfs):
        if nf in peers:
            y = result["peers"][peers[nf]]["pps"] / 1e6
            ax.hlines(y, i - 0.1, i + 0.9, colors="k", linestyles="dashed")
            ax.text(i + 0.9, y, " plain Python", va="center", fontsize=7)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(nfs))], nfs)
    ax.set_ylabel("Mpps (saturation)")
    m = result["machine"]
    ax.set_title(f"nfos runtime throughput — {m['cpus']} CPUs, {m['cpu_model']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
