"""`nfos bench`: the evaluation harness from the command line (see nfos.bench)."""

from __future__ import annotations

import click


@click.command()
@click.option("--nf", default="all", help="NFs to measure (comma-separated), or all")
@click.option("--workers", default="1,2", help="worker counts, comma-separated")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="directory for the JSON and PNG results")
@click.option("--packets", default=300_000, show_default=True, help="trace size")
def bench(nf: str, workers: str, out_dir: str | None, packets: int) -> None:
    """Measure throughput vs workers for the example NFs, against their peers."""
    import os

    from nfos.bench import NFS, plot_scaling, sweep, write_json

    names = list(NFS) if nf == "all" else nf.split(",")
    doc = sweep(names, [int(w) for w in workers.split(",")], packets)
    if out_dir:
        write_json(doc, os.path.join(out_dir, "throughput.json"))
        plot_scaling(doc, os.path.join(out_dir, "throughput.png"))
