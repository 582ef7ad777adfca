"""The figures: one PNG per result JSON (``kind`` picks the plotter), drawn with matplotlib."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable
from typing import Any

from .configs import PAPER_BATCHING_GAIN
from .results import _geomean


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


def _legend(axes: Any, n: int) -> None:
    """One legend, on the first panel, of every line label of the first ``n`` panels."""
    handles: dict[str, Any] = {}
    for ax in axes.flat[:n]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    axes.flat[0].legend(handles.values(), handles.keys(), fontsize=7)


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
    _legend(axes, len(names))
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


def stm_shares(doc: dict[str, Any]) -> dict[str, float]:
    """The STM's share of transaction time per NF (1 worker), as the JSON holds it (none: not measured)."""
    shares = doc.get("stm_time_share_1w") or {}
    return {n: float(v) for n, v in shares.items() if v is not None}


def stm_caption(doc: dict[str, Any]) -> str:
    """The figure's subtitle: what the JSON says about the share of time in the STM."""
    shares = stm_shares(doc)
    if not shares:
        note = str(doc.get("stm_time_share_note") or "not measured")
        return "share of time in the STM: " + note.split(";", 1)[0]
    lo, hi = min(shares, key=shares.__getitem__), max(shares, key=shares.__getitem__)
    return (f"share of transaction time in the STM, 1 worker (sampled 1 transaction in 64): "
            f"geomean {_geomean(shares.values()) or 0:.1%}, {shares[lo]:.1%} ({lo}) to {shares[hi]:.1%} ({hi})")


def plot_stm_overhead(doc: dict[str, Any], png: str) -> str:
    plt = _plt()
    names = list(doc["nfs"])
    shares = stm_shares(doc)
    width = max(12, 1.3 * len(names) + 3) if shares else max(9, 1.2 * len(names) + 3)
    fig, axes = plt.subplots(1, 3 if shares else 2, figsize=(width, 3.8))
    _bars(axes[0], names, [("sequential (--workers 0)", [doc["nfs"][n]["pps_seq"] / 1e6 for n in names]),
                           ("1 worker (transactions)", [doc["nfs"][n]["pps_1w"] / 1e6 for n in names])])
    axes[0].set_ylabel("Mpps")
    axes[0].legend(fontsize=7)
    _bars(axes[1], names, [("1 worker / sequential", [doc["nfs"][n]["ratio_1w_over_seq"] for n in names])])
    axes[1].axhline(1.0, color="black", linewidth=0.8)
    axes[1].set_ylabel("1 worker / sequential")
    if shares:
        _bars(axes[2], names, [("1 worker", [100 * shares[n] if n in shares else None for n in names])])
        axes[2].set_ylabel("% of transaction time in the STM")
    fig.suptitle(_title(doc, "price of transactions") + "\n" + stm_caption(doc), fontsize=9)
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
    _legend(axes, len(names))
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
    if names:
        _legend(axes, len(names))
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


def plot_barrier(doc: dict[str, Any], png: str) -> str:
    """The barrier's cost: the firewall's throughput without / with a 1 s / 1 ms periodic handler."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ws = sorted({p["workers"] for p in doc["points"]})
    periods = list(dict.fromkeys(p["period"] for p in doc["points"]))
    width = 0.8 / max(1, len(periods))
    for k, period in enumerate(periods):
        pts = {p["workers"]: p for p in doc["points"] if p["period"] == period}
        at = [i for i, w in enumerate(ws) if w in pts]
        xs = [i + (k - (len(periods) - 1) / 2) * width for i in at]
        label = {"none": "no periodic handler", "unbounded": "none, no drift horizon"}.get(
            period, f"periodic every {period}")
        bars = ax.bar(xs, [pts[ws[i]]["pps"] / 1e6 for i in at], width, label=label)
        for b, w in zip(bars, [ws[i] for i in at], strict=True):
            r = pts[w]["ratio_vs_none"]
            if period != "none" and r is not None:   # relative to "none" at the same workers
                ax.annotate(f"{r:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=7)
    ax.set_xticks(range(len(ws)), ["seq" if w == 0 else f"{w} workers" for w in ws])
    ax.set_ylabel("Mpps (firewall)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(_title(doc, f"periodic barriers ({doc['virtual_s']:.1f} s of virtual time)"), fontsize=9)
    return _save(plt, fig, png)


PLOTTERS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "throughput_vs_workers": plot_scaling, "batching": plot_batching, "stm_overhead": plot_stm_overhead,
    "latency": plot_latency, "memory": plot_memory, "peers": plot_peers, "case_studies": plot_case_studies,
    "barrier": plot_barrier}


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
