"""The result documents: one JSON per measurement (``kind`` names it) with the machine and
the command in its header, built from the suite's raw data (see docs/benchmarks.md)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from typing import Any

from .configs import PAPER_BATCHING_GAIN


def _header(kind: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, **meta}


LATENCY_METHOD = (
    "paced mode (nfos.runtime.paced): the control process is the generator, queueing the trace's first "
    "50,000 packets (cycling) "
    "into the workers' RX rings (4096 descriptors each) at a fixed rate on the monotonic clock; a full "
    "ring drops the packet (loss); the workers busy-poll without yielding their CPU.  The generator and "
    "each worker are pinned to CPUs of their own; packets due while the generator itself was "
    "descheduled (> 20 us late) are skipped (generator_skipped), not sent in a burst.  Each run starts "
    "with an untimed warm-up at the same rate: one pass over the pool, at most 0.5 s (packet sets, Map "
    "entries and leases created, their pages touched, an NF's start-up work done); its percentiles are "
    "kept as 'warmup'.  A binary search (<= 10 runs of 0.2 s) on "
    "[0, 2 x the saturation throughput] finds the highest rate with < 0.1% loss that the generator "
    "achieved (>= 95% of the rate asked: above its own speed it falls behind; a search stopped by that is "
    "'generator_bound' and its rate a lower bound); then one run each at "
    "50% and 90% of it gives the latency from queueing into the RX ring to the commit of the packet's "
    "transaction (a histogram kept by the workers, 16 log-linear buckets per power of two: a percentile "
    "is its bucket's lower bound, within 6%; the CDF keeps a point per 0.5% step).  The generator needs a "
    "CPU of its own: workers + 1 <= CPUs.")


def latency_doc(meta: dict[str, Any], data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The paced-mode document: per NF the points measured (or why not)."""
    cpus = meta["machine"]["cpus"] or 1
    nfs = {name: {"file": d["file"], "params": d["params"], "points": d.get("latency", [])}
           for name, d in data.items()}
    pts = [p for row in nfs.values() for p in row["points"]]
    measured = [p for p in pts if p["status"] == "measured"]
    status = "measured" if measured and len(measured) == len(pts) else "partial" if measured else "not_measured"
    reasons = sorted({p["reason"] for p in pts if p.get("reason")})
    if not pts:
        reasons = [f"not measured: no spare core for the generator ({cpus} CPUs)"
                   if cpus < 2 else "not measured: no NF was run in paced mode"]
    return _header("latency", meta) | {
        "status": status, "reason": "; ".join(reasons) or None, "method": LATENCY_METHOD,
        "loss_target": 0.001, "nfs": nfs}


