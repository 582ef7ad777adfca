"""The paper's three recipe case studies (§5.4), profiled and measured before and after the recipe.

    python bench/case_studies.py --workers 2 --out bench/results/case-studies-2core.json

Each study: profile with the default semantics -> the profiler names the cause and the
recipe -> change one parameter -> profile and throughput again.  Writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from nfos.io.gen import gen_antiddos, gen_caida
from nfos.io.gen_bridge import gen_bridge
from nfos.runtime.replay import replay

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's bench/
from bench.harness import EXAMPLES, PlotUnavailable, machine, plot_case_studies, write_json  # noqa: E402


def studies(packets: int):
    """(name, NF file, trace, before params, after params, what the trace is sized for)."""
    flows = 20_000
    return [
        ("Anti-DDoS", "anti_ddos.py", gen_antiddos(packets, rate=1e7, seed=1),
         ["staleness=0"], ["staleness=0.1ms"],
         "paper pattern at 10 Mpps of virtual time: a new flow every 5 packets, so every 5th packet "
         "merges the counters"),
        ("NAT", "nat.py", gen_caida(packets, flows, reverse=0.0, seed=1),
         ["public_ips=150", "ports_per_ip=100"], ["public_ips=170", "ports_per_ip=100"],
         f"{flows:,} internal endpoints (about 16,000 TCP) against 15,000 TCP ports (the pools run dry: "
         "workers steal from each other, and some flows find no port) vs 17,000 (over-provisioned by 7%)"),
        ("Bridge", "bridge.py", gen_bridge(packets, macs=max(64, packets // 2000),
                                            flow_packets=min(10_000, max(10, packets // 200)), seed=1),
         ["refresh_interval=0"], ["refresh_interval=1s"],
         "data-centre MAC flows; refresh on every frame (default semantics) vs once a second"),
    ]


def measure(nf: str, trace, workers: int, params: list[str], repeat: int) -> dict:
    path = os.path.join(EXAMPLES, nf)
    prof = replay(path, trace, workers=workers, params=params, profile=True).profile
    pps = [replay(path, trace, workers=workers, params=params).stats["throughput_pps"] for _ in range(repeat)]
    top = prof.causes[0] if prof.causes else None
    stats = replay(path, trace, workers=workers, params=params).stats
    return {"params": params, "pps": statistics.median(pps), "runs_pps": pps, "abort_rate": prof.abort_rate,
            "dropped": stats["dropped"],
            "aborts": prof.aborts, "transactions": prof.transactions,
            "top_cause": None if top is None else {
                "structure": top.structure, "ops": top.ops, "cause": top.cause, "recipe": top.recipe,
                "parameter": top.parameter, "share": top.share},
            "causes": [{"structure": c.structure, "ops": c.ops, "share": c.share} for c in prof.causes[:5]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    doc = {"kind": "case_studies", "machine": machine(), "workers": a.workers, "packets": a.packets,
           "command": f"python bench/case_studies.py --workers {a.workers} --packets {a.packets} "
                      f"--repeat {a.repeat} --out {a.out}", "studies": []}
    for name, nf, trace, before, after, sizing in studies(a.packets):
        b = measure(nf, trace, a.workers, before, a.repeat)
        f = measure(nf, trace, a.workers, after, a.repeat)
        doc["studies"].append({"name": name, "nf": nf, "trace_packets": len(trace), "sizing": sizing,
                               "before": b, "after": f, "speedup": f["pps"] / b["pps"],
                               "abort_rate_drop": b["abort_rate"] / f["abort_rate"] if f["abort_rate"] else None})
        tc = b["top_cause"] or {}
        print(f"{name}: {' '.join(before)} -> {' '.join(after)}")
        print(f"  before: {b['pps'] / 1e6:.3f} Mpps, aborts {b['abort_rate']:.1%}; top cause "
              f"{tc.get('structure')} {tc.get('ops')} ({tc.get('share', 0):.0%}): {tc.get('recipe')}")
        print(f"  after:  {f['pps'] / 1e6:.3f} Mpps, aborts {f['abort_rate']:.1%}  "
              f"(x{f['pps'] / b['pps']:.2f} throughput)")
    write_json(doc, a.out)
    try:
        print("wrote", plot_case_studies(doc, os.path.splitext(a.out)[0] + ".png"))
    except PlotUnavailable as e:
        print("figure skipped:", e)


if __name__ == "__main__":
    main()
