"""The evaluation harness behind `nfos bench` and the scripts in bench/.

Every measurement runs on the machine at hand and writes JSON (with the
machine described) that the plotting functions turn into PNG figures, so
every figure is reproducible from committed JSON.  Throughput is saturation
throughput: the trace is steered into the workers' RX rings before they
start, and the time is the workers' own, from the first packet to the last.
Ratios are measured in one run on one machine.

Measurements (one JSON document each, ``kind`` names it; see docs/benchmarks.md):

``throughput``    throughput vs workers (0 = the sequential mode), with the plain
                  sequential peers and the hand-parallelised ``multiprocessing`` peers;
``batching``      batch size 1 vs 32 at the smallest and largest worker count;
``stm_overhead``  1 worker vs ``--workers 0`` (the price of transactions);
``latency``       paced mode: the highest rate with < 0.1% loss, latency percentiles (and CDF)
                  at 50% and 90% of it, at the smallest and largest worker count that leave
                  the generator a CPU (else "not measured: no spare core ...");
``memory``        PSS and peak RSS of all the NF's processes at 0, 1 and N workers;
``peers``         every nfos figure as a ratio to the plain and the parallel peers.

A run with more processes (workers + the control process) than CPUs is
*oversubscribed*: it is measured all the same and marked so in the JSON, the
table and the figures.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nfos.io.capture import Trace

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")
PEERS = os.path.join(REPO, "bench", "peers")

MEASURES = ("throughput", "batching", "stm_overhead", "latency", "memory", "peers")
PAPER_BATCHING_GAIN = 1.34   # NFOS paper: batching transactions gives +34%
QUICK_PACKETS = 3000
PACED_POOL = 50_000          # packets the paced generator cycles through (a prefix of the trace)


@dataclass
class BenchNF:
    """One benchmarked configuration: an example NF, its trace, parameters and peers."""

    name: str
    file: str
    trace: str                 # key of TRACES
    params: list[str] = field(default_factory=list)
    peer: str | None = None    # module in bench/peers with run(frames, devs, times_ns, **kw) -> outputs
    peer_params: dict[str, Any] = field(default_factory=dict)
    mp_peer: str | None = None  # module in bench/peers with run(..., workers=N, **kw) -> (outputs, seconds)


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
    BenchNF("nat", "nat.py", "nat", ["public_ips=57"], peer="plain_nat", mp_peer="mp_nat"),
    BenchNF("bridge", "bridge.py", "bridge", ["refresh_interval=60s"], peer="plain_bridge", mp_peer="mp_bridge"),
    BenchNF("bridge_refresh0", "bridge.py", "bridge", ["refresh_interval=0"], peer="plain_bridge",
            peer_params={"refresh_interval": 0}, mp_peer="mp_bridge"),
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
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal:")))
    except (OSError, StopIteration, ValueError):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
            "python": platform.python_version(), "machine": platform.machine(),
            "memory_gib": round(mem_kb / 2**20, 1)}


def load_peer(name: str):
    spec = importlib.util.spec_from_file_location(f"peer_{name}", os.path.join(PEERS, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_names(spec: str) -> list[str]:
    """``all`` or comma-separated NF names; an unknown name is a ValueError listing the known ones."""
    names = list(NFS) if spec.strip() in ("", "all") else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in NFS]
    if unknown:
        raise ValueError(f"unknown NF {', '.join(unknown)} (known: {', '.join(NFS)}, or all)")
    return names


def parse_workers(spec: str) -> list[int]:
    try:
        ws = sorted({int(w) for w in spec.split(",") if w.strip()})
    except ValueError:
        raise ValueError(f"--workers takes comma-separated counts, got {spec!r}") from None
    if not ws or ws[0] < 1:
        raise ValueError(f"--workers takes counts >= 1 (0, the sequential mode, is always measured), got {spec!r}")
    return ws


def oversubscribed(processes: int, cpus: int | None = None) -> bool:
    return processes > (cpus or os.cpu_count() or 1)


# ------------------------------------------------------------------ memory from /proc

def _rollup(pid: int | str = "self") -> dict[str, int]:
    """rss_kb, pss_kb (from /proc/PID/smaps_rollup) and peak_rss_kb (VmHWM, /proc/PID/status).
    Where the kernel has no smaps_rollup (gVisor, old kernels) pss_kb is missing and rss_kb is
    VmRSS; {} if the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    out["peak_rss_kb" if line.startswith("VmHWM") else "rss_kb"] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss"):
                    out[k.lower() + "_kb"] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out if "rss_kb" in out else {}