def _geomean(xs: Iterable[float]) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def build(kind: str, data: dict[str, dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """One measurement's JSON document from the suite's raw data."""
    if kind == "throughput":
        nfs = {}
        for name, d in data.items():
            row = {k: d[k] for k in ("file", "params", "trace", "trace_packets", "points")}
            if d.get("peer"):
                row["peer"] = d["peer"]
            if d.get("mp_peer"):
                row["mp_peer"] = d["mp_peer"]
            nfs[name] = row
        return _header("throughput_vs_workers", meta) | {"nfs": nfs}
    if kind == "batching":
        nfs = {}
        for name, d in data.items():
            by_w = {p["workers"]: p for p in d["points"]}
            pts = []
            for b in d["batch1"]:
                p32 = by_w.get(b["workers"])
                if p32:
                    pts.append({"workers": b["workers"], "pps_batch1": b["pps"], "pps_batch32": p32["pps"],
                                "speedup": p32["pps"] / b["pps"] if b["pps"] else None,
                                "runs_pps_batch1": b["runs_pps"], "runs_pps_batch32": p32["runs_pps"],
                                "abort_rate_batch1": b["abort_rate"], "abort_rate_batch32": p32["abort_rate"],
                                "transactions_batch1": b["transactions"], "transactions_batch32": p32["transactions"],
                                "oversubscribed": b["oversubscribed"]})
            nfs[name] = {"file": d["file"], "params": d["params"], "points": pts}
        by_w: dict[int, list[float]] = {}
        for row in nfs.values():
            for p in row["points"]:
                by_w.setdefault(p["workers"], []).append(p["speedup"])
        return _header("batching", meta) | {
            "paper_gain": PAPER_BATCHING_GAIN,
            "geomean_speedup": {str(w): _geomean(v) for w, v in sorted(by_w.items())},
            "note": "speedup = throughput with batches of 32 packets per transaction / with 1; "
                    "the same trace and worker count, the median of 'repeat' runs each", "nfs": nfs}
    if kind == "stm_overhead":
        nfs = {}
        for name, d in data.items():
            by_w = {p["workers"]: p for p in d["points"]}
            seq, one = by_w.get(0), by_w.get(1)
            if not (seq and one):
                continue
            nfs[name] = {"file": d["file"], "params": d["params"], "pps_seq": seq["pps"], "pps_1w": one["pps"],
                         "ratio_1w_over_seq": one["pps"] / seq["pps"] if seq["pps"] else None,
                         "overhead_share": 1 - one["pps"] / seq["pps"] if seq["pps"] else None,
                         "abort_rate_1w": one["abort_rate"],
                         "stm_time_share_1w": one.get("stm_share"), "stm_time_share_seq": seq.get("stm_share"),
                         "transactions_per_packet_1w": one["transactions"] / d["trace_packets"]
                         if d["trace_packets"] else None,
                         "runs_pps_seq": seq["runs_pps"], "runs_pps_1w": one["runs_pps"]}
        return _header("stm_overhead", meta) | {
            "geomean_ratio_1w_over_seq": _geomean(r["ratio_1w_over_seq"] for r in nfs.values()),
            "stm_time_share_1w": {n: r["stm_time_share_1w"] for n, r in nfs.items()},
            "stm_time_share_note": "share of transaction time spent inside the STM (begin, opens, undo saves, "
                                   "commit or abort), from the runtime's own clocks on 1 transaction in 64; "
                                   "1 worker / sequential is the whole price of the parallel mode "
                                   "(transactions, RX ring, a process of its own)",
            "nfs": nfs}
    if kind == "latency":
        return latency_doc(meta, data)
    if kind == "memory":
        nfs = {}
        for name, d in data.items():
            row = {"file": d["file"], "params": d["params"], "points": d["memory"]}
            if d.get("mp_peer"):
                row["mp_peer"] = {"peer": d["mp_peer"]["peer"], "points": [
                    {"workers": q["workers"], "total_pss_kb": sum(q["pss_kb"]) if all(q["pss_kb"]) else None, "pss_kb": q["pss_kb"],
                     "peak_rss_kb": q["peak_rss_kb"]} for q in d["mp_peer"]["points"]]}
            nfs[name] = row
        return _header("memory", meta) | {
            "note": "sampled from /proc every 10 ms during one run per point (not the timed runs): "
                    "total_pss_kb = the largest sum of the PSS of the control process and all workers "
                    "(shared pages counted once); baseline_pss_kb = the control process before the run "
                    "(interpreter, harness and the trace in Python lists, which the forked workers share); "
                    "added_pss_kb = total - baseline; worker_peak_rss_kb = VmHWM of each worker (its RSS "
                    "counts the shared arena and inherited pages in full). The mp peers' PSS is each "
                    "process's at its own end, summed (the parent not counted): processes that end "
                    "later share the inherited pages with fewer others, so the sum overcounts them "
                    "(an upper bound).", "nfs": nfs}
    if kind == "peers":
        nfs = {}
        for name, d in data.items():
            if not d.get("peer") and not d.get("mp_peer"):
                continue
            mp = {q["workers"]: q for q in (d.get("mp_peer") or {}).get("points", [])}
            nfs[name] = {
                "plain": d.get("peer"), "mp": d.get("mp_peer"),
                "nfos": [{"workers": p["workers"], "pps": p["pps"], "vs_plain": p["vs_peer"],
                          "vs_mp": p["vs_mp_peer"], "mp_pps": mp[p["workers"]]["pps"] if p["workers"] in mp else None,
                          "oversubscribed": p["oversubscribed"]} for p in d["points"]]}
        return _header("peers", meta) | {
            "note": "vs_plain = nfos / the plain sequential Python peer (one process); vs_mp = nfos / the "
                    "hand-parallelised multiprocessing peer at the same number of workers (processes)",
            "nfs": nfs}
    raise ValueError(kind)


def write_json(doc: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)


def write_results(docs: dict[str, dict[str, Any]], out_dir: str) -> list[str]:
    """DIR/<measure>.json for each document; returns the paths."""
    paths = []
    for kind, doc in docs.items():
        path = os.path.join(out_dir, f"{kind}.json")
        write_json(doc, path)
        paths.append(path)
    return paths
