"""The `nfos` command: run, check, gen.

Every error a user can cause ends as one line `nfos: error: ...` and exit
status 2; a finished run exits 0.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from nfos.io.capture import CaptureError, Trace, read_capture, read_captures, write_pcapng
from nfos.nf import NFError
from nfos.params import Duration, ParamError
from nfos.runtime.progress import Phase, Phases, PlainPhases
from nfos.runtime.session import LoadError

DEFAULT_WATCHDOG = 10.0   # seconds in one handler call before `nfos run` names the worker
err = Console(stderr=True)
out = Console()
USER_ERRORS = (LoadError, CaptureError, ParamError, NFError, ValueError, FileNotFoundError,
               IsADirectoryError, PermissionError, MemoryError)


def say(line: str, stream=None) -> None:
    """One line, never wrapped (tests and scripts read it)."""
    print(line, file=stream or sys.stdout, flush=True)


def fail(msg: str) -> NoReturn:
    say(f"nfos: error: {' '.join(msg.split())}", sys.stderr)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nfos")
def cli() -> None:
    """Run a sequential Python network function on every core."""


def main() -> None:
    """Entry point: click's usage errors become one `nfos: error:` line too."""
    try:
        rc = cli.main(standalone_mode=False)
    except click.UsageError as e:
        hint = f" (see 'nfos {e.ctx.command_path.split(' ', 1)[1]} --help')" if e.ctx and " " in e.ctx.command_path \
            else " (see 'nfos --help')"
        fail(e.format_message() + hint)
    except click.ClickException as e:
        fail(e.format_message())
    except click.Abort:
        fail("interrupted")
    sys.exit(rc if isinstance(rc, int) else 0)


# ------------------------------------------------------------------ run
def _trace_loader(inputs: tuple[str, ...], phases: Phases | None = None) -> Callable[[list[str]], Trace]:
    def load(devices: list[str]) -> Trace:
        single = len(inputs) == 1 and "=" not in inputs[0]
        pairs = []
        if not single:
            for spec in inputs:
                dev, sep, path = spec.partition("=")
                if not sep:
                    raise ValueError(f"--in {spec}: with several inputs, give each as DEVICE=FILE")
                if dev not in devices:
                    raise ValueError(f"--in {spec}: the NF has no device {dev!r} (devices: {', '.join(devices)})")
                pairs.append((dev, path))
        files = [inputs[0]] if single else [path for _dev, path in pairs]
        size = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
        progress = None
        if phases is not None:
            phases.start("reading", f"reading {files[0] if single else f'{len(files)} captures'}", None, size)

            def progress(packets: int, nbytes: int, _total: int) -> None:
                phases.update(packets, nbytes)
        trace = (read_capture(inputs[0], default_devices=list(devices), progress=progress) if single
                 else read_captures(pairs, progress=progress))
        if phases is not None:
            phases.finish(len(trace), size)
        return trace
    return load


