"""What `nfos bench` does with its options (they are declared in nfos/cli.py, which finds this
checkout and calls :func:`main`).  Bad options raise click's usage errors: `nfos: error:`, exit 2."""

from __future__ import annotations

import os
import sys

import click

from .configs import EXTRA_MEASURES, FLOW_TAIL, MEASURES, QUICK_PACKETS, parse_names, parse_workers
from .measure import default_cpus, suite
from .memory import NEEDS_PSUTIL, have_psutil
from .plots import PLOTTERS, PlotUnavailable, plot_dir
from .results import write_results


def parse_cpus(spec: str) -> list[int] | None:
    """``all`` (the CPUs this process may use), ``none`` (no pinning) or a comma-separated list."""
    spec = spec.strip()
    if spec in ("", "none"):
        return None
    if spec == "all":
        return default_cpus()
    try:
        cpus = [int(c) for c in spec.split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"--cpus takes all, none or comma-separated CPU numbers, got {spec!r}") from None
    if not cpus or min(cpus) < 0:
        raise ValueError(f"--cpus takes all, none or comma-separated CPU numbers, got {spec!r}")
    return cpus


def main(nf: str, workers: str, out_dir: str | None, packets: int | None, repeat: int | None, measure: str,
         quick: bool, plot: str | None, seconds: float | None = None, cpus: str = "all",
         rebalance_ns: int = 0, flow_tail: float = 1.2) -> None:
    """Measure (or with ``plot``, only draw the figures of a results directory)."""
    if plot:
        try:
            for png in plot_dir(plot):
                click.echo(f"wrote {png}")
        except PlotUnavailable as e:
            raise click.ClickException(str(e)) from None
        return
    try:
        names = parse_names(nf)
        ws = parse_workers(workers)
        measures = list(MEASURES) if measure.strip() == "all" else [m.strip() for m in measure.split(",")]
        unknown = [m for m in measures if m not in MEASURES + EXTRA_MEASURES]
        if unknown:
            raise ValueError(f"unknown measurement {', '.join(unknown)} "
                             f"(known: {', '.join(MEASURES + EXTRA_MEASURES)}, or all)")
        pinned = parse_cpus(cpus)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    packets = packets or (QUICK_PACKETS if quick else 300_000)
    repeat = repeat or (1 if quick else 3)
    seconds = (0.0 if quick else 2.0) if seconds is None else seconds
    if flow_tail <= 1.0:
        raise click.BadParameter("--flow-tail must be > 1")
    FLOW_TAIL["alpha"] = flow_tail
    if packets < 100 or repeat < 1 or seconds < 0:
        raise click.BadParameter("need --packets >= 100, --repeat >= 1 and --seconds >= 0")
    if "memory" in measures and not have_psutil():
        raise click.ClickException(NEEDS_PSUTIL)
    command = "nfos bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "nfos bench"
    docs = suite(names, ws, packets, repeat, measures, command, quick=quick, seconds=seconds, pin=pinned,
                 rebalance_ns=rebalance_ns)
    if not out_dir:
        return
    for path in write_results(docs, out_dir):
        click.echo(f"wrote {path}")
    try:
        for kind, doc in docs.items():
            png = PLOTTERS[doc["kind"]](doc, os.path.join(out_dir, f"{kind}.png"))
            click.echo(f"wrote {png}")
    except PlotUnavailable as e:
        click.echo(f"figures skipped: {e}; then: nfos bench --plot {out_dir}")
