"""Run an NF on live Linux interfaces: the `nfos run --iface` path.

    control process ── loads the NF, runs @nf.init, checks the interfaces,
    │                  opens a send-only socket per device (periodic and exit
    │                  handlers emit through it), forks the workers, runs the
    │                  periodic handlers on the monotonic clock, prints and
    │                  exports the counters, stops on Ctrl-C / SIGTERM / --duration
    ├── worker 0       per device: an AF_PACKET socket with a TPACKET_V3 RX
    └── worker N-1     ring, in the device's PACKET_FANOUT group (classic BPF
                       compiled from the packet-set definition: the kernel
                       steers like the software RSS of a replay)

The control process opens every worker's sockets and joins each fanout group
in slot order before the fork (the member index is the join order, and the
steering program returns a worker index), and holds them to the end: a
worker that dies keeps its place in the group, frames for it queue in its
ring, and its replacement (Session.respawn_worker) inherits the same sockets
and goes on where it stopped.  Time is the monotonic clock everywhere:
the workers stamp each batch with it, the control process runs periodic
handlers with it.  There is no sequential reference mode live: `workers=0`
runs one worker.  The hot path is C (_core/pktio_afpacket.c).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from nfos import _core
from nfos.io.bpf import compile_steering
from nfos.runtime.session import Session, WorkerDied, read_counters

FRAME_SIZE = 2048          # ring frame: the largest frame a worker takes, with its ring header
RING_HEADROOM = 96         # tpacket3 header + sockaddr_ll + alignment before the frame
L2_OVERHEAD = 18           # Ethernet header + one VLAN tag on top of the MTU
START_TIMEOUT_S = 20.0

SIOCGIFFLAGS, SIOCGIFMTU, SIOCETHTOOL = 0x8913, 0x8921, 0x8946
IFF_UP = 0x1
SOL_PACKET, PACKET_VNET_HDR = 263, 15
ETHTOOL_GFLAGS, ETHTOOL_GGRO, ETH_FLAG_LRO = 0x25, 0x2B, 1 << 15


class LiveError(Exception):
    """A live run cannot start or went wrong; the message is one sentence."""


@dataclass
class Interface:
    name: str
    index: int
    mtu: int
    up: bool
    gro: bool | None    # None: unknown (no ethtool ioctl)
    lro: bool | None

    @property
    def max_frame(self) -> int:
        return self.mtu + L2_OVERHEAD


def parse_ifaces(specs: Sequence[str]) -> dict[str, str]:
    """``["lan=eth1,wan=eth2"]`` or ``["lan=eth1", "wan=eth2"]`` -> {device: interface}."""
    out: dict[str, str] = {}
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            dev, sep, ifname = part.partition("=")
            dev, ifname = dev.strip(), ifname.strip()
            if not sep or not dev or not ifname:
                raise LiveError(f"--iface {part}: give each as DEVICE=INTERFACE (e.g. lan=eth1)")
            if dev in out:
                raise LiveError(f"--iface: device {dev} is given twice ({out[dev]} and {ifname})")
            out[dev] = ifname
    return out


def _ifreq(sock: socket.socket, request: int, name: str, tail: bytes = b"\0" * 24) -> bytes:
    return fcntl.ioctl(sock.fileno(), request, struct.pack("16s", name.encode()) + tail)


def _ethtool_value(sock: socket.socket, name: str, cmd: int) -> int | None:
    buf = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
    try:
        _ifreq(sock, SIOCETHTOOL, name, struct.pack("P", ctypes.addressof(buf)) + b"\0" * 16)
    except OSError:
        return None
    return struct.unpack_from("II", buf.raw)[1]


def interface_info(name: str) -> Interface:
    """Index, MTU, up/down and GRO/LRO of interface `name` in this network namespace."""
    if len(name) >= 16 or "/" in name or not name:
        raise LiveError(f"{name!r} is not a valid interface name")
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        raise LiveError(f"interface {name} does not exist (in this network namespace)") from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack_from("H", _ifreq(s, SIOCGIFFLAGS, name), 16)[0]
        mtu = struct.unpack_from("i", _ifreq(s, SIOCGIFMTU, name), 16)[0]
        gro = _ethtool_value(s, name, ETHTOOL_GGRO)
        lflags = _ethtool_value(s, name, ETHTOOL_GFLAGS)
    return Interface(name, index, mtu, bool(flags & IFF_UP), None if gro is None else bool(gro),
                     None if lflags is None else bool(lflags & ETH_FLAG_LRO))


def offloads_supported() -> bool:
    """Whether packet sockets carry the kernel's offload metadata (PACKET_VNET_HDR):
    GSO super-frames then stay whole and checksums left to offload keep their request."""
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    except OSError:
        return False
    return True


def check_interfaces(ifaces: Mapping[str, str], devices: Sequence[str],
                     frame_size: int = FRAME_SIZE,
                     offloads: bool = True) -> tuple[dict[str, Interface], list[str]]:
    """Validate the device -> interface map; returns the interfaces and warnings.  Raises LiveError.

    ``offloads``: the sockets carry offload metadata (:func:`offloads_supported`); then only
    LRO gets a warning, else GRO too (its merged frames would be oversize)."""
    unknown = [d for d in ifaces if d not in devices]
    if unknown:
        raise LiveError(f"--iface {unknown[0]}=...: the NF has no device {unknown[0]!r} "
                        f"(its devices: {', '.join(devices)})")
    missing = [d for d in devices if d not in ifaces]
    if missing:
        raise LiveError(f"the NF device {missing[0]!r} has no interface: add --iface {missing[0]}=IFACE")
    seen: dict[str, str] = {}
    for dev, ifname in ifaces.items():
        if ifname in seen:
            raise LiveError(f"interface {ifname} is given twice (devices {seen[ifname]} and {dev})")
        seen[ifname] = dev
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError:
        raise LiveError("live interfaces need root or CAP_NET_RAW "
                        "(opening an AF_PACKET socket was refused)") from None
    infos: dict[str, Interface] = {}
    warnings: list[str] = []
    room = frame_size - RING_HEADROOM
    for dev in devices:
        info = interface_info(ifaces[dev])
        if not info.up:
            raise LiveError(f"interface {info.name} is down (ip link set {info.name} up)")
        if info.max_frame > room:
            raise LiveError(f"interface {info.name} has MTU {info.mtu}, larger than the ring frame size allows "
                            f"({room - L2_OVERHEAD} with {frame_size}-byte frames); lower it "
                            f"(ip link set {info.name} mtu 1500)")
        if offloads:
            if info.lro:
                warnings.append(f"LRO is on for {info.name}: the NIC merges segments in ways the kernel cannot "
                                f"always split again (Linux turns LRO off on forwarding interfaces), and a merged "
                                f"frame without a segment size is counted as oversize; turn it off (ethtool -K "
                                f"{info.name} lro off)")
        else:
            merged = [n for n, on in (("gro", info.gro), ("lro", info.lro)) if on]
            if merged:
                warnings.append(f"{'/'.join(m.upper() for m in merged)} is on for {info.name} and this kernel's "
                                f"packet sockets have no offload headers: merged frames are larger than the MTU, "
                                f"counted as oversize and not forwarded; turn it off (ethtool -K {info.name} "
                                f"{' '.join(m + ' off' for m in merged)})")
        infos[dev] = info
    return infos, warnings


@dataclass
class User:
    """Who a live run becomes once its sockets are open (``--user``)."""

    name: str
    uid: int
    gid: int


def lookup_user(name: str) -> User:
    """``--user NAME`` (or a numeric uid), checked before anything starts.  Raises LiveError."""
    import pwd

    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise LiveError(f"--user {name}: no such user") from None
    if os.geteuid() != 0:
        raise LiveError(f"--user {name}: changing user needs root (this run is uid {os.geteuid()})")
    return User(pw.pw_name, pw.pw_uid, pw.pw_gid)


#: imported before the change of user: afterwards the interpreter's own files may be out of reach
#: (a Python under /root), and these are imported lazily on the way out (the memory figures,
#: joining the workers, the summary's table, an exit handler's traceback)
_LATE_IMPORTS = ("resource", "json", "traceback", "linecache", "multiprocessing.connection", "rich._emoji_codes")


def drop_privileges(user: User, parent: int = 0) -> None:
    """Become ``user`` for good: no supplementary groups, its group and uid (real, effective and
    saved), so no capability is left.  A worker re-arms its death with ``parent`` (the change
    of user clears it)."""
    import importlib

    for mod in _LATE_IMPORTS:
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    os.setgroups([])
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    if parent:
        _core.die_with_parent(parent)


def _open_worker(user: User | None, parent: int, slot: int) -> None:
    """In a forked worker (first or replacement): take over its slot's ring sockets (opened and
    joined by the control process), then (``--user``) change user if still root: a replacement
    is forked after the control process changed user."""
    try:
        _core.live_take()
        if user is not None and (os.geteuid(), os.getuid()) != (user.uid, user.uid):
            drop_privileges(user, parent)
    except (OSError, RuntimeError) as e:
        _core.live_fail(f"worker {slot}: {e}")
        os._exit(3)


# ----------------------------------------------------------------- counters
def _scalar(value: Any) -> int:
    """A counter's total: a per-device list or a per-cause dict summed."""
    if isinstance(value, dict):
        return sum(value.values())
    return sum(value) if isinstance(value, list) else int(value)