class RichPhases(Phases):
    """On a terminal: one live line per phase — what it does, a bar, packets and MB/s — drawn
    once the run has lasted half a second (a short run shows nothing but its summary)."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=True)
        self.task: TaskID | None = None
        self.live = False
        self.last = 0.0

    def shown_start(self, p: Phase) -> None:
        if p.name == "done":
            return
        if self.task is not None:
            self.bar.update(self.task, visible=False)
        self.task = self.bar.add_task(p.label, total=p.total if p.total is not None else p.total_bytes,
                                      count="", rate="")
        self._show(p)

    def shown_update(self, p: Phase) -> None:
        now = time.monotonic()
        if now - self.last >= 0.1:
            self.last = now
            self._show(p)

    def shown_finish(self, p: Phase) -> None:
        if p.name != "done":
            self._show(p)

    def _show(self, p: Phase) -> None:
        if self.task is None:
            return
        if not self.live and time.monotonic() - self.t0 >= 0.5:
            self.bar.start()
            self.live = True
        done = p.nbytes if p.total is None else min(p.done, p.total)
        self.bar.update(self.task, completed=done, count=f"{p.done:,} {p.unit}", rate=p.rate())

    def close(self) -> None:
        if self.live:
            self.bar.stop()
            self.live = False


#: counters the summary always shows; the others of counters.def only when not zero
_ALWAYS_SHOWN = ("packets_in", "packets_out", "dropped", "transactions", "aborts")


def _summary(stats: dict[str, Any]) -> Table:
    """The run's counters (every summed one of counters.def, and the live ones in a live run,
    under their names), then time, throughput and imbalance."""
    from nfos import _core

    t = Table(title=f"nfos run: {stats['nf']} ({stats['workers']} workers"
                    f"{', sequential reference mode' if stats['workers'] == 0 else ''})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    live = stats.get("mode") == "live"
    for name, _n, agg, _doc in _core.COUNTERS:
        if agg != "sum" and not (live and agg == "live"):
            continue
        value = stats[name]
        for label, n in (value.items() if isinstance(value, dict) else [(None, value)]):
            if n or (name in _ALWAYS_SHOWN and label is None) or name == "packets_out":
                shown = f"{n:,}" + (f" ({stats['abort_rate']:.2%})" if name == "aborts" else "")
                t.add_row(name if label is None else f"{name} {label}", shown)
    t.add_row("run time" if live else "processing time", f"{stats['wall_s']:.3f} s")
    t.add_row("throughput", f"{stats['throughput_pps'] / 1e6:.3f} Mpps")
    if stats["workers"] > 1:
        t.add_row("imbalance (max/mean packets per worker)", f"{stats['imbalance']:.2f}")
    return t


@cli.command()
@click.argument("nf_file", type=click.Path(dir_okay=False))
@click.option("--in", "inputs", multiple=True, metavar="FILE | DEV=FILE",
              help="capture to replay: a pcapng whose interface names are the NF's devices, a pcap "
                   "(all packets on the first device), or DEV=FILE pairs merged by time")
@click.option("--iface", "ifaces", multiple=True, metavar="DEV=IFACE[,DEV=IFACE]",
              help="run live on network interfaces instead of replaying (e.g. lan=eth1,wan=eth2; repeatable)")
@click.option("--workers", "-w", default=None, type=int,
              help="worker processes (default: the number of CPUs); 0 = sequential reference mode")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="write DIR/<device>.pcap")
@click.option("--param", "params", multiple=True, metavar="K=V", help="NF parameter (repeatable)")
@click.option("--stats-json", type=click.Path(dir_okay=False), help="write the run's counters as JSON")
@click.option("--batch", default=32, show_default=True, help="packets per transaction (1..32)")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar or summary table")
@click.option("--profile", "profile", is_flag=True, help="also print the scalability profile")
@click.option("--stats-interval", type=float, default=None, metavar="SECONDS",
              help="live: print the counters (rx, tx, drops, aborts, per worker) every SECONDS")
@click.option("--metrics-port", type=int, default=None, metavar="PORT",
              help="live: serve the counters to Prometheus on PORT (needs nfos[live])")
@click.option("--metrics-addr", default=None, metavar="ADDR",
              help="live: the address --metrics-port binds to [default: 127.0.0.1]")
@click.option("--duration", type=float, default=None, metavar="SECONDS",
              help="live: stop after SECONDS (default: Ctrl-C or SIGTERM)")
@click.option("--user", "user", default=None, metavar="NAME",
              help="live: once the packet sockets are open, run as this user (e.g. nobody)")
@click.option("--watchdog", type=float, default=DEFAULT_WATCHDOG, show_default=True, metavar="SECONDS",
              help="name on stderr a worker stuck in one handler call this long (0: off)")
@click.option("--record-commits", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="replay: record every transaction's commit order to FILE, for `nfos verify FILE`")
def run(nf_file: str, inputs: tuple[str, ...], ifaces: tuple[str, ...], workers: int | None, out_dir: str | None,
        params: tuple[str, ...], stats_json: str | None, batch: int, quiet: bool, profile: bool,
        stats_interval: float | None, metrics_port: int | None, metrics_addr: str | None, duration: float | None,
        user: str | None, watchdog: float, record_commits: str | None) -> None:
    """Replay a capture through NF_FILE on N worker processes (--in), or run it on interfaces (--iface)."""
    if inputs and ifaces:
        fail("--in and --iface are mutually exclusive: replay a capture or run on interfaces")
    if not inputs and not ifaces:
        fail("give --in FILE to replay a capture, or --iface DEV=IFACE to run on interfaces")
    if stats_json:   # found out now, not after the whole run
        where = os.path.dirname(os.path.abspath(stats_json))
        if not os.path.isdir(where):
            fail(f"--stats-json {stats_json}: directory {where} does not exist")
        if not os.access(where, os.W_OK):
            fail(f"--stats-json {stats_json}: directory {where} is not writable")
    if watchdog < 0:
        fail("--watchdog must be >= 0 (0: off)")
    if ifaces:
        for name, value in (("--out", out_dir), ("--profile", profile), ("--record-commits", record_commits)):
            if value:
                fail(f"{name} is for replays (--in), not live runs")
        if metrics_addr is not None and metrics_port is None:
            fail("--metrics-addr goes with --metrics-port")
        # opened now: after --user drops privileges, the directory may not be writable
        stats_file = open(stats_json, "w") if stats_json else None   # noqa: SIM115
        try:
            stats = _run_live(nf_file, ifaces, workers, params, batch, stats_interval, metrics_port, duration,
                              metrics_addr=metrics_addr, user=user, watchdog=watchdog)
        except BaseException:
            if stats_file is not None and stats_json:
                stats_file.close()
                with contextlib.suppress(OSError):   # (no longer ours to remove after --user)
                    os.unlink(stats_json)
            raise
        if stats_file is not None:
            with stats_file:
                json.dump(stats, stats_file, indent=2)
        if not quiet:
            out.print(_summary(stats))
        return
    live_only: tuple[tuple[str, object], ...] = (
        ("--stats-interval", stats_interval), ("--metrics-port", metrics_port), ("--metrics-addr", metrics_addr),
        ("--duration", duration), ("--user", user))
    for name, given in live_only:
        if given is not None:
            fail(f"{name} is for live runs (--iface), not replays")
    result = _run(nf_file, inputs, workers, out_dir, params, batch, quiet, profile, watchdog, stats_json,
                  record_commits)
    stats = result.stats
    if stats_json:
        with open(stats_json, "w") as f:
            json.dump(stats, f, indent=2)
    if not quiet:
        out.print(_summary(stats))
        if out_dir:
            say(f"output: {', '.join(os.path.join(out_dir, d + '.pcap') for d in stats['packets_out'])}")
    if profile:
        from nfos.profiler import render_text

        render_text(result.profile, out)


def _run(nf_file: str, inputs: tuple[str, ...], workers: int | None, out_dir: str | None,
         params: tuple[str, ...], batch: int, quiet: bool, profile: bool, watchdog: float = 0.0,
         stats_json: str | None = None, record_commits: str | None = None):
    """Replay with a progress bar; user errors end the command with one line.  Ctrl-C or
    SIGTERM: the workers stop at once; the summary so far (with ``interrupted`` and
    ``unprocessed``) goes to ``stats_json`` and, unless quiet, to stdout; exit status 2."""
    from nfos.runtime.replay import Interrupted, replay

    if workers is None:
        workers = os.cpu_count() or 1
    if workers > (os.cpu_count() or 1):
        say(f"nfos: note: {workers} workers on {os.cpu_count()} CPUs: they will share cores", sys.stderr)
    _sigterm_as_interrupt()
    # the phases (reading, steering, processing, writing output, done): a live line on a
    # terminal, one plain line each otherwise (logs, CI), nothing with --quiet
    phases: Phases | None = None if quiet else RichPhases(err) if sys.stderr.isatty() else PlainPhases()
    try:
        result = replay(nf_file, _trace_loader(inputs, phases), workers=workers, params=list(params),
                        out_dir=out_dir, batch=batch, profile=profile, phases=phases, watchdog=watchdog,
                        record_commits=record_commits, record_inputs=[_absolute_input(i) for i in inputs])
    except Interrupted as e:
        if phases is not None:
            phases.close()
            phases = None
        stats = dict(e.stats, stopped_by=signal.Signals(_signals[-1]).name if _signals else "SIGINT")
        if stats_json:
            with open(stats_json, "w") as f:
                json.dump(stats, f, indent=2)
        if not quiet:
            out.print(_summary(stats))
        fail("interrupted; workers stopped, nothing left behind")
    except KeyboardInterrupt:
        fail("interrupted; workers stopped, nothing left behind")
    except USER_ERRORS as e:
        fail(str(e))
    except RuntimeError as e:
        fail(str(e))
    finally:
        if phases is not None:
            phases.close()
    if phases is not None:
        phases.done(result.stats["packets_in"])
    for w in result.stats.get("warnings", []):
        say(f"nfos: warning: {w}", sys.stderr)
    return result


@cli.command()
@click.argument("nf_file", type=click.Path(dir_okay=False))
@click.option("--in", "inputs", multiple=True, required=True, metavar="FILE | DEV=FILE", help="capture to replay")
@click.option("--workers", "-w", default=None, type=int, help="worker processes (default: the number of CPUs)")
@click.option("--param", "params", multiple=True, metavar="K=V", help="NF parameter (repeatable)")
@click.option("--batch", default=32, show_default=True, help="packets per transaction (1..32)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the report as JSON")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="write the report as one HTML page")
def profile(nf_file: str, inputs: tuple[str, ...], workers: int | None, params: tuple[str, ...], batch: int,
            json_path: str | None, html_path: str | None) -> None:
    """Why does NF_FILE not scale? Aborts per line, ranked conflict causes and their recipes."""
    from nfos.profiler import render_html, render_text, to_json

    result = _run(nf_file, inputs, workers, None, params, batch, True, True, DEFAULT_WATCHDOG)
    render_text(result.profile, out)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(to_json(result.profile), f, indent=2)
    if html_path:
        with open(html_path, "w") as f:
            f.write(render_html(result.profile))


def _run_live(nf_file: str, ifaces: tuple[str, ...], workers: int | None, params: tuple[str, ...], batch: int,
              stats_interval: float | None, metrics_port: int | None, duration: float | None,
              metrics_addr: str | None = None, user: str | None = None, watchdog: float = 0.0) -> dict[str, Any]:
    """A live run; it stops on Ctrl-C, SIGTERM or --duration.  User errors end with one line."""
    from nfos.runtime.live import LiveError, parse_ifaces, run_live

    if workers is not None and workers > (os.cpu_count() or 1):
        say(f"nfos: note: {workers} workers on {os.cpu_count()} CPUs: they will share cores", sys.stderr)
    try:
        return run_live(nf_file, parse_ifaces(ifaces), workers=workers, params=list(params),
                        stats_interval=stats_interval, metrics_port=metrics_port, duration=duration, batch=batch,
                        metrics_addr=metrics_addr or "127.0.0.1", user=user, watchdog=watchdog)
    except KeyboardInterrupt:
        fail("interrupted while starting; workers stopped, nothing left behind")
    except (LiveError, *USER_ERRORS) as e:
        fail(str(e))
    except RuntimeError as e:
        fail(str(e))
    raise AssertionError("unreachable")


_signals: list[int] = []   # the signals that interrupted the run


def _sigterm_as_interrupt() -> None:
    """SIGTERM is a Ctrl-C (KeyboardInterrupt); which one came is remembered (``stopped_by``)."""
    def handler(signum, frame):
        _signals.append(signum)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# ---------------------------------------------------------------- check
def _absolute_input(spec: str) -> str:
    """An --in argument with its file as an absolute path (a record names it for nfos verify)."""
    dev, sep, path = spec.rpartition("=")
    return f"{dev}{sep}{os.path.abspath(path)}" if not os.path.exists(spec) else os.path.abspath(spec)


@cli.command()
@click.argument("record_file", type=click.Path(exists=True, dir_okay=False))
def verify(record_file: str) -> None:
    """Re-execute a run recorded with `nfos run --record-commits RECORD_FILE` sequentially, in its
    commit order, and compare its output and final structure state byte for byte: one line per
    violation; exit status 0 (serializable) or 1."""
    from nfos.runtime.verify import verify as run_verify

    def load(devices: list[str], header: dict) -> Trace:
        return _trace_loader(tuple(header["trace"]))(devices)

    try:
        problems = run_verify(record_file, load)
    except USER_ERRORS as e:
        fail(str(e))
    except RuntimeError as e:
        fail(str(e))
    for line in problems:
        say(f"violation: {line}")
    if problems:
        sys.exit(1)
    say(f"{record_file}: OK (the output and the final state of every structure equal the serial execution)")


@cli.command()
@click.argument("nf_file", type=click.Path(dir_okay=False))
@click.option("--param", "params", multiple=True, metavar="K=V", help="NF parameter for the trial load")
@click.option("--rss", is_flag=True, help="also report whether NIC RSS and kernel fanout keep packet sets on one core")
@click.option("--nic", "nics", multiple=True, metavar="IFACE | DEV=IFACE",
              help="with --rss: the interface (all devices) or each device's interface")
def check(nf_file: str, params: tuple[str, ...], rss: bool, nics: tuple[str, ...]) -> None:
    """Check NF_FILE: forbidden constructs (file:line), then load it and run @nf.init."""
    from nfos.check import check_file
    from nfos.runtime.session import Session

    if nics and not rss:
        fail("--nic goes with --rss")
    if rss and not nics:
        fail("--rss needs --nic IFACE (or --nic DEV=IFACE per device)")
    if not os.path.isfile(nf_file):
        fail(f"{nf_file}: no such NF file")
    findings = check_file(nf_file)
    for f in findings:
        say(str(f))
    if findings:
        say(f"nfos: {len(findings)} problem(s) in {nf_file}", sys.stderr)
        sys.exit(1)
    try:
        s = Session(nf_file, 0, list(params), collect_output=False, check=False)
        try:
            s.init()
            nf = s.nf
            handlers = [k for k, v in vars(nf.handlers).items() if v]
            sets = ", ".join(f"{d}: {'/'.join(ds.names)}" for d, ds in nf.sets.per_device.items()) if nf.sets else "none"
            say(f"{nf_file}: ok — NF '{nf.name}', devices {', '.join(nf.devices)}; packet sets: {sets}; "
                f"handlers: {', '.join(handlers) or 'none'}")
        finally:
            s.close()
    except USER_ERRORS as e:
        fail(str(e))
    if rss:
        from nfos.check.rss import RssCheckError, check_rss

        try:
            reports = check_rss(nf_file, nics, params)
        except (RssCheckError, *USER_ERRORS) as e:
            fail(str(e))
        for r in reports:
            for line in r.lines:
                say(line)
        icmp = " (ICMP echo and errors excepted: see the icmp lines)" if any(r.icmp for r in reports) else ""
        say(f"NIC RSS alone keeps packet sets on one core: {'yes' if all(r.nic_ok for r in reports) else 'no'}"
            f"{icmp}; kernel fanout (nfos run --iface): {'yes' if all(r.fanout_ok for r in reports) else 'no'}")


# ------------------------------------------------------------------ gen
@cli.group()
def gen() -> None:
    """Generate deterministic synthetic traces (pcapng, devices lan/wan)."""


def _write(trace: Trace, path: str) -> None:
    write_pcapng(path, trace.dev_names, trace.frames, trace.times_ns, trace.devs)
    say(f"{path}: {len(trace):,} packets")


@gen.command("caida")
@click.option("--packets", default=1_000_000, show_default=True, help="LAN->WAN packets")
@click.option("--flows", default=None, type=int, help="distinct flows (default: packets / 21)")
@click.option("--reverse", default=0.0, show_default=True, help="fraction of flows with WAN->LAN replies")
@click.option("--rate", default=1e6, show_default=True, help="packets per second of virtual time")
@click.option("--seed", default=1, show_default=True)
@click.option("--out", "path", required=True, type=click.Path(dir_okay=False))
def gen_caida_cmd(packets: int, flows: int | None, reverse: float, rate: float, seed: int, path: str) -> None:
    """CAIDA-like flows: heavy-tailed sizes (mean ~21), 64-byte TCP/UDP frames LAN->WAN."""
    from nfos.io.gen import gen_caida
    try:
        _write(gen_caida(packets, flows or max(1, packets // 21), reverse=reverse, rate=rate, seed=seed), path)
    except (ValueError, OSError) as e:
        fail(str(e))


@gen.command("antiddos")
@click.option("--packets", default=1_000_000, show_default=True)
@click.option("--rate", default=1e6, show_default=True, help="packets per second of virtual time")
@click.option("--seed", default=1, show_default=True)
@click.option("--out", "path", required=True, type=click.Path(dir_okay=False))
def gen_antiddos_cmd(packets: int, rate: float, seed: int, path: str) -> None:
    """The paper's Anti-DDoS pattern: a new flow every 5 packets, 80% one-packet flows."""
    from nfos.io.gen import gen_antiddos
    try:
        _write(gen_antiddos(packets, rate=rate, seed=seed), path)
    except (ValueError, OSError) as e:
        fail(str(e))


