"""The measurements: saturation throughput (nfos at 0..N workers, batch 1 or 32, and the
peers), paced-mode latency, and the suite that runs them all, each configuration once per
round, printing a table as it goes."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nfos.io.capture import Trace
from nfos.runtime.session import MAX_DRIFT_NS

from .configs import (
    BARRIER_PERIODS,
    BARRIER_RATE,
    EXAMPLES,
    EXTRA_MEASURES,
    FLOW_TAIL,
    MEASURES,
    NFS,
    NFS_DIR,
    PACED_POOL,
    TRACES,
    BenchNF,
    load_peer,
    machine,
    oversubscribed,
)
from .memory import memory
from .results import build

# ------------------------------------------------------------------ single measurements

def _nfos_run(nf: BenchNF, trace: Trace, workers: int, batch: int = 32, laps: int = 1,
              cpus: list[int] | None = None, rebalance_ns: int = 0) -> dict[str, Any]:
    """One replay's stats, with ``slots``: each worker's packets, wall and CPU time while
    processing, minor page faults and preemptions (the runtime's internal counters)."""
    from nfos.runtime.replay import replay

    r = replay(os.path.join(EXAMPLES, nf.file), trace, workers=workers, params=nf.params, batch=batch, laps=laps,
               cpus=cpus if workers else None, rebalance_ns=rebalance_ns if workers > 1 else 0)
    return r.stats | {"laps": laps, "migrated": sum(m for m, _ in r.migrated), "slots": [
        {"packets": c["packets_in"], "busy_s": c["busy_ns"] / 1e9, "cpu_s": c["cpu_ns"] / 1e9,
         "minor_faults": c["minor_faults"], "preempted": c["preempted"]} for c in r.slots]}


def _spread(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def _nfos_point(runs: list[dict[str, Any]], workers: int, batch: int, packets: int) -> dict[str, Any]:
    """The median of runs (the counters are the median run's), the spread over runs, and where
    the workers' time went (CPU time per packet, page faults, preemptions)."""
    pps = [r["throughput_pps"] for r in runs]
    mid = runs[pps.index(statistics.median_high(pps))]
    processes = 1 if workers == 0 else workers + 1
    laps = mid.get("laps", 1)
    slots = mid.get("slots") or []
    cpu = sum(w["cpu_s"] for w in slots)
    cpu_ns = [1e9 * sum(w["cpu_s"] for w in r["slots"]) / r["packets_in"] for r in runs
              if r.get("slots") and r["packets_in"]]
    return {"workers": workers, "batch": batch, "pps": statistics.median(pps), "runs_pps": pps,
            "pps_spread": _spread(pps), "laps": laps, "packets": packets * laps,
            "abort_rate": mid["abort_rate"], "stm_share": mid.get("stm_share_of_transaction_time"), "aborts": mid["aborts"], "transactions": mid["transactions"],
            "imbalance": mid["imbalance"], "irrevocable": mid["irrevocable"], "packets_in": mid["packets_in"],
            "loss": max(0.0, 1 - mid["packets_in"] / (packets * laps)) if packets else 0.0,
            "wall_s": mid["wall_s"],
            "seconds_per_worker": statistics.mean(w["busy_s"] for w in slots) if slots else None,
            "cpu_ns_per_packet": statistics.median(cpu_ns) if cpu_ns else None,
            "cpu_ns_per_packet_runs": cpu_ns,
            "cpu_share_of_busy": cpu / sum(w["busy_s"] for w in slots) if slots and sum(w["busy_s"] for w in slots) else None,
            "minor_faults": sum(w["minor_faults"] for w in slots), "preempted": sum(w["preempted"] for w in slots),
            "migrated_sets": mid.get("migrated", 0),
            "per_worker": slots,
            "processes": processes, "oversubscribed": oversubscribed(processes)}


def laps_for(seconds: float, rate_pps: float | None, workers: int, packets: int) -> int:
    """Laps of a ``packets``-packet trace that give each of ``workers`` workers at least
    ``seconds`` of work at ``rate_pps`` per worker (the 1-worker rate), with 10% to spare."""
    if seconds <= 0 or not rate_pps or not packets:
        return 1
    return max(1, math.ceil(1.1 * seconds * rate_pps * max(1, workers) / packets))


def default_cpus() -> list[int] | None:
    """The CPUs this process may run on (workers are pinned one per CPU, round robin)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def throughput(nf: BenchNF, trace: Trace, workers: int, repeat: int = 1, batch: int = 32, laps: int = 1,
               cpus: list[int] | None = None) -> dict[str, Any]:
    """Saturation throughput of one NF at one worker count: the median of `repeat` runs."""
    return _nfos_point([_nfos_run(nf, trace, workers, batch, laps, cpus) for _ in range(repeat)], workers, batch,
                       len(trace))


#: the drift horizon off (for the "unbounded" reference point): more virtual time than any trace spans
UNBOUNDED_DRIFT_NS = 1 << 62


def _barrier_run(period: str, trace: Trace, workers: int) -> dict[str, Any]:
    """The firewall (``period`` "none"), or the firewall with a periodic handler every ``period``;
    "unbounded": the firewall with the drift horizon off (what the horizon itself costs)."""
    from nfos.runtime.replay import replay

    if period in ("none", "unbounded"):
        drift = UNBOUNDED_DRIFT_NS if period == "unbounded" else MAX_DRIFT_NS
        return replay(os.path.join(EXAMPLES, "firewall.py"), trace, workers=workers, max_drift_ns=drift).stats
    return replay(os.path.join(NFS_DIR, "firewall_periodic.py"), trace, workers=workers,
                  params=[f"period={period}"]).stats


def barrier(workers: Sequence[int], packets: int, repeat: int, table: Any = None) -> dict[str, Any]:
    """What periodic handlers cost with virtual time: the firewall's saturation throughput with no
    periodic handler, one every 1 s and one every 1 ms (each due time is a barrier of all workers),
    at 0 (sequential: no barrier, the handler runs in the loop) and each worker count; the median of
    ``repeat`` runs, interleaved.  ``barriers``: the due times the trace spans."""
    from nfos.io.gen import gen_caida

    period_ns = {"1s": 1_000_000_000, "1ms": 1_000_000}
    trace = gen_caida(packets, max(1, packets // 21), reverse=0.5, rate=BARRIER_RATE, seed=1)
    span = trace.times_ns[-1] - trace.times_ns[0] if len(trace) else 0
    ws = sorted({0, *workers})
    warm = gen_caida(min(packets, 3000), max(1, min(packets, 3000) // 21), reverse=0.5, rate=BARRIER_RATE, seed=2)
    for w in ws:   # untimed: first forks and arena set-up
        _barrier_run("1ms", warm, w)
    periods = ("unbounded", *BARRIER_PERIODS)
    configs = [(w, period) for w in ws for period in periods if w or period != "unbounded"]
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {c: [] for c in configs}
    for _ in range(repeat):
        for w, period in configs:
            runs[w, period].append(_barrier_run(period, trace, w))
    points = []
    for w in ws:
        none = _nfos_point(runs[w, "none"], w, 32, len(trace))["pps"]
        for period in periods:
            if (w, period) not in runs:
                continue
            p = _nfos_point(runs[w, period], w, 32, len(trace))
            barriers = span // period_ns[period] if period in period_ns else 0
            point = {"workers": w, "period": period, "barriers": barriers, "pps": p["pps"], "runs_pps": p["runs_pps"],
                     "ratio_vs_none": p["pps"] / none if none else None,
                     # (a few barriers cost less than the noise of a run: no figure then)
                     "cost_per_barrier_us": ((len(trace) / p["pps"] - len(trace) / none) / barriers * 1e6
                                             if barriers >= 100 and p["pps"] and none else None),
                     "abort_rate": p["abort_rate"], "processes": p["processes"], "oversubscribed": p["oversubscribed"]}
            points.append(point)
            if table is not None:
                table.add("firewall", f"{'seq' if w == 0 else w} +{period}", f"{p['pps'] / 1e6:.3f}", "", "",
                          f"{p['abort_rate']:.2%}", "", "", "",
                          (f"{point['ratio_vs_none']:.2f} of none" + (f", {barriers} barriers" if barriers else "")
                           + (", no drift horizon" if period == "unbounded" else "")
                           + (" * oversubscribed" if p["oversubscribed"] else "")) if period != "none" else "")
    return {"trace": "caida", "trace_packets": len(trace), "trace_rate_pps": BARRIER_RATE, "virtual_s": span / 1e9,
            "nf": "examples/firewall.py; bench/nfs/firewall_periodic.py --param period=P", "points": points}


def _peer_run(nf: BenchNF, trace: Trace) -> float:
    peer = load_peer(nf.peer)
    t0 = time.perf_counter()
    peer.run(trace.frames, trace.devs, trace.times_ns, **nf.peer_params)
    return len(trace) / (time.perf_counter() - t0)


def peer_throughput(nf: BenchNF, trace: Trace, repeat: int = 1) -> dict[str, Any] | None:
    """The plain sequential peer: one process, the time of its run() call."""
    if not nf.peer:
        return None
    pps = [_peer_run(nf, trace) for _ in range(repeat)]
    return {"peer": nf.peer, "pps": statistics.median(pps), "runs_pps": pps}


def _mp_run(nf: BenchNF, trace: Trace, workers: int) -> tuple[float, list[dict[str, int]]]:
    peer = load_peer(nf.mp_peer)
    counters: dict[str, Any] = {}
    _, seconds = peer.run(trace.frames, trace.devs, trace.times_ns, workers=workers, keep_output=False,
                          counters=counters, **nf.peer_params)
    return (len(trace) / seconds if seconds > 0 else 0.0), counters.get("per_process", [])


def _mp_point(runs: list[tuple[float, list[dict[str, int]]]], workers: int) -> dict[str, Any]:
    pps = [r[0] for r in runs]
    mid = runs[pps.index(statistics.median_high(pps))][1]
    processes = workers + 1   # + the parent, which waits
    return {"workers": workers, "pps": statistics.median(pps), "runs_pps": pps, "processes": processes,
            "oversubscribed": oversubscribed(processes),
            "pss_kb": [m["pss_kb"] for m in mid], "peak_rss_kb": [m["peak_rss_kb"] for m in mid],
            "packets_per_process": [m["packets"] for m in mid]}


def mp_peer_throughput(nf: BenchNF, trace: Trace, workers: int, repeat: int = 1) -> dict[str, Any] | None:
    """The hand-parallelised peer at ``workers`` processes: the time of its processing phase."""
    if not nf.mp_peer:
        return None
    return _mp_point([_mp_run(nf, trace, workers) for _ in range(repeat)], workers)


def paced_latency(nf: BenchNF, trace: Trace, workers: int, rate: float, duration: float) -> dict[str, Any]:
    """One paced run (nfos.runtime.paced.paced_run) with the latency CDF for the figure."""
    from nfos.runtime import paced

    r = paced.paced_run(os.path.join(EXAMPLES, nf.file), trace, workers, rate, duration, nf.params)
    hist = r.pop("hist")
    total, acc, cdf = sum(hist), 0, []
    for b, c in enumerate(hist):
        if c:
            acc += c
            cdf.append([paced.bucket_low(b), acc / total])
    r["cdf_ns"] = compact_cdf(cdf)
    return r


def compact_cdf(cdf: list[list[float]], step: float = 0.005) -> list[list[float]]:
    """The CDF's points where it has risen by ``step`` since the last point kept (and the first
    and last): at most ~1/step points, rounded, so the JSON stays small."""
    out: list[list[float]] = []
    for i, (x, y) in enumerate(cdf):
        if not out or y - out[-1][1] >= step or i == len(cdf) - 1:
            out.append([x, round(y, 5)])
    return out


def latency(nf: BenchNF, trace: Trace, workers: int, hi: float, steps: int = 10, duration: float = 0.2,
            latency_duration: float = 2.0) -> dict[str, Any]:
    """Paced mode: the highest rate with < 0.1% loss (binary search on [0, hi], ``steps`` runs of
    ``duration`` s), then latency percentiles at 50% and 90% of it, each timed for
    ``latency_duration`` s (seconds: p99.9 of a few hundred thousand packets, not of the few
    hundred a short stall decides); without a spare core, why not.

    The generator is one process: above its own speed it falls behind the schedule (it then
    queues back to back, later than due), so a rate counts only if the generator achieved 95%
    of it; a search that hits that wall without loss reports the generator's rate as a lower
    bound (``generator_bound``)."""
    from nfos.runtime import paced

    cpus = os.cpu_count() or 1
    out: dict[str, Any] = {"workers": workers, "processes": workers + 1}
    if not paced.spare_core(workers):
        return out | {"status": "not_measured",
                      "reason": f"not measured: no spare core for the generator ({cpus} CPUs)"}
    if len(trace) > PACED_POOL:   # the generator cycles its pool: a prefix is enough, and loads faster
        trace = Trace(trace.dev_names, trace.frames[:PACED_POOL], trace.times_ns[:PACED_POOL],
                      trace.devs[:PACED_POOL], [])
    out["pool_packets"] = len(trace)
    top, lo, best, bound, tries = hi, 0.0, None, False, []
    for _ in range(steps):
        mid = (lo + hi) / 2
        r = paced_latency(nf, trace, workers, mid, duration)
        kept = r["achieved_rate_pps"] >= 0.95 * mid
        tries.append({"rate_pps": mid, "achieved_rate_pps": r["achieved_rate_pps"], "loss": r["loss"]})
        if r["loss"] >= paced.LOSS_TARGET:
            hi = mid
        elif kept:
            lo, best = mid, tries[-1]
        else:   # no loss, but the generator could not offer this rate: it is the limit
            best, bound = tries[-1] | {"rate_pps": r["achieved_rate_pps"]}, True
            break
    out |= {"status": "measured", "search_hi_pps": top, "max_rate_pps": best and best["rate_pps"],
            "loss_at_max_rate": best and best["loss"], "generator_bound": bound, "tries": tries,
            "all_cpus_busy": workers + 1 >= cpus}
    if not best:
        return out | {"status": "no_rate", "reason": f"every rate tried lost >= {paced.LOSS_TARGET:.1%}"}
    for frac in (0.5, 0.9):
        out[f"at_{int(frac * 100)}pct"] = paced_latency(nf, trace, workers, frac * best["rate_pps"],
                                                         latency_duration)
    return out


class _Table:
    """The rich table printed while the suite runs (live in a terminal, else line by line)."""

    COLUMNS = ("NF", "workers", "Mpps", "x 1w", "eff.", "aborts", "loss", "vs plain", "vs mp", "")

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.rows: list[tuple[str, ...]] = []
        self.live = None
        if quiet:
            return
        from rich.console import Console

        self.console = Console()
        if not self.console.is_terminal:   # a log: wide enough for the table's rows
            self.console = Console(width=max(self.console.width, 132))
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self.render(), console=self.console, refresh_per_second=4)
            self.live.start()

    def render(self):
        from rich.table import Table

        t = Table(title="nfos bench: saturation throughput", show_lines=False)
        for c in self.COLUMNS:
            t.add_column(c, justify="left" if c in ("NF", "") else "right")
        for r in self.rows:
            t.add_row(*r)
        return t

    def add(self, *cells: str) -> None:
        self.rows.append(cells)
        if self.quiet:
            return
        if self.live is not None:
            self.live.update(self.render())
        else:
            nf, run, mpps, *rest = cells
            labels = ("x1w", "eff", "aborts", "loss", "vs plain", "vs mp", "")
            more = "  ".join(f"{lab} {c}".strip() for lab, c in zip(labels, rest, strict=True) if c)
            run = run if not run.isdigit() else f"{run} worker{'s' if run != '1' else ''}"
            self.console.print(f"{nf:16s} {run:>12s} {mpps:>8s} Mpps  {more}", highlight=False)

    def note(self, text: str) -> None:
        if not self.quiet:
            (self.live.console if self.live else self.console).print(text, highlight=False)

    def close(self) -> None:
        if self.quiet:
            return
        if self.live is not None:
            self.live.stop()
        else:
            self.console.print(self.render())


def _f(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def suite(names: Sequence[str], workers: Sequence[int], packets: int, repeat: int = 1,
          measures: Iterable[str] = MEASURES, command: str = "", quiet: bool = False,
          quick: bool = False, seconds: float = 0.0, pin: list[int] | None = None,
          rebalance_ns: int = 0) -> dict[str, dict[str, Any]]:
    """Run the requested measurements; returns {measure: JSON document}.  ``quick``: shorter
    paced-mode runs (3 search steps of 30 ms), for the smoke test.  ``seconds``: every
    saturation point gives each worker at least that much work (the trace replayed in laps,
    from a 1-worker calibration run per NF).  ``pin``: worker i is pinned to pin[i % len(pin)].
    ``rebalance_ns``: RSS++ rebalancing of every run with 2 workers or more (that epoch)."""
    known = MEASURES + EXTRA_MEASURES
    bad = set(measures) - set(known)
    if bad:
        raise ValueError(f"unknown measurement {', '.join(bad)} (known: {', '.join(known)})")
    measures = [m for m in known if m in set(measures)]
    workers = sorted(set(workers))
    m = machine()
    cpus = m["cpus"] or 1
    meta = {"machine": m, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command, "packets": packets,
            "repeat": repeat, "workers": list(workers), "seconds_per_worker": seconds, "pinned_cpus": pin,
            "rebalance_epoch_ns": rebalance_ns, "flow_tail_alpha": FLOW_TAIL["alpha"],
            "oversubscription": {
                "cpus": cpus, "max_processes": max(workers) + 1,
                "oversubscribed": oversubscribed(max(workers) + 1, cpus),
                "note": "a run of N workers has N + 1 processes (the control process polls the rings and "
                        "sleeps 5 ms between polls); a point with more processes than CPUs is marked "
                        "'oversubscribed': its workers share CPUs, so it measures time-slicing, not scaling"}}
    want = set(measures)
    nfos_ws: set[int] = set()
    if want & {"throughput", "peers", "batching"}:
        nfos_ws |= set(workers)
    if want & {"throughput", "stm_overhead"}:
        nfos_ws |= {0, 1}
    batch_ws = sorted({workers[0], workers[-1]}) if "batching" in want else []
    mem_ws = sorted({0, 1, workers[-1]}) if "memory" in want else []
    lat_ws = sorted({workers[0], workers[-1]}) if "latency" in want else []
    nfos_ws |= set(lat_ws)   # the saturation throughput bounds the paced search
    paced = {"steps": 3, "duration": 0.03, "latency_duration": 0.05} if quick else {}
    peers_wanted = bool(want & {"throughput", "peers"})

    measuring = bool(nfos_ws or batch_ws or mem_ws or peers_wanted or lat_ws)
    table = _Table(quiet or not (measuring or "barrier" in want))
    if oversubscribed(max(workers) + 1, cpus):
        table.note(f"[{cpus} CPUs] runs with more processes than CPUs are marked 'oversubscribed' (*)")
    data: dict[str, dict[str, Any]] = {}
    traces: dict[str, Trace] = {}
    if measuring and names:   # untimed: the process's first forks and arena set-up are not a point
        warm = TRACES[NFS[names[0]].trace](min(packets, 5000))
        for w in sorted(nfos_ws | set(mem_ws)):
            _nfos_run(NFS[names[0]], warm, w)
    try:
        for name in names if measuring else []:
            nf = NFS[name]
            if nf.trace not in traces:
                traces[nf.trace] = TRACES[nf.trace](packets)
            trace = traces[nf.trace]
            d: dict[str, Any] = {"file": nf.file, "params": nf.params, "trace": nf.trace,
                                 "trace_packets": len(trace), "points": [], "batch1": [], "memory": []}
            rate1 = None
            if seconds > 0:   # calibration (untimed): the 1-worker rate sets every point's laps
                rate1 = _nfos_run(nf, trace, 1, 32, 1, pin)["throughput_pps"]
                d["calibration_pps_1w"] = rate1
            laps = {w: laps_for(seconds, rate1, w, len(trace)) for w in sorted(nfos_ws | set(batch_ws))}
            # every configuration once per round, `repeat` rounds: a burst of noise from the
            # machine's neighbours hits one run of several configurations, not all runs of one
            configs: list[tuple[tuple, Callable[..., Any], tuple]] = [
                (("nfos", w, 32), _nfos_run, (w, 32, laps[w], pin, rebalance_ns)) for w in sorted(nfos_ws)]
            configs += [(("nfos", w, 1), _nfos_run, (w, 1, laps[w], pin, rebalance_ns)) for w in batch_ws]
            if peers_wanted and nf.peer:
                configs.append((("plain",), _peer_run, ()))
            if peers_wanted and nf.mp_peer:
                configs += [(("mp", w), _mp_run, (w,)) for w in workers]
            runs: dict[tuple, list[Any]] = {k: [] for k, _, _ in configs}
            for _ in range(repeat):
                for k, fn, args in configs:
                    runs[k].append(fn(nf, trace, *args))
            d["points"] = [_nfos_point(runs["nfos", w, 32], w, 32, len(trace)) for w in sorted(nfos_ws)]
            d["batch1"] = [_nfos_point(runs["nfos", w, 1], w, 1, len(trace)) for w in batch_ws]
            if ("plain",) in runs:
                d["peer"] = {"peer": nf.peer, "pps": statistics.median(runs["plain",]), "runs_pps": runs["plain",]}
            if peers_wanted and nf.mp_peer:
                d["mp_peer"] = {"peer": nf.mp_peer, "points": [_mp_point(runs["mp", w], w) for w in workers]}
            for w in mem_ws:
                d["memory"].append(memory(nf, trace, w))
            sat = {p["workers"]: p["pps"] for p in d["points"]}
            d["latency"] = [latency(nf, trace, w, hi=2 * sat[w], **paced) for w in lat_ws]
            _derive(d)
            data[name] = d
            for p in d["points"]:
                table.add(name, "seq" if p["workers"] == 0 else str(p["workers"]), f"{p['pps'] / 1e6:.3f}",
                          _f(p["speedup_vs_1"], ".2f"), _f(p["efficiency"], ".0%"), f"{p['abort_rate']:.2%}",
                          f"{p['loss']:.2%}", _f(p["vs_peer"], ".2f"), _f(p["vs_mp_peer"], ".2f"),
                          "* oversubscribed" if p["oversubscribed"] else "")
            if d.get("peer"):
                table.add(name, "plain peer", f"{d['peer']['pps'] / 1e6:.3f}", *[""] * 7)
            for q in (d.get("mp_peer") or {}).get("points", []):
                table.add(name, f"mp peer {q['workers']}", f"{q['pps'] / 1e6:.3f}",
                          _f(q.get("speedup_vs_1"), ".2f"), _f(q.get("efficiency"), ".0%"), "", "", "", "",
                          "* oversubscribed" if q["oversubscribed"] else "")
            for q in d["latency"]:
                if q["status"] != "measured":
                    table.add(name, f"paced {q['workers']}", "", *[""] * 6, q["reason"])
                    continue
                lat = q["at_90pct"]["latency_us"]
                table.add(name, f"paced {q['workers']}", f"{q['max_rate_pps'] / 1e6:.3f}", "", "", "",
                          f"{q['loss_at_max_rate']:.2%}", "", "",
                          "max rate < 0.1% loss; at 90%: p50/p99/p99.9 "
                          + "/".join(f"{lat[k]:.0f}" if lat[k] is not None else "?" for k in ("p50", "p99", "p99.9"))
                          + " us")
        barrier_data = barrier(workers, packets, repeat, table) if "barrier" in want else None
    finally:
        table.close()
    return {k: build(k, data, meta) if k != "barrier" else barrier_doc(meta, barrier_data or {}) for k in measures}


def barrier_doc(meta: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The barrier measurement's JSON document."""
    return {"kind": "barrier", **meta, **data,
            "note": "saturation throughput of the firewall replaying a trace of trace_rate_pps frames per "
                    "virtual second, with no periodic handler ('none') and with one every 1 s / 1 ms: with "
                    "workers, each due time is a barrier (all workers finish their packets before it, one "
                    "runs the handler alone); 'unbounded': no periodic handler and the drift horizon off "
                    "(max_drift = 2^62 ns instead of 1 ms): what the horizon costs; ratio_vs_none = pps / "
                    "pps of 'none' at the same workers; cost_per_barrier_us = the extra processing time "
                    "over the barriers met (given from 100 barriers on: fewer cost less than a run's noise)"}


def _derive(d: dict[str, Any]) -> None:
    """Speedups, efficiencies and ratios to the peers, in place."""
    one = next((p["pps"] for p in d["points"] if p["workers"] == 1), None)
    one_runs = next((p["runs_pps"] for p in d["points"] if p["workers"] == 1), None)
    one_cpu = next((p.get("cpu_ns_per_packet") for p in d["points"] if p["workers"] == 1), None)
    peer = (d.get("peer") or {}).get("pps")
    mp = {q["workers"]: q["pps"] for q in (d.get("mp_peer") or {}).get("points", [])}
    mp_one = mp.get(1)
    for q in (d.get("mp_peer") or {}).get("points", []):
        q["speedup_vs_1"] = q["pps"] / mp_one if mp_one else None
        q["efficiency"] = q["speedup_vs_1"] / q["workers"] if mp_one else None
    for p in d["points"]:
        w = p["workers"]
        p["speedup_vs_1"] = p["pps"] / one if one else None
        p["efficiency"] = p["speedup_vs_1"] / w if one and w else None
        # the spread: this point's slowest and fastest run over the 1-worker median
        p["efficiency_spread"] = ([min(p["runs_pps"]) / (w * one), max(p["runs_pps"]) / (w * one)]
                                  if one and w and one_runs else None)
        # CPU-time efficiency: the 1-worker CPU time per packet over this point's.  It is what the
        # efficiency would be with a CPU per worker; on a time-sliced (oversubscribed) point it is
        # the only meaningful one (the simulated many-worker run)
        c = p.get("cpu_ns_per_packet")
        p["cpu_efficiency"] = one_cpu / c if one_cpu and c and w else None
        p["vs_peer"] = p["pps"] / peer if peer else None
        p["vs_mp_peer"] = p["pps"] / mp[w] if mp.get(w) else None
