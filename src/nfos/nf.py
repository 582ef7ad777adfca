"""The NF object: devices, parameters, packet sets and handlers of one network function.

An NF file creates exactly one ``nfos.NF`` and registers handlers with its
decorators.  Nothing runs at import time: the runtime resolves parameters,
calls ``@nf.init`` once in the control process, then forks the workers.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nfos import _core
from nfos.params import Duration, Params, resolve_params
from nfos.records import Record, is_record_type
from nfos.structures.base import check_count

_FIELD_IDS = {
    ("eth", "src"): _core.KF_ETH_SRC,
    ("eth", "dst"): _core.KF_ETH_DST,
    ("ipv4", "src"): _core.KF_IP_SRC,
    ("ipv4", "dst"): _core.KF_IP_DST,
    ("l4", "sport"): _core.KF_SPORT,
    ("l4", "dport"): _core.KF_DPORT,
}
_FIELD_BYTES = {_core.KF_ETH_SRC: 6, _core.KF_ETH_DST: 6, _core.KF_IP_SRC: 4, _core.KF_IP_DST: 4,
                _core.KF_PROTO: 1, _core.KF_SPORT: 2, _core.KF_DPORT: 2}
_PROTO_BITS = {"tcp": 1, "udp": 2, "icmp": 4, "other": 8}
_DEFAULT_CAPACITY = 1 << 18

# handler types: a decorator returns the function it registers, unchanged
InitHandler = TypeVar("InitHandler", bound=Callable[[Params], object])
Handler0 = TypeVar("Handler0", bound=Callable[[], object])                    # exit, periodic
PacketHandler = TypeVar("PacketHandler", bound=Callable[[_core.Packet], object])   # new_packet_set, orphan, malformed
SetHandler = TypeVar("SetHandler", bound=Callable[[_core.Packet, Any], object])    # packet (pkt, state)
StateHandler = TypeVar("StateHandler", bound=Callable[[Any], object])              # expired (state)
_H = TypeVar("_H", bound=Callable[..., object])


class NFError(Exception):
    """A mistake in the NF's declarations; the message is one line."""


@dataclass(frozen=True)
class DeviceSet:
    """The packet-set fields of one input device, in key order (see :func:`on`)."""

    device: str
    fields: tuple[int, ...]
    names: tuple[str, ...]


def on(device: str, **layers: Sequence[str] | bool) -> DeviceSet:
    """Packet-set key fields for packets arriving on ``device``, in order.

    ``on("lan", ipv4=("src", "dst"), l4=("sport", "dport"))``; layers are
    ``eth`` (src/dst MACs), ``ipv4`` (src/dst), ``l4`` (sport/dport) and
    ``proto=True`` (the IP protocol).  Reversing the order on the other
    device makes one packet set of both directions of a session.
    """
    ids: list[int] = []
    names: list[str] = []
    for layer, spec in layers.items():
        if layer == "proto":
            if spec:
                ids.append(_core.KF_PROTO)
                names.append("proto")
            continue
        if isinstance(spec, str):
            spec = (spec,)
        for f in spec:  # type: ignore[union-attr]
            f = {"src_port": "sport", "dst_port": "dport"}.get(f, f)
            if layer == "l4":
                f = {"src": "sport", "dst": "dport"}.get(f, f)
            key = (layer, f)
            if key not in _FIELD_IDS:
                raise NFError(f"on({device!r}): unknown field {layer}.{f} "
                              "(eth: src/dst, ipv4: src/dst, l4: sport/dport, proto=True)")
            ids.append(_FIELD_IDS[key])
            names.append(f"{layer}.{f}")
    if not ids:
        raise NFError(f"on({device!r}) names no header field")
    if sum(_FIELD_BYTES[i] for i in ids) + 1 > _core.MAX_KEY:
        raise NFError(f"on({device!r}): the key is longer than {_core.MAX_KEY} bytes")
    return DeviceSet(device, tuple(ids), tuple(names))


@dataclass
class PacketSets:
    per_device: dict[str, DeviceSet]
    protocols: tuple[str, ...] | None
    state: type[Record] | None
    expiry_ns: int
    capacity: int