@gen.command("bridge")
@click.option("--packets", default=1_000_000, show_default=True, help="frames in all (ARP announcements first)")
@click.option("--macs", default=256, show_default=True, help="hosts")
@click.option("--flow-packets", default=10_000, show_default=True, help="frames per host-pair flow (paper: 10,000)")
@click.option("--ports", default=2, show_default=True, help="bridge ports (devices p0..)")
@click.option("--rate", default=1e6, show_default=True, help="packets per second of virtual time")
@click.option("--seed", default=1, show_default=True)
@click.option("--out", "path", required=True, type=click.Path(dir_okay=False))
def gen_bridge_cmd(packets: int, macs: int, flow_packets: int, ports: int, rate: float, seed: int,
                   path: str) -> None:
    """The paper's data-centre bridge pattern: MAC flows of 10,000 frames between hosts on different ports."""
    from nfos.io.gen_bridge import gen_bridge
    try:
        _write(gen_bridge(packets, macs=macs, flow_packets=flow_packets, ports=ports, rate=rate, seed=seed), path)
    except (ValueError, OSError) as e:
        fail(str(e))


@gen.command("lb")
@click.option("--packets", default=1_000_000, show_default=True, help="client packets (heartbeats on top)")
@click.option("--flows", default=None, type=int, help="client flows (default: packets / 21)")
@click.option("--backends", default=3, show_default=True)
@click.option("--vips", default="118.0.0.1,118.0.0.2", show_default=True, help="virtual IPs, comma-separated")
@click.option("--heartbeat-interval", default=1.0, show_default=True, help="seconds between heartbeats")
@click.option("--rate", default=1e6, show_default=True, help="packets per second of virtual time")
@click.option("--seed", default=1, show_default=True)
@click.option("--out", "path", required=True, type=click.Path(dir_okay=False))
def gen_lb_cmd(packets: int, flows: int | None, backends: int, vips: str, heartbeat_interval: float, rate: float,
               seed: int, path: str) -> None:
    """Load-balancer trace: HTTP-like flows to virtual IPs (wan) plus backend heartbeats (lan)."""
    from nfos.io.gen_lb import gen_lb
    try:
        _write(gen_lb(packets, flows or max(1, packets // 21), backends=backends,
                      vips=tuple(v.strip() for v in vips.split(",") if v.strip()),
                      heartbeat_interval=heartbeat_interval, rate=rate, seed=seed), path)
    except (ValueError, OSError) as e:
        fail(str(e))


# ---------------------------------------------------------------- bench
HARNESS = os.path.join("bench", "harness", "__init__.py")


def find_checkout() -> str | None:
    """The nfos source checkout holding the benchmark harness (bench/harness): the current
    directory or one above it, else the checkout this package is installed from (editable)."""
    import nfos

    for start in (os.getcwd(), os.path.dirname(os.path.abspath(nfos.__file__))):
        d = start
        while True:
            if os.path.isfile(os.path.join(d, HARNESS)):
                return d
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    return None


@cli.command()
@click.option("--nf", default="all", show_default=True, help="NFs to measure (comma-separated), or all")
@click.option("--workers", default="1,2", show_default=True,
              help="worker counts, comma-separated (the sequential mode, 0, is always measured)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="directory for the results: one JSON per measurement, plus PNG figures")
@click.option("--packets", type=int, default=None, help="trace size [default: 300000; 3000 with --quick]")
@click.option("--repeat", type=int, default=None, help="runs per point, the median is kept [default: 3; 1 with --quick]")
@click.option("--measure", default="all", show_default=True,
              help="measurements, comma-separated: throughput, batching, stm_overhead, latency, memory, peers; "
                   "and, only when named, barrier (the cost of periodic handlers: none vs 1 s vs 1 ms)")
@click.option("--quick", is_flag=True, help="the same measurements on tiny traces (a smoke test, seconds)")
@click.option("--seconds", type=float, default=None,
              help="work per worker and saturation point at least (the trace replayed in laps) "
                   "[default: 2; 0 with --quick: one pass]")
@click.option("--cpus", default="all", show_default=True,
              help="pin worker i to the i-th of these CPUs (round robin): all (those this process may use), "
                   "a comma-separated list, or none")
@click.option("--rebalance", default="0", show_default=True, metavar="DURATION",
              help="RSS++ rebalancing epoch of the replays with 2 workers or more (e.g. 5ms; 0 = the static table)")
@click.option("--flow-tail", type=float, default=1.2, show_default=True,
              help="Pareto tail index of the CAIDA-like traces' flow sizes: 1.2 has elephants (the largest "
                   "flow ~14%% of the packets), 2 flows of more even sizes")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False, exists=True),
              help="only draw PNG figures from the result JSON under this directory (no measuring)")
