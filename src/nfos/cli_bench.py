"""`nfos bench`: the evaluation harness from the command line (see nfos.bench, docs/benchmarks.md)."""

from __future__ import annotations

import click


@click.command()
@click.option("--nf", default="all", show_default=True, help="NFs to measure (comma-separated), or all")
@click.option("--workers", default="1,2", show_default=True,
              help="worker counts, comma-separated (the sequential mode, 0, is always measured)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="directory for the results: one JSON per measurement, plus PNG figures")
@click.option("--packets", type=int, default=None, help="trace size [default: 300000; 3000 with --quick]")
@click.option("--repeat", type=int, default=None, help="runs per point, the median is kept [default: 3; 1 with --quick]")
@click.option("--measure", default="all", show_default=True,
              help="measurements, comma-separated: throughput, batching, stm_overhead, latency, memory, peers")
@click.option("--quick", is_flag=True, help="the same measurements on tiny traces (a smoke test, seconds)")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False, exists=True),
              help="only draw PNG figures from the result JSON under this directory (no measuring)")
def bench(nf: str, workers: str, out_dir: str | None, packets: int | None, repeat: int | None, measure: str,
          quick: bool, plot_dir: str | None) -> None:
    """Measure the example NFs: throughput vs workers, batching, the price of transactions,
    memory, and the plain and multiprocessing Python peers (docs/benchmarks.md)."""
    import os
    import sys

    from nfos import bench as b

    if plot_dir:
        try:
            for png in b.plot_dir(plot_dir):
                click.echo(f"wrote {png}")
        except b.PlotUnavailable as e:
            raise click.ClickException(str(e)) from None
        return
    try:
        names = b.parse_names(nf)
        ws = b.parse_workers(workers)
        measures = list(b.MEASURES) if measure.strip() == "all" else [m.strip() for m in measure.split(",")]
        unknown = [m for m in measures if m not in b.MEASURES]
        if unknown:
            raise ValueError(f"unknown measurement {', '.join(unknown)} (known: {', '.join(b.MEASURES)}, or all)")
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    packets = packets or (b.QUICK_PACKETS if quick else 300_000)
    repeat = repeat or (1 if quick else 3)
    if packets < 100 or repeat < 1:
        raise click.BadParameter("need --packets >= 100 and --repeat >= 1")
    command = "nfos bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "nfos bench"
    docs = b.suite(names, ws, packets, repeat, measures, command, quick=quick)
    if not out_dir:
        return
    for path in b.write_results(docs, out_dir):
        click.echo(f"wrote {path}")
    try:
        for kind, doc in docs.items():
            png = b.PLOTTERS[doc["kind"]](doc, os.path.join(out_dir, f"{kind}.png"))
            click.echo(f"wrote {png}")
    except b.PlotUnavailable as e:
        click.echo(f"figures skipped: {e}; then: nfos bench --plot {out_dir}")