@dataclass
class Handlers:
    init: Callable[[Params], object] | None = None
    exit: Callable[[], object] | None = None
    new_packet_set: Callable[[_core.Packet], object] | None = None
    packet: Callable[[_core.Packet, Any], object] | None = None
    expired: Callable[[Any], object] | None = None
    orphan: Callable[[_core.Packet], object] | None = None
    malformed: Callable[[_core.Packet], object] | None = None
    periodic: list[tuple[Callable[[], object], int]] = field(default_factory=list)   # resolved ns
    periodic_specs: list[tuple[Callable[[], object], object]] = field(default_factory=list)   # as declared


class _State:
    """``nf.state``: the NF's structures, settable only during ``@nf.init``.

    A plain class, and its ``__dict__`` is never touched: CPython (3.11) then keeps the
    attributes inline and specialises ``nf.state.table`` in handlers (~8 ns instead of ~23 ns
    for a SimpleNamespace or a materialised ``__dict__``).  ``freeze()`` ends the set-up."""

    _frozen = False

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen:
            raise AttributeError("nf.state is set in @nf.init; handlers change the structures, "
                                 "not the namespace")
        info = getattr(value, "info", None)
        if info is not None and hasattr(info, "struct_id") and not info.name:
            info.name = name
        object.__setattr__(self, name, value)

    def freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)

    def __repr__(self) -> str:
        names = [n for n in dir(self) if not n.startswith("_") and n != "freeze"]
        return "namespace(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"