def _children() -> list[int]:
    """PIDs of this process's children (/proc/PID/task/*/children, else a scan of /proc)."""
    me = os.getpid()
    files = glob.glob(f"/proc/{me}/task/*/children")
    pids: list[int] = []
    for path in files:
        try:
            with open(path) as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    if files:
        return pids
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return pids


class MemorySampler:
    """Samples the memory of this (control) process and its children while a run goes on.

    Used as ``replay(progress=...)``: every ``every_s`` it reads smaps_rollup (PSS, RSS) and
    VmHWM (the kernel's peak RSS) of every process, and keeps the sample with the largest
    total PSS (RSS where there is no PSS) plus each process's last peak RSS.  PSS splits
    shared pages (the arena, the inherited interpreter and trace) among the processes, so
    the total PSS is the physical memory of the whole NF, counted once.
    """

    def __init__(self, every_s: float = 0.01) -> None:
        self.every_s = every_s
        self.last = 0.0
        self.samples = 0
        self.baseline = _rollup()                      # before the run: interpreter, harness, trace
        self.others = set(_children())                 # e.g. multiprocessing's resource tracker
        self.best: dict[str, Any] = {}
        self.peak_rss: dict[int, int] = {}

    def __call__(self, done: int = 0, total: int = 0) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        me = _rollup()
        kids = {pid: r for pid in _children() if pid not in self.others and (r := _rollup(pid))}
        if not me:
            return
        if "pss_kb" in me:   # a child that is exiting can lose its smaps_rollup first: skip it
            kids = {pid: r for pid, r in kids.items() if "pss_kb" in r}
        self.samples += 1
        for pid, r in kids.items():
            self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), r.get("peak_rss_kb", 0))
        every = [me, *kids.values()]
        has_pss = all("pss_kb" in r for r in every)
        total_pss = sum(r["pss_kb"] for r in every) if has_pss else None
        total_rss = sum(r["rss_kb"] for r in every)
        key = total_pss if has_pss else total_rss
        if key >= self.best.get("_key", -1):
            self.best = {"_key": key, "total_pss_kb": total_pss, "total_rss_kb": total_rss,
                         "control_pss_kb": me.get("pss_kb"), "control_rss_kb": me["rss_kb"],
                         "worker_pss_kb": [r.get("pss_kb") for r in kids.values()],
                         "worker_rss_kb": [r["rss_kb"] for r in kids.values()]}

    def result(self) -> dict[str, Any]:
        base = self.baseline.get("pss_kb")
        out = {k: v for k, v in self.best.items() if k != "_key"}
        total = out.get("total_pss_kb")
        out.update({"samples": self.samples, "baseline_pss_kb": base,
                    "added_pss_kb": total - base if total is not None and base is not None else None,
                    "baseline_rss_kb": self.baseline.get("rss_kb"),
                    "worker_peak_rss_kb": sorted(self.peak_rss.values(), reverse=True)})
        if base is None:
            out["note"] = "no PSS on this kernel (no /proc/PID/smaps_rollup): RSS only"
        return out


# ------------------------------------------------------------------ single measurements

def _nfos_run(nf: BenchNF, trace: Trace, workers: int, batch: int = 32) -> dict[str, Any]:
    from nfos.runtime.replay import replay

    return replay(os.path.join(EXAMPLES, nf.file), trace, workers=workers, params=nf.params, batch=batch).stats


def _nfos_point(runs: list[dict[str, Any]], workers: int, batch: int, packets: int) -> dict[str, Any]:
    """The median of runs (the counters are the median run's)."""
    pps = [r["throughput_pps"] for r in runs]
    mid = runs[pps.index(statistics.median_high(pps))]
    processes = 1 if workers == 0 else workers + 1
    return {"workers": workers, "batch": batch, "pps": statistics.median(pps), "runs_pps": pps,
            "abort_rate": mid["abort_rate"], "stm_share": mid.get("stm_share_of_transaction_time"), "aborts": mid["aborts"], "transactions": mid["transactions"],
            "imbalance": mid["imbalance"], "irrevocable": mid["irrevocable"], "packets_in": mid["packets_in"],
            "loss": max(0.0, 1 - mid["packets_in"] / packets) if packets else 0.0,
            "processes": processes, "oversubscribed": oversubscribed(processes)}