#: the counters of the --stats-interval line: every summed and live counter of counters.def
LINE_COUNTERS = tuple(name for name, _n, agg, _doc in _core.COUNTERS if agg in ("sum", "live"))
RATES = ("packets_in", "packets_out")   # shown per second; the others as counts


def _snapshot(session: Session) -> dict[str, Any]:
    """Every worker's counters (and the control process's) at one moment."""
    return {"t": time.monotonic(), "workers": [dict(r) for r in session.slot_counters()],
            "control": read_counters(session.control_slot)}


def interval_stats(prev: dict[str, Any], cur: dict[str, Any], since_start: float) -> dict[str, Any]:
    """What happened between two snapshots: for each counter of LINE_COUNTERS its count in the
    interval (``<name>``) over every slot, ``<name>_per_s`` for the rates, and per worker."""
    dt = max(cur["t"] - prev["t"], 1e-9)

    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        d: dict[str, Any] = {name: _scalar(b[name]) - _scalar(a[name]) for name in LINE_COUNTERS}
        d.update({f"{name}_per_s": d[name] / dt for name in RATES})
        d["packet_sets_live"] = b["packet_sets_live"]
        return d

    per = [delta(a, b) for a, b in zip(prev["workers"], cur["workers"], strict=True)]
    ctl = delta(prev["control"], cur["control"])
    out: dict[str, Any] = {"t": since_start, "interval_s": dt}
    out.update({name: sum(p[name] for p in per) + ctl[name] for name in LINE_COUNTERS})
    out.update({f"{name}_per_s": out[name] / dt for name in RATES})
    out["per_worker"] = per
    return out


