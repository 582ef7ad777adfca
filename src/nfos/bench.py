"""The evaluation harness behind `nfos bench` and the scripts in bench/.

Every measurement runs on the machine at hand and writes JSON (with the
machine described) that the plotting functions turn into PNG figures, so
every figure is reproducible from committed JSON.  Throughput is saturation
throughput: the trace is steered into the workers' RX rings before they
start, and the time is the workers' own, from the first packet to the last.
Ratios are measured in one run on one machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nfos.io.capture import Trace

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")
PEERS = os.path.join(REPO, "bench", "peers")


@dataclass
class BenchNF:
    """One benchmarked configuration: an example NF, its trace, parameters and plain-Python peer."""

    name: str
    file: str
    trace: str                 # key of TRACES
    params: list[str] = field(default_factory=list)
    peer: str | None = None    # module in bench/peers with run(frames, devs, times_ns, **kw)
    peer_params: dict[str, Any] = field(default_factory=dict)


def _caida(n: int) -> Trace:
    from nfos.io.gen import gen_caida
    return gen_caida(n, max(1, n // 21), reverse=0.5, seed=1)


def _nat_trace(n: int) -> Trace:
    from nfos.io.gen import gen_caida
    return gen_caida(n, max(1, n // 21), reverse=0.0, seed=1)


def _antiddos(n: int) -> Trace:
    from nfos.io.gen import gen_antiddos
    return gen_antiddos(n, rate=1e7, seed=1)


def _bridge(n: int) -> Trace:
    from nfos.io.gen_bridge import gen_bridge
    # many MAC flows, so that RSS can balance them (the paper's 10,000-packet flows)
    return gen_bridge(n, macs=max(64, n // 2000), flow_packets=min(10_000, max(10, n // 200)), seed=1)


def _lb(n: int) -> Trace:
    from nfos.io.gen_lb import gen_lb
    return gen_lb(n, max(1, n // 21), backends=3, seed=1)


TRACES: dict[str, Callable[[int], Trace]] = {
    "caida": _caida, "nat": _nat_trace, "antiddos": _antiddos, "bridge": _bridge, "lb": _lb}

NFS: dict[str, BenchNF] = {n.name: n for n in [
    BenchNF("firewall", "firewall.py", "caida", peer="plain_firewall"),
    BenchNF("policer", "policer.py", "caida", peer="plain_policer"),
    BenchNF("nat", "nat.py", "nat", ["public_ips=57"], peer="plain_nat"),
    BenchNF("bridge", "bridge.py", "bridge", ["refresh_interval=60s"], peer="plain_bridge"),
    BenchNF("bridge_refresh0", "bridge.py", "bridge", ["refresh_interval=0"], peer="plain_bridge",
            peer_params={"refresh_interval": 0}),
    BenchNF("maglev", "maglev.py", "lb", peer="plain_maglev"),
    BenchNF("anti_ddos_0.1ms", "anti_ddos.py", "antiddos", ["staleness=0.1ms"]),
    BenchNF("anti_ddos_0", "anti_ddos.py", "antiddos", ["staleness=0"]),
    BenchNF("dummy_ro", "dummy.py", "caida", ["mode=ro"]),
    BenchNF("dummy_rw", "dummy.py", "caida", ["mode=rw"]),
    BenchNF("dummy_rw_zipf", "dummy.py", "caida", ["mode=rw", "skew=0.99"]),
]}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
            "python": platform.python_version(), "machine": platform.machine()}


def load_peer(name: str):
    spec = importlib.util.spec_from_file_location(f"peer_{name}", os.path.join(PEERS, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def throughput(nf: BenchNF, trace: Trace, workers: int, repeat: int = 1, batch: int = 32) -> dict[str, Any]:
    """Saturation throughput of one NF at one worker count: the median of `repeat` runs."""
    from nfos.runtime.replay import replay

    runs = [replay(os.path.join(EXAMPLES, nf.file), trace, workers=workers, params=nf.params, batch=batch).stats
            for _ in range(repeat)]
    pps = [r["throughput_pps"] for r in runs]
    mid = runs[pps.index(statistics.median_high(pps))]
    return {"workers": workers, "batch": batch, "pps": statistics.median(pps), "runs_pps": pps,
            "abort_rate": mid["abort_rate"], "aborts": mid["aborts"], "transactions": mid["transactions"],
            "imbalance": mid["imbalance"], "irrevocable": mid["irrevocable"],
            "pss_kb": [w["pss_kb"] for w in mid["per_worker"]],
            "peak_rss_kb": [w["peak_rss_kb"] for w in mid["per_worker"]]}


def peer_throughput(nf: BenchNF, trace: Trace, repeat: int = 1) -> dict[str, Any] | None:
    if not nf.peer:
        return None
    peer = load_peer(nf.peer)
    pps = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        peer.run(trace.frames, trace.devs, trace.times_ns, **nf.peer_params)
        pps.append(len(trace) / (time.perf_counter() - t0))
    return {"peer": nf.peer, "pps": statistics.median(pps), "runs_pps": pps}


def sweep(names: list[str], workers: list[int], packets: int, repeat: int = 1,
          progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Throughput vs workers for each NF, with the sequential mode and the plain peer."""
    result: dict[str, Any] = {"kind": "throughput_vs_workers", "machine": machine(),
                              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "packets": packets,
                              "workers": workers, "nfs": {}}
    cpus = os.cpu_count() or 1
    traces: dict[str, Trace] = {}
    for name in names:
        nf = NFS[name]
        if nf.trace not in traces:
            traces[nf.trace] = TRACES[nf.trace](packets)
        trace = traces[nf.trace]
        row: dict[str, Any] = {"file": nf.file, "params": nf.params, "trace_packets": len(trace), "points": []}
        for w in sorted(set([0] + workers)):
            p = throughput(nf, trace, w, repeat)
            p["oversubscribed"] = w + 1 > cpus   # + the control process
            row["points"].append(p)
            progress(f"{name:18s} workers={w:2d}  {p['pps'] / 1e6:7.3f} Mpps  aborts {p['abort_rate']:6.2%}"
                     f"{'  (more processes than CPUs)' if p['oversubscribed'] else ''}")
        peer = peer_throughput(nf, trace, repeat)
        if peer:
            row["peer"] = peer
            progress(f"{name:18s} plain Python peer  {peer['pps'] / 1e6:7.3f} Mpps")
        one = next((p["pps"] for p in row["points"] if p["workers"] == 1), None)
        for p in row["points"]:
            p["speedup_vs_1"] = p["pps"] / one if one else None
            p["vs_peer"] = p["pps"] / peer["pps"] if peer else None
        result["nfs"][name] = row
    return result


def write_json(doc: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)


def plot_scaling(doc: dict[str, Any], png: str) -> str:
    """Throughput vs workers, one panel per NF: ideal-linear line and the plain-Python peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["nfs"])
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        row = doc["nfs"][name]
        pts = [p for p in row["points"] if p["workers"] >= 1]
        xs = [p["workers"] for p in pts]
        ys = [p["pps"] / 1e6 for p in pts]
        ax.plot(xs, ys, "o-", label="nfos")
        if pts:
            base = pts[0]["pps"] / 1e6 / pts[0]["workers"]
            ax.plot(xs, [base * x for x in xs], ":", color="gray", label="ideal linear")
        seq = next((p["pps"] / 1e6 for p in row["points"] if p["workers"] == 0), None)
        if seq:
            ax.axhline(seq, color="green", linestyle="-.", linewidth=1, label="sequential mode")
        if row.get("peer"):
            ax.axhline(row["peer"]["pps"] / 1e6, color="black", linestyle="--", linewidth=1, label="plain Python")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("workers")
        ax.set_ylabel("Mpps")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    m = doc["machine"]
    fig.suptitle(f"nfos throughput vs workers — {m['cpus']} CPUs, {m['cpu_model']}, Python {m['python']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