def throughput(nf: BenchNF, trace: Trace, workers: int, repeat: int = 1, batch: int = 32) -> dict[str, Any]:
    """Saturation throughput of one NF at one worker count: the median of `repeat` runs."""
    return _nfos_point([_nfos_run(nf, trace, workers, batch) for _ in range(repeat)], workers, batch, len(trace))


def memory(nf: BenchNF, trace: Trace, workers: int) -> dict[str, Any]:
    """Memory of all the NF's processes during one run (sampled, see MemorySampler)."""
    from nfos.runtime.replay import replay

    sampler = MemorySampler()
    sampler()   # a sample before the workers exist: the control process alone
    sampler.last = 0.0
    stats = replay(os.path.join(EXAMPLES, nf.file), trace, workers=workers, params=nf.params,
                   progress=sampler).stats
    out = {"workers": workers, "processes": 1 if workers == 0 else workers + 1, **sampler.result()}
    # the runtime's own per-worker report (recorded as a worker exits; 0 if it was read first)
    out["runtime_pss_kb"] = [w["pss_kb"] for w in stats["per_worker"]]
    out["runtime_peak_rss_kb"] = [w["peak_rss_kb"] for w in stats["per_worker"]]
    return out


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


# ------------------------------------------------------------------ the suite

def _header(kind: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, **meta}


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
            latency_duration: float = 0.3) -> dict[str, Any]:
    """Paced mode: the highest rate with < 0.1% loss (binary search on [0, hi], ``steps`` runs),
    then latency percentiles at 50% and 90% of it; without a spare core, why not.

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


LATENCY_METHOD = (
    "paced mode (nfos.runtime.paced): the control process is the generator, queueing the trace's first "
    "50,000 packets (cycling) "
    "into the workers' RX rings (4096 descriptors each) at a fixed rate on the monotonic clock; a full "
    "ring drops the packet (loss); the workers busy-poll.  A binary search (<= 10 runs of 0.2 s) on "
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
          quick: bool = False) -> dict[str, dict[str, Any]]:
    """Run the requested measurements; returns {measure: JSON document}.  ``quick``: shorter
    paced-mode runs (3 search steps of 30 ms), for the smoke test."""
    measures = [m for m in MEASURES if m in set(measures)]
    bad = set(measures) - set(MEASURES)
    if bad:
        raise ValueError(f"unknown measurement {', '.join(bad)} (known: {', '.join(MEASURES)})")
    workers = sorted(set(workers))
    m = machine()
    cpus = m["cpus"] or 1
    meta = {"machine": m, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command, "packets": packets,
            "repeat": repeat, "workers": list(workers),
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
    table = _Table(quiet or not measuring)
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
            # every configuration once per round, `repeat` rounds: a burst of noise from the
            # machine's neighbours hits one run of several configurations, not all runs of one
            configs: list[tuple[tuple, Callable[..., Any], tuple]] = [
                (("nfos", w, 32), _nfos_run, (w, 32)) for w in sorted(nfos_ws)]
            configs += [(("nfos", w, 1), _nfos_run, (w, 1)) for w in batch_ws]
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
    finally:
        table.close()
    return {k: build(k, data, meta) for k in measures}


def _derive(d: dict[str, Any]) -> None:
    """Speedups, efficiencies and ratios to the peers, in place."""
    one = next((p["pps"] for p in d["points"] if p["workers"] == 1), None)
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
        p["vs_peer"] = p["pps"] / peer if peer else None
        p["vs_mp_peer"] = p["pps"] / mp[w] if mp.get(w) else None


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


def sweep(names: list[str], workers: list[int], packets: int, repeat: int = 1, quiet: bool = False,
          command: str = "") -> dict[str, Any]:
    """Throughput vs workers for each NF, with the sequential mode and the peers (the `throughput` doc)."""
    return suite(names, workers, packets, repeat, ["throughput"], command, quiet)["throughput"]


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


# ------------------------------------------------------------------ figures

class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("matplotlib is not installed: pip install -e '.[bench]' "
                              "(or pip install matplotlib) to draw the figures") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(doc: dict[str, Any], what: str) -> str:
    m = doc["machine"]
    return f"{what} — {m['cpus']} CPUs, {m['cpu_model']}, Python {m['python']}"


def _grid(n: int, cols: int = 4):
    plt = _plt()
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return plt, fig, axes


def _save(plt, fig, png: str) -> str:
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_scaling(doc: dict[str, Any], png: str) -> str:
    """Throughput vs workers, one panel per NF: ideal-linear line and the peers."""
    names = list(doc["nfs"])
    plt, fig, axes = _grid(len(names))
    cpus = doc["machine"]["cpus"] or 1
    for ax, name in zip(axes.flat, names, strict=False):
        row = doc["nfs"][name]
        pts = [p for p in row["points"] if p["workers"] >= 1]
        xs = [p["workers"] for p in pts]
        ys = [p["pps"] / 1e6 for p in pts]
        ax.plot(xs, ys, "o-", label="nfos")
        over = [(x, y) for x, y, p in zip(xs, ys, pts, strict=True) if p.get("oversubscribed", x + 1 > cpus)]
        if over:
            ax.plot(*zip(*over, strict=True), "o", mfc="none", mec="red", ms=11, label="oversubscribed")
        if pts:
            base = pts[0]["pps"] / 1e6 / pts[0]["workers"]
            ax.plot(xs, [base * x for x in xs], ":", color="gray", label="ideal linear")
        seq = next((p["pps"] / 1e6 for p in row["points"] if p["workers"] == 0), None)
        if seq:
            ax.axhline(seq, color="green", linestyle="-.", linewidth=1, label="sequential mode")
        if row.get("peer"):
            ax.axhline(row["peer"]["pps"] / 1e6, color="black", linestyle="--", linewidth=1, label="plain Python")
        if row.get("mp_peer"):
            q = row["mp_peer"]["points"]
            ax.plot([p["workers"] for p in q], [p["pps"] / 1e6 for p in q], "s--", color="purple",
                    linewidth=1, label="multiprocessing peer")
        ax.set_title(name, fontsize=10)
        ax.set_xticks(xs)
        ax.set_xlabel("workers")
        ax.set_ylabel("Mpps")
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat[:len(names)]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    axes.flat[0].legend(handles.values(), handles.keys(), fontsize=7)
    fig.suptitle(_title(doc, "nfos throughput vs workers"), fontsize=10)
    return _save(plt, fig, png)


def _bars(ax, labels: list[str], series: list[tuple[str, list[float | None]]], hatch_over: list[list[bool]] | None = None):
    n = len(series)
    width = 0.8 / max(1, n)
    for k, (lab, vals) in enumerate(series):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(labels))]
        bars = ax.bar(xs, [v if v is not None else 0 for v in vals], width, label=lab)
        if hatch_over:
            for b, over in zip(bars, hatch_over[k], strict=True):
                if over:
                    b.set_hatch("//")
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_batching(doc: dict[str, Any], png: str) -> str:
    plt = _plt()
    names = [n for n, r in doc["nfs"].items() if r["points"]]
    ws = sorted({p["workers"] for n in names for p in doc["nfs"][n]["points"]})
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names) + 2), 3.8))
    series, over = [], []
    for w in ws:
        pts = [next((p for p in doc["nfs"][n]["points"] if p["workers"] == w), None) for n in names]
        series.append((f"{w} worker{'s' if w > 1 else ''}", [p["speedup"] if p else None for p in pts]))
        over.append([bool(p and p["oversubscribed"]) for p in pts])
    _bars(ax, names, series, over)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(doc.get("paper_gain", PAPER_BATCHING_GAIN), color="red", linestyle="--", linewidth=1,
               label=f"paper: x{doc.get('paper_gain', PAPER_BATCHING_GAIN):.2f}")
    ax.set_ylabel("throughput, batch 32 / batch 1")
    ax.legend(fontsize=7)
    ax.set_title(_title(doc, "batching: 32 packets per transaction vs 1") + "\n(hatched: oversubscribed)",
                 fontsize=9)
    return _save(plt, fig, png)


def plot_stm_overhead(doc: dict[str, Any], png: str) -> str:
    plt = _plt()
    names = list(doc["nfs"])
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 1.2 * len(names) + 3), 3.8))
    _bars(axes[0], names, [("sequential (--workers 0)", [doc["nfs"][n]["pps_seq"] / 1e6 for n in names]),
                           ("1 worker (transactions)", [doc["nfs"][n]["pps_1w"] / 1e6 for n in names])])
    axes[0].set_ylabel("Mpps")
    axes[0].legend(fontsize=7)
    _bars(axes[1], names, [("1 worker / sequential", [doc["nfs"][n]["ratio_1w_over_seq"] for n in names])])
    axes[1].axhline(1.0, color="black", linewidth=0.8)
    axes[1].set_ylabel("1 worker / sequential")
    fig.suptitle(_title(doc, "price of transactions") + "\nshare of time in the STM: not measured "
                 "(no STM time counters in the runtime)", fontsize=9)
    return _save(plt, fig, png)


def plot_latency(doc: dict[str, Any], png: str) -> str:
    """Latency CDFs at 50% and 90% of the highest rate with < 0.1% loss, per NF (or why not)."""
    rows = [(n, p) for n, r in doc.get("nfs", {}).items() for p in r["points"] if p.get("status") == "measured"]
    names = list(dict.fromkeys(n for n, _ in rows))
    if not names:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.axis("off")
        import textwrap

        ax.text(0.5, 0.5, "\n".join(textwrap.wrap(doc.get("reason") or "not measured", 70)),
                ha="center", va="center", fontsize=10, transform=ax.transAxes)
        ax.set_title(_title(doc, "paced mode and latency"), fontsize=9)
        return _save(plt, fig, png)
    plt, fig, axes = _grid(len(names))
    for ax, name in zip(axes.flat, names, strict=False):
        for n, p in rows:
            if n != name:
                continue
            for key, style in (("at_50pct", "-"), ("at_90pct", "--")):
                r = p.get(key)
                if not r or not r["cdf_ns"]:
                    continue
                xs = [c[0] / 1000 for c in r["cdf_ns"]]
                ys = [c[1] for c in r["cdf_ns"]]
                ax.step(xs, ys, style, where="post",
                        label=f"{p['workers']}w, {r['rate_pps'] / 1e6:.2f} Mpps ({key[3:5]}% of max)")
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, 1.02)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("RX queue to commit (us)")
        ax.set_ylabel("CDF")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    note = f"\n{doc['reason']}" if doc.get("reason") else ""
    fig.suptitle(_title(doc, "paced mode: latency at 50% and 90% of the highest rate with < 0.1% loss") + note,
                 fontsize=9)
    return _save(plt, fig, png)


def plot_memory(doc: dict[str, Any], png: str) -> str:
    names = [n for n, r in doc["nfs"].items() if r["points"]]
    plt, fig, axes = _grid(len(names))
    for ax, name in zip(axes.flat, names, strict=False):
        row = doc["nfs"][name]
        pts = row["points"]
        xs = [p["workers"] for p in pts]

        def mib(key: str, pts: list[dict[str, Any]] = pts) -> list[float]:
            return [p[key] / 1024 if p.get(key) is not None else float("nan") for p in pts]

        if any(p.get("total_pss_kb") is not None for p in pts):
            ax.plot(xs, mib("total_pss_kb"), "o-", label="nfos: total PSS")
            ax.plot(xs, mib("added_pss_kb"), "o:", label="nfos: PSS added by the run")
        else:
            ax.plot(xs, mib("total_rss_kb"), "o-", color="brown", label="nfos: total RSS (no PSS here)")
        peak = [max(p["worker_peak_rss_kb"] or [0]) / 1024 for p in pts]
        ax.plot(xs, peak, "^-.", color="gray", label="largest worker peak RSS")
        q = [p for p in (row.get("mp_peer") or {}).get("points", []) if p.get("total_pss_kb")]
        if q:
            ax.plot([p["workers"] for p in q], [p["total_pss_kb"] / 1024 for p in q], "s--", color="purple",
                    label="multiprocessing peer: PSS (upper bound)")
        ax.set_title(name, fontsize=10)
        ax.set_xticks(xs)
        ax.set_xlabel("workers (0 = sequential)")
        ax.set_ylabel("MiB")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat[:len(names)]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    axes.flat[0].legend(handles.values(), handles.keys(), fontsize=7)
    fig.suptitle(_title(doc, "memory of all the NF's processes"), fontsize=10)
    return _save(plt, fig, png)


def plot_peers(doc: dict[str, Any], png: str) -> str:
    names = list(doc["nfs"])
    plt, fig, axes = _grid(len(names))
    for ax, name in zip(axes.flat, names, strict=False):
        row = doc["nfs"][name]
        pts = [p for p in row["nfos"] if p["workers"] >= 1]
        xs = [p["workers"] for p in pts]
        if row.get("plain"):
            ax.plot(xs, [p["vs_plain"] for p in pts], "o-", label="nfos / plain Python (1 process)")
        if any(p["vs_mp"] for p in pts):
            ax.plot(xs, [p["vs_mp"] for p in pts], "s--", color="purple", label="nfos / multiprocessing peer")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_xticks(xs)
        ax.set_xlabel("workers")
        ax.set_ylabel("throughput ratio")
        top = max([1.0] + [p[k] for p in pts for k in ("vs_plain", "vs_mp") if p[k]])
        ax.set_ylim(0, top * 1.15)
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat[:len(names)]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if names:
        axes.flat[0].legend(handles.values(), handles.keys(), fontsize=7)
    fig.suptitle(_title(doc, "nfos vs the Python peers (same workers)"), fontsize=10)
    return _save(plt, fig, png)


def plot_case_studies(doc: dict[str, Any], png: str) -> str:
    """The recipe case studies (bench/case_studies.py): throughput and abort rate before/after."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    names = [s["name"] for s in doc["studies"]]
    xs = range(len(names))
    for ax, key, label, scale in ((axes[0], "pps", "Mpps", 1e6), (axes[1], "abort_rate", "abort rate", 0.01)):
        ax.bar([x - 0.2 for x in xs], [s["before"][key] / scale for s in doc["studies"]], 0.4, label="default")
        ax.bar([x + 0.2 for x in xs], [s["after"][key] / scale for s in doc["studies"]], 0.4, label="recipe applied")
        ax.set_xticks(list(xs), names)
        ax.set_ylabel(label + (" (%)" if key == "abort_rate" else ""))
    for x, s in zip(xs, doc["studies"], strict=True):
        axes[0].annotate(f"x{s['speedup']:.2f}", (x + 0.2, s["after"]["pps"] / 1e6), ha="center",
                         va="bottom", fontsize=8)
    axes[0].legend(fontsize=8)
    m = doc["machine"]
    fig.suptitle(f"recipe case studies, {doc['workers']} workers — {m['cpus']} CPUs, {m['cpu_model']}", fontsize=9)
    return _save(plt, fig, png)