def format_line(s: dict[str, Any]) -> str:
    """The per-interval line: the rates, every other counter that moved, then each worker's
    rates; each under its counters.def name (or the line alias the list gives it)."""
    label = _core.COUNTER_ALIASES["line"]
    rates = " ".join(f"{label.get(name, name)} {s[f'{name}_per_s']:,.0f}/s" for name in RATES)
    moved = " ".join(f"{label.get(name, name)} {s[name]:,}" for name in LINE_COUNTERS
                     if name not in RATES and s[name])
    per = " ".join(f"w{i} " + " ".join(f"{label.get(name, name)} {p[f'{name}_per_s']:,.0f}/s" for name in RATES)
                   for i, p in enumerate(s["per_worker"]))
    return f"nfos: {s['t']:7.1f}s {rates}" + (f" {moved}" if moved else "") + f" | {per}"


def prometheus_families(workers: Sequence[dict[str, Any]], devices: Sequence[str]) -> list[tuple]:
    """(name, "counter" | "gauge", doc, label names, [(label values, value)]) per metric: every
    summed and live counter of ``_core.COUNTERS`` (exposed as nfos_<name>_total) and every
    per-worker gauge (nfos_<name>), per worker; per device or per abort cause where the
    counter is an array.  ``workers``: the workers' ``_core.slot_stats()``."""
    alias = _core.COUNTER_ALIASES["prometheus"]
    out = []
    for name, _length, agg, doc in _core.COUNTERS:
        if agg == "internal":
            continue
        labels, samples = ["worker"], []
        for i, r in enumerate(workers):
            v = r[name]
            if isinstance(v, dict):
                samples += [([str(i), k], n) for k, n in v.items()]
            elif isinstance(v, list):
                samples += [([str(i), devices[d]], n) for d, n in enumerate(v)]
            else:
                samples.append(([str(i)], v))
        v0 = workers[0][name] if workers else 0
        if isinstance(v0, (dict, list)):
            labels.append("cause" if isinstance(v0, dict) else "device")
        out.append((f"nfos_{alias.get(name, name)}", "gauge" if agg == "gauge" else "counter", doc, labels, samples))
    return out