def bench(nf: str, workers: str, out_dir: str | None, packets: int | None, repeat: int | None, measure: str,
          quick: bool, seconds: float | None, cpus: str, rebalance: str, flow_tail: float,
          plot_dir: str | None) -> None:
    """Measure the example NFs: throughput vs workers, batching, the price of transactions,
    memory, and the plain and multiprocessing Python peers (docs/benchmarks.md).  Runs in a
    source checkout: the harness, the example NFs and the peers live there (bench/)."""
    root = find_checkout()
    if root is None:
        fail("nfos bench runs in a source checkout of nfos (it needs bench/harness, examples/ and "
             "bench/peers): clone the nfos repository, pip install -e '.[bench]' there, and run "
             "nfos bench from inside it")
    if root not in sys.path:
        sys.path.insert(0, root)
    harness = importlib.import_module("bench.harness.cli")
    try:
        rebalance_ns = int(Duration(rebalance)) if rebalance.strip() not in ("", "0") else 0
    except (ValueError, ParamError) as e:
        raise click.BadParameter(f"--rebalance: {e}") from None
    harness.main(nf, workers, out_dir, packets, repeat, measure, quick, plot_dir, seconds=seconds, cpus=cpus,
                 rebalance_ns=rebalance_ns, flow_tail=flow_tail)


if __name__ == "__main__":
    main()