class NF:
    """A network function: ``nf = nfos.NF("firewall", devices=["lan", "wan"], params={...})``."""

    def __init__(self, name: str, devices: Sequence[str] | Callable[[Params], Sequence[str]] = ("lan", "wan"),
                 params: dict[str, object] | None = None) -> None:
        self.name = name
        self.declared_params: dict[str, object] = dict(params or {})
        self._devices_of = devices if callable(devices) else (lambda _p, d=tuple(devices): d)
        self.handlers = Handlers()
        self.sets: PacketSets | None = None
        self.state = _State()
        self.resolve({})

    def resolve(self, given: dict[str, str] | Sequence[str]) -> None:
        """Set the parameters (declared defaults overridden by ``given``) and the devices.

        ``devices`` may be a function of the parameters, e.g. a bridge with
        ``devices=lambda p: [f"p{i}" for i in range(p.ports)]``.
        """
        self.params = resolve_params(self.name, self.declared_params, given)
        devices = tuple(self._devices_of(self.params))
        if not devices or len(set(devices)) != len(devices) or not all(isinstance(d, str) for d in devices):
            raise NFError(f"NF {self.name!r}: devices must be distinct names, got {list(devices)!r}")
        if len(devices) > 32:
            raise NFError(f"NF {self.name!r}: at most 32 devices")
        self.devices: tuple[str, ...] = devices
        self.handlers.periodic = [(fn, self._interval_ns(spec)) for fn, spec in self.handlers.periodic_specs]

    # -------------------------------------------------------------- handlers
    def _set(self, kind: str, fn: _H) -> _H:
        if getattr(self.handlers, kind) is not None:
            raise NFError(f"NF {self.name!r} already has an @nf.{kind} handler")
        setattr(self.handlers, kind, fn)
        return fn

    def init(self, fn: InitHandler) -> InitHandler:
        """``@nf.init``: ``fn(params)`` once, before the workers start; builds ``nf.state``."""
        return self._set("init", fn)

    def exit(self, fn: Handler0) -> Handler0:
        """``@nf.exit``: ``fn()`` once at the end of the run, after every worker has stopped,
        alone (nothing to conflict with: it never retries)."""
        return self._set("exit", fn)

    def new_packet_set(self, fn: PacketHandler) -> PacketHandler:
        """``@nf.new_packet_set``: ``fn(pkt)`` for the first packet of an unknown packet set."""
        return self._set("new_packet_set", fn)

    def packet(self, fn: SetHandler) -> SetHandler:
        """``@nf.packet``: ``fn(pkt, state)`` for a packet of a registered packet set."""
        return self._set("packet", fn)

    def expired(self, fn: StateHandler) -> StateHandler:
        """``@nf.expired``: ``fn(state)`` when a packet set has been idle for its expiry."""
        return self._set("expired", fn)

    def orphan(self, fn: PacketHandler) -> PacketHandler:
        """``@nf.orphan``: ``fn(pkt)`` for a packet that matches no packet-set definition."""
        return self._set("orphan", fn)

    def malformed(self, fn: PacketHandler) -> PacketHandler:
        """``@nf.malformed``: ``fn(pkt)`` for a frame the parser rejects (README: which frames).

        The packet has ``dev``, ``len``, ``frame``, ``payload`` (what follows the Ethernet
        header) and ``eth`` (if its 14 bytes are there), no IP or L4 view; the handler may
        ``send``, ``flood`` or ``drop`` it (a transparent NF forwards it).  It runs in the
        worker, in the batch's transaction, as ``@nf.orphan`` does; the frame still counts as
        ``malformed``.  Without this handler such frames are dropped (and counted).
        """
        return self._set("malformed", fn)

    def periodic(self, interval: object) -> Callable[[Handler0], Handler0]:
        """``@nf.periodic(nfos.seconds(1))``: ``fn()`` every interval.

        With virtual time (a replay, the test harness) the call due at T runs at a
        barrier: after every packet before T (and every expiry up to T), before any
        packet at or after T, alone in one worker — what a sequential run sees.  Live,
        it runs in the control process on the monotonic clock, beside the workers.
        ``interval`` is a duration, or the name of a duration parameter
        (``@nf.periodic("report_every")`` with ``--param report_every=5s``).
        """
        ns = self._interval_ns(interval)

        def deco(fn: Handler0) -> Handler0:
            self.handlers.periodic_specs.append((fn, interval))
            self.handlers.periodic.append((fn, ns))
            return fn

        return deco

    def _interval_ns(self, interval: object) -> int:
        what = "periodic interval"
        if isinstance(interval, str):
            if interval not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                raise NFError(f"@nf.periodic({interval!r}): no parameter {interval!r} (parameters: {known})")
            what = f"periodic interval (parameter {interval!r})"
            interval = getattr(self.params, interval)
        ns = _duration_ns(interval, what)
        if ns <= 0:
            raise NFError(f"a {what} must be > 0")
        return ns

    # ----------------------------------------------------------- packet sets
    def packet_sets(self, *definitions: DeviceSet, protocols: Sequence[str] | None = None,
                    state: type[Record] | None = None, expiry: object = 0,
                    capacity: int = _DEFAULT_CAPACITY) -> None:
        """Declare the packet sets: one :func:`on` per input device that has them.

        ``protocols`` restricts them to ("tcp", "udp", "icmp", "other"); other
        packets are orphans.  Listing "icmp" makes ICMP belong to sessions:
        an echo request or reply is keyed with its identifier in place of both
        ports (request and reply share a key, reversed like ports), and an
        error (destination unreachable, time exceeded, parameter problem) by
        the packet it quotes, its source and destination fields swapped (that
        packet went the other way), protocol the quoted one: it reaches the
        set of the session it is about.  An error quoting less than the key
        needs (an IPv4 header; with ports, 8 bytes of TCP, UDP or echo of a
        packet that is not a later fragment), or a protocol not listed, is an
        orphan.  Other ICMP is keyed by its addresses if the key has no ports,
        else an orphan.  Without "icmp", ICMP is keyed as before (an orphan
        with ports).  ``state`` is the Record type of a set's state,
        ``expiry`` the idle time after which a set expires (0 = never),
        ``capacity`` the packet sets each worker can hold.
        """
        if self.sets is not None:
            raise NFError(f"NF {self.name!r} declares its packet sets twice")
        per_device: dict[str, DeviceSet] = {}
        for d in definitions:
            if not isinstance(d, DeviceSet):
                raise NFError("packet_sets() takes nfos.on(...) definitions")
            if d.device not in self.devices:
                raise NFError(f"packet set on unknown device {d.device!r} (devices: {', '.join(self.devices)})")
            if d.device in per_device:
                raise NFError(f"two packet-set definitions for device {d.device!r}")
            per_device[d.device] = d
        lens = {sum(_FIELD_BYTES[i] for i in d.fields) for d in per_device.values()}
        if len(lens) > 1:
            raise NFError("packet-set definitions of different devices must have keys of the same shape "
                          "(the same fields, possibly in another order)")
        if protocols is not None:
            bad = [p for p in protocols if p not in _PROTO_BITS]
            if bad:
                raise NFError(f"unknown protocol(s) {bad}; use {', '.join(_PROTO_BITS)}")
        if state is not None and not is_record_type(state):
            raise NFError("state= must be an nfos.Record subclass")
        try:
            check_count(capacity, "packet-set capacity")
        except ValueError as e:
            raise NFError(str(e)) from None
        self.sets = PacketSets(per_device, tuple(protocols) if protocols else None, state,
                               _duration_ns(expiry, "expiry"), capacity)

    def packet_sets_from_file(self, path: str | os.PathLike[str], *, state: type[Record] | None = None,
                              expiry: object = 0, capacity: int = _DEFAULT_CAPACITY) -> None:
        """Load the definitions from a JSON or TOML file in the NFOS paper's format (§4.3)."""
        defs, protocols = load_packet_set_file(path, self.devices)
        self.packet_sets(*defs, protocols=protocols, state=state, expiry=expiry, capacity=capacity)

    # ----------------------------------------------------- handler helpers
    def register(self, pkt: _core.Packet) -> Record | None:
        """Create the packet set of ``pkt`` (in ``@nf.new_packet_set``); returns its state.

        Raises ``nfos.TableFull`` when this worker's table is full.
        """
        state: Record | None = _core.register(pkt)   # a view of the NF's state type
        return state

    def emit(self, frame: bytes, dev: str | int | None = None) -> None:
        """Send a new frame on ``dev`` (all devices if None) when the transaction commits."""
        _core.emit(frame, dev)

    # --------------------------------------------------------- runtime use
    def proto_mask(self) -> int:
        if not self.sets or not self.sets.protocols:
            return 0
        mask = 0
        for p in self.sets.protocols:
            mask |= _PROTO_BITS[p]
        return mask

    def key_definitions(self) -> list[list[int] | None]:
        per = self.sets.per_device if self.sets else {}
        return [list(per[d].fields) if d in per else None for d in self.devices]

    def __repr__(self) -> str:
        return f"<nfos.NF {self.name!r} devices={list(self.devices)}>"


