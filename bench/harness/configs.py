"""The benchmarked configurations: the example NFs, their traces, parameters and peers; the machine.

Every path is in this source checkout: the NFs are ``examples/*.py``, the
peers ``bench/peers/*.py``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from nfos.io.capture import Trace

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")
PEERS = os.path.join(REPO, "bench", "peers")

MEASURES = ("throughput", "batching", "stm_overhead", "latency", "memory", "peers")
#: measurements run only when named (--measure barrier): not part of "all" and --quick's set
EXTRA_MEASURES = ("barrier",)
NFS_DIR = os.path.join(REPO, "bench", "nfs")
#: the barrier measurement: the firewall with no periodic handler, one every second, one every
#: millisecond; its trace's virtual rate (frames/s) sets how many barriers a run meets
BARRIER_PERIODS = ("none", "1s", "1ms")   # (bench/nfs/firewall_periodic.py --param period=...)
BARRIER_RATE = 100_000
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


#: The flow sizes' Pareto tail index of the CAIDA-like traces (nfos bench --flow-tail): 1.2, the
#: generator's default, puts an elephant of ~14% of all packets in the 300,000-packet trace
#: (one flow: one worker, whatever the steering); 2 gives flows of more even sizes.
FLOW_TAIL = {"alpha": 1.2}


def _caida(n: int) -> Trace:
    from nfos.io.gen import gen_caida
    return gen_caida(n, max(1, n // 21), reverse=0.5, seed=1, alpha=FLOW_TAIL["alpha"])


def _nat_trace(n: int) -> Trace:
    from nfos.io.gen import gen_caida
    return gen_caida(n, max(1, n // 21), reverse=0.0, seed=1, alpha=FLOW_TAIL["alpha"])


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
            "memory_gib": round(mem_kb / 2**20, 1), "hostname": platform.node()}


def load_peer(name: str) -> ModuleType:
    """The peer module ``bench/peers/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"peer_{name}", os.path.join(PEERS, f"{name}.py"))
    if spec is None or spec.loader is None:
        raise ImportError(f"no peer {name} in {PEERS}")
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