class _Metrics:
    """Prometheus exposition of the latest snapshot (read by the server's thread on a scrape)."""

    def __init__(self, port: int, devices: Sequence[str], addr: str = "127.0.0.1") -> None:
        try:
            import prometheus_client
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError:
            raise LiveError("--metrics-port needs prometheus_client: pip install 'nfos[live]'") from None
        self._counter, self._gauge = CounterMetricFamily, GaugeMetricFamily
        self.devices = list(devices)
        self.latest: dict[str, Any] | None = None
        self.registry = prometheus_client.CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        try:
            started = prometheus_client.start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            raise LiveError(f"--metrics-port {port} on {addr}: {e.strerror or e}") from None
        self.server = started[0] if isinstance(started, tuple) else None

    def collect(self):
        snap = self.latest
        if snap is None:
            return
        for name, kind, doc, labels, samples in prometheus_families(snap["workers"], self.devices):
            m = (self._counter if kind == "counter" else self._gauge)(name, doc, labels=labels)
            for values, v in samples:
                m.add_metric(values, v)
            yield m

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# ---------------------------------------------------------------------- run
def run_live(nf_path: str, ifaces: Mapping[str, str], workers: int | None = None,
             params: dict[str, str] | Sequence[str] | None = None, stats_interval: float | None = None,
             metrics_port: int | None = None, on_stats: Callable[[dict[str, Any]], None] | None = None,
             duration: float | None = None, batch: int = 32, check: bool = True,
             frame_size: int = FRAME_SIZE, say: Callable[[str], None] | None = None,
             metrics_addr: str = "127.0.0.1", user: str | None = None, watchdog: float = 0.0) -> dict[str, Any]:
    """Run the NF at ``nf_path`` on ``ifaces`` ({device: interface}) until Ctrl-C, SIGTERM or ``duration``.

    ``metrics_port`` serves Prometheus on ``metrics_addr`` (loopback unless told
    otherwise); ``user``: every process becomes that user once its packet
    sockets are open (no capability left); ``watchdog``: name a worker stuck in
    one handler call that long (0: off).

    Every ``stats_interval`` seconds the interval's counters go to ``on_stats``
    (default: one line printed).  Returns the summary (as ``nfos run --in``,
    plus ``mode``, ``interfaces`` and the ring/TX counters).  User errors
    raise LiveError (or the loader's LoadError) with one sentence.
    """
    say = say or (lambda line: print(line, flush=True))
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 0:
        raise LiveError("--workers must be >= 0")
    if workers == 0:
        say("nfos: note: live runs have no sequential reference mode; running 1 worker")
        workers = 1
    if stats_interval is not None and stats_interval <= 0:
        raise LiveError("--stats-interval must be positive")
    if duration is not None and duration <= 0:
        raise LiveError("--duration must be positive")
    as_user = lookup_user(user) if user is not None else None
    stop_requested: list[int] = []

    def on_signal(signum, frame):
        stop_requested.append(signum)

    old_handlers = {}
    if threading_main():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, on_signal)
    session = None
    metrics = None
    try:
        # real time: no barriers; the control process runs periodic handlers (see _serve)
        session = Session(nf_path, workers, params, batch=batch, collect_output=False, check=check, sync=False,
                          watchdog=watchdog)
        nf = session.nf
        devices = list(nf.devices)
        offloads = offloads_supported()
        infos, warnings = check_interfaces(ifaces, devices, frame_size, offloads)
        for w in warnings:
            say(f"nfos: warning: {w}")
        now = time.monotonic_ns()
        session.init(start_time_ns=now, periodic_base_ns=now)
        session.open_rings(1, 64)   # start / stop flags only: no replay rings
        _core.live_setup(workers, frame_size=frame_size, offloads=offloads)
        for d, dev in enumerate(devices):
            try:
                _core.live_open_tx(d, infos[dev].name)
            except OSError as e:
                raise LiveError(f"cannot send on {e}") from None
        progs = [compile_steering(defn, nf.proto_mask(), workers) for defn in nf.key_definitions()]
        for d, dev in enumerate(devices):   # every worker's ring socket, joined in slot order
            try:
                _core.live_open(d, infos[dev].name, progs[d], infos[dev].max_frame)
            except OSError as e:
                raise LiveError(f"cannot start: {e}") from None
        if metrics_port is not None:
            metrics = _Metrics(metrics_port, devices, metrics_addr)
        session.start(worker_setup=partial(_open_worker, as_user, os.getpid()))
        _wait_running(session, stop_requested)
        if as_user is not None:   # every socket is open: the workers' (and this process's send-only ones)
            drop_privileges(as_user)
        where = ", ".join(f"{d}={infos[d].name}" for d in devices)
        say(f"nfos: ready: {nf.name} on {where}, {workers} worker{'s' if workers > 1 else ''} (Ctrl-C stops)")
        t0 = time.monotonic()
        wall = _serve(session, t0, stop_requested, stats_interval, duration,
                      on_stats or (lambda s: say(format_line(s))), metrics, say)
        session.halt()   # a worker stuck in a handler call is killed after a short grace
        session.run_exit_handler()
        total = sum(r["packets_in"] for r in session.slot_counters())
        return session.summarize(wall, total, {
            "mode": "live", "interfaces": {d: infos[d].name for d in devices},
            "stopped_by": ("duration" if not stop_requested else signal.Signals(stop_requested[0]).name),
        }, live=True)
    finally:
        if metrics is not None:
            metrics.close()
        if session is not None:
            try:
                session.stop_workers()
            except Exception:
                pass
            _core.live_close()
            session.close()
        for sig, h in old_handlers.items():
            signal.signal(sig, h)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _wait_running(session: Session, stop_requested: list[int]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while _core.live_running() < session.workers:
        err = _core.live_error()
        if err:
            raise LiveError(f"cannot start: {err}")
        dead = session.dead_workers()
        if dead:
            time.sleep(0.05)   # its message may still be on the way
            err = _core.live_error()
            raise LiveError(f"cannot start: {err}" if err else
                            f"worker {dead[0]} exited while starting (exit code {session.procs[dead[0]].exitcode})")
        if stop_requested:
            raise KeyboardInterrupt
        if time.monotonic() > deadline:
            raise LiveError(f"the workers did not start within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.005)


def _serve(session: Session, t0: float, stop_requested: list[int], stats_interval: float | None,
           duration: float | None, on_stats: Callable[[dict[str, Any]], None], metrics: _Metrics | None,
           say: Callable[[str], None]) -> float:
    """The control loop: periodic handlers, counters, stop conditions.  Returns the run's seconds."""
    intervals = [iv for _, iv in session.periodics()]
    tick = 0.01 if not intervals else min(0.01, max(0.001, min(intervals) / 4e9))
    prev = _snapshot(session)
    warned_link = False
    next_stats = t0 + stats_interval if stats_interval else None
    next_metrics = t0
    end = t0 + duration if duration else None
    while not stop_requested:
        session.run_periodics(time.monotonic_ns())
        now = time.monotonic()
        seen = len(session.recoveries)
        try:
            session.check_workers()   # a dead worker is replaced in its place in the fanout groups
        except WorkerDied as e:
            raise LiveError(str(e)) from None
        for r in session.recoveries[seen:]:
            code = r["exit_code"]
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            say(f"nfos: warning: worker {r['worker']} died ({how}"
                f"{', in ' + r['handler'] if r['handler'] else ''}) and was respawned; "
                f"{r['packets_lost']} packet(s) of its batch in flight lost")
        if now >= next_metrics:
            snap = _snapshot(session)
            if metrics is not None:
                metrics.latest = snap
            if not warned_link and any(r["link_errors"] for r in snap["workers"]):
                warned_link = True
                say("nfos: warning: an interface reported an error (did it go down?); "
                    "frames are lost while it is down")
            next_metrics = now + 0.5
        if next_stats is not None and stats_interval and now >= next_stats:
            cur = _snapshot(session)
            on_stats(interval_stats(prev, cur, now - t0))
            prev = cur
            next_stats += stats_interval
            if next_stats < now:
                next_stats = now + stats_interval
        if end is not None and now >= end:
            break
        time.sleep(tick)
    return time.monotonic() - t0