PLOTTERS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "throughput_vs_workers": plot_scaling, "batching": plot_batching, "stm_overhead": plot_stm_overhead,
    "latency": plot_latency, "memory": plot_memory, "peers": plot_peers, "case_studies": plot_case_studies}


def plot_dir(directory: str) -> list[str]:
    """A PNG beside every result JSON under ``directory`` (recursively) that has a known ``kind``."""
    _plt()   # fail early, and clearly, without matplotlib
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "**", "*.json"), recursive=True)):
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        plot = PLOTTERS.get(doc.get("kind")) if isinstance(doc, dict) else None
        if plot is not None:
            out.append(plot(doc, os.path.splitext(path)[0] + ".png"))
    return out


# ------------------------------------------------------------------ the bench/ scripts

def script_main(measure: str, argv: Sequence[str] | None = None, doc: str = "") -> None:
    """The shared command line of bench/bench_<measure>.py: one measurement, JSON (+ PNG) in --out."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else measure)
    ap.add_argument("--nf", default="all", help="comma-separated names, or all: " + ", ".join(NFS))
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", required=True, help="directory")
    a = ap.parse_args(argv)
    command = "python " + " ".join([os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "bench", *(argv or sys.argv[1:])])
    docs = suite(parse_names(a.nf), parse_workers(a.workers), a.packets, a.repeat, [measure], command)
    for path in write_results(docs, a.out):
        print("wrote", path)
        try:
            print("wrote", PLOTTERS[docs[measure]["kind"]](docs[measure], os.path.splitext(path)[0] + ".png"))
        except PlotUnavailable as e:
            print("figure skipped:", e)
