"""Memory of all the NF's processes during a run: PSS and RSS sampled with psutil.

PSS (proportional set size) splits each shared page among the processes that
map it, so the sum over the control process and its workers is the physical
memory of the whole NF, counted once.  The peak RSS of a process is the
kernel's high-water mark (VmHWM in /proc/PID/status: psutil has no peak RSS
on Linux).
"""

from __future__ import annotations

import os
import time
from typing import Any

from nfos.io.capture import Trace

from .configs import EXAMPLES, BenchNF

try:
    import psutil
except ImportError:   # the bench extra: pip install -e '.[bench]'
    psutil = None

NEEDS_PSUTIL = "the memory measurement needs psutil: pip install -e '.[bench]' (or pip install psutil)"


def have_psutil() -> bool:
    return psutil is not None


def _peak_rss_kb(pid: int) -> int | None:
    """VmHWM of ``pid`` in KiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _usage(proc: psutil.Process) -> dict[str, int]:
    """rss_kb, pss_kb and peak_rss_kb of a process; {} if it is gone (or going).  pss_kb is missing where
    the kernel reports no PSS (no /proc/PID/smaps), and for a process whose mappings are
    already gone as it exits (PSS 0)."""
    try:
        full = proc.memory_full_info()
    except psutil.Error:
        return {}
    if not full.rss:   # exiting: its memory is already gone
        return {}
    out = {"rss_kb": full.rss // 1024}
    pss = getattr(full, "pss", 0)
    if pss:
        out["pss_kb"] = pss // 1024
    peak = _peak_rss_kb(proc.pid)
    if peak is not None:
        out["peak_rss_kb"] = peak
    return out


class MemorySampler:
    """Samples the memory of this (control) process and its children while a run goes on.

    Used as ``replay(progress=...)``: every ``every_s`` it reads the PSS and RSS (psutil) and
    VmHWM (the kernel's peak RSS) of every process, and keeps the sample with the largest
    total PSS (RSS where there is no PSS) plus each process's last peak RSS.  PSS splits
    shared pages (the arena, the inherited interpreter and trace) among the processes, so
    the total PSS is the physical memory of the whole NF, counted once.
    """

    def __init__(self, every_s: float = 0.01) -> None:
        if psutil is None:
            raise RuntimeError(NEEDS_PSUTIL)
        self.every_s = every_s
        self.last = 0.0
        self.samples = 0
        self.me = psutil.Process()
        self.baseline = _usage(self.me)                # before the run: interpreter, harness, trace
        self.others = {p.pid for p in self.me.children()}   # e.g. multiprocessing's resource tracker
        self.best: dict[str, Any] = {}
        self.peak_rss: dict[int, int] = {}

    def __call__(self, done: int = 0, total: int = 0) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        me = _usage(self.me)
        kids = {p.pid: r for p in self.me.children() if p.pid not in self.others and (r := _usage(p))}
        if not me:
            return
        if "pss_kb" in me:   # a child that is exiting can lose its mappings first: skip it
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
            out["note"] = "no PSS on this kernel (no /proc/PID/smaps): RSS only"
        return out


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
