"""The evaluation harness behind `nfos bench`; it lives in the source checkout, not in the package.

    configs.py   the benchmarked NFs (examples/), their traces, parameters and peers; the machine
    measure.py   throughput (nfos, the peers), paced-mode latency, and the suite running them all
    memory.py    PSS and peak RSS of all the NF's processes during a run (psutil)
    results.py   one JSON document per measurement
    plots.py     one PNG per JSON document (matplotlib)
    cli.py       what `nfos bench` does with its options (the options are in nfos/cli.py)

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

from .configs import (
    EXAMPLES,
    MEASURES,
    NFS,
    QUICK_PACKETS,
    TRACES,
    BenchNF,
    machine,
    parse_names,
    parse_workers,
)
from .measure import latency, mp_peer_throughput, paced_latency, peer_throughput, suite, throughput
from .memory import MemorySampler, memory
from .plots import PLOTTERS, PlotUnavailable, plot_case_studies, plot_dir
from .results import build, write_json, write_results

__all__ = [
    "EXAMPLES", "MEASURES", "NFS", "PLOTTERS", "QUICK_PACKETS", "TRACES", "BenchNF", "MemorySampler",
    "PlotUnavailable", "build", "latency", "machine", "memory", "mp_peer_throughput", "paced_latency", "parse_names",
    "parse_workers", "peer_throughput", "plot_case_studies", "plot_dir", "suite", "throughput", "write_json",
    "write_results",
]