def _duration_ns(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise NFError(f"{what} must be a duration >= 0 (nfos.seconds(..), an int of ns), got {value!r}")
    if isinstance(value, Duration) or isinstance(value, int):
        return int(value)
    return int(round(value * 1e9))


# ------------------------------------------------------------- config file

_PAPER_FIELDS = {"src_ip": ("ipv4", "src"), "dst_ip": ("ipv4", "dst"), "src_port": ("l4", "sport"),
                 "dst_port": ("l4", "dport"), "src_mac": ("eth", "src"), "dst_mac": ("eth", "dst")}


def load_packet_set_file(path: str | os.PathLike[str], devices: Sequence[str]) -> tuple[list[DeviceSet], tuple[str, ...] | None]:
    """Parse the paper's packet-set file (``{"cfg": [{"nic": 0, "id": [...]}, ...]}``)."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise NFError(f"{p}: {e.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode()) if p.endswith(".toml") else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise NFError(f"{p}: not valid {'TOML' if p.endswith('.toml') else 'JSON'}: {e}") from None
    groups = doc.get("cfg") if isinstance(doc, dict) else None
    if isinstance(groups, dict):
        groups = [groups]
    if not isinstance(groups, list) or not groups:
        raise NFError(f"{p}: expected a top-level 'cfg' group or list of groups")
    defs: list[DeviceSet] = []
    protocols: set[str] = set()
    for gi, g in enumerate(groups):
        nics = g.get("nic")
        nics = nics if isinstance(nics, list) else [nics]
        layers: dict[str, list[str]] = {}
        for li, layer in enumerate(g.get("id", [])):
            proto = str(layer.get("proto", ""))
            fields = layer.get("hdr fields", [])
            fields = [fields] if isinstance(fields, str) else list(fields)
            if layer.get("layer") not in (2, 3):
                for pr in proto.split("|"):
                    if pr not in ("tcp", "udp"):
                        raise NFError(f"{p}: cfg[{gi}].id[{li}]: layer-4 protocol {pr!r} is not supported "
                                      "(tcp, udp)")
                    protocols.add(pr)
            for fname in fields:
                if fname not in _PAPER_FIELDS:
                    raise NFError(f"{p}: cfg[{gi}].id[{li}]: unknown header field {fname!r}")
                lay, name = _PAPER_FIELDS[fname]
                layers.setdefault(lay, []).append(name)
        for nic in nics:
            if not isinstance(nic, int) or not 0 <= nic < len(devices):
                raise NFError(f"{p}: cfg[{gi}]: nic {nic!r} is not one of the NF's devices 0..{len(devices) - 1}")
            defs.append(on(devices[nic], **layers))
    return defs, tuple(sorted(protocols)) if protocols else None
