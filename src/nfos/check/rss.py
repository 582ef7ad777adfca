"""Can the NIC's RSS alone keep each packet set on one core? (``nfos check --rss NF.py --nic IFACE``)

For every device's packet-set definition this reads what the NIC hashes
(``ethtool -n IFACE rx-flow-hash tcp4|udp4``), its key, hash function and
input transformation, and indirection table (``ethtool -x IFACE``), and
answers:

* **NIC RSS** keeps a packet set on one queue if, for each flow type the
  definition covers, the NIC hashes a non-empty subset of the key's fields
  (hashing fewer fields only groups sets more coarsely; hashing a field that
  is not in the key spreads one set over several queues).  A definition that
  reverses fields on another device (a session seen from both sides) also
  needs a symmetric hash: a key whose Toeplitz windows repeat every 16 bits
  (``6d:5a`` repeated) or the ``symmetric-xor`` input transformation.
  Fields no NIC hashes (``eth.src``: ethtool has no L2SA) are named.
* ICMP, when a definition's protocols list "icmp", is keyed by what no NIC
  hashes: an echo by its identifier, an error by the header it quotes (an
  error from a router carries the router's address outside).  NIC RSS
  cannot keep these with their sessions; the report says so on an ``icmp``
  line, and the verdict covers the other protocols only.
* **Kernel fanout** (what ``nfos run --iface`` uses) always can: the
  definition compiles to a classic-BPF PACKET_FANOUT program that computes
  the software RSS; its limits are those of nfos.io.bpf (IPv6, a second VLAN
  tag and tunnels' inner headers are not looked at: such packets are orphans).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from nfos import _core
from nfos.io.bpf import compile_steering, key_window

FIELD_NAMES = {_core.KF_ETH_SRC: "eth.src", _core.KF_ETH_DST: "eth.dst", _core.KF_IP_SRC: "ip.src",
               _core.KF_IP_DST: "ip.dst", _core.KF_PROTO: "proto", _core.KF_SPORT: "l4.sport",
               _core.KF_DPORT: "l4.dport"}
# ethtool's rx-flow-hash lines -> key field names (ethtool -N letters: m v t s d f n)
ETHTOOL_FIELDS = {"L2DA": "eth.dst", "VLAN tag": "vlan", "L3 proto": "proto", "IP SA": "ip.src",
                  "IP DA": "ip.dst", "L4 bytes 0 & 1 [TCP/UDP src port]": "l4.sport",
                  "L4 bytes 2 & 3 [TCP/UDP dst port]": "l4.dport"}
LETTERS = {"eth.dst": "m", "vlan": "v", "proto": "t", "ip.src": "s", "ip.dst": "d", "l4.sport": "f",
           "l4.dport": "n"}
NEVER_HASHED = {"eth.src": "no NIC hashes it (ethtool has no L2SA)"}
SWAP = {"ip.src": "ip.dst", "ip.dst": "ip.src", "l4.sport": "l4.dport", "l4.dport": "l4.sport",
        "eth.src": "eth.dst", "eth.dst": "eth.src"}


class RssCheckError(Exception):
    """The check cannot run (no ethtool, no such interface); one sentence."""


@dataclass
class NicRss:
    """What ethtool reports about one interface's RSS (None: not supported / unknown)."""
    name: str
    supported: bool
    reason: str = ""
    hashed: dict[str, set[str] | None] = field(default_factory=dict)   # flow type -> fields
    rings: int | None = None
    table: list[int] = field(default_factory=list)
    key: bytes | None = None
    hfunc: str | None = None
    symmetric_xfrm: bool = False

    @property
    def symmetric_key(self) -> bool:
        return self.key is not None and symmetric_key(self.key)

    @property
    def symmetric(self) -> bool:
        return self.symmetric_xfrm or (self.symmetric_key and self.hfunc in (None, "toeplitz"))


def symmetric_key(key: bytes) -> bool:
    """Toeplitz over (src ip, dst ip, sport, dport) gives the same hash both ways with this key."""
    if len(key) < 16:
        return False
    return (all(key_window(key, b) == key_window(key, b + 32) for b in range(32))
            and all(key_window(key, 64 + b) == key_window(key, 80 + b) for b in range(16)))


def parse_flow_hash(text: str) -> set[str] | None:
    """``ethtool -n IF rx-flow-hash T`` output -> the hashed fields (None: not reported)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "use these fields for computing Hash flow key" in ln), None)
    if start is None:
        return None
    out: set[str] = set()
    for ln in lines[start + 1:]:
        if ln == "None":
            break
        if ln in ETHTOOL_FIELDS:
            out.add(ETHTOOL_FIELDS[ln])
        elif ln.endswith(":"):
            break
        else:
            out.add(ln)   # a field this checker does not know (GTP TEID, ...): named as is
    return out


def parse_rxfh(text: str) -> tuple[int | None, list[int], bytes | None, str | None, bool]:
    """``ethtool -x IF`` output -> (rings, indirection table, key, hash function, symmetric-xor)."""
    rings = None
    table: list[int] = []
    key = None
    hfunc = None
    xfrm = False
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"RX flow hash indirection table for \S+ with (\d+) RX ring", line)
        if m:
            rings, section = int(m.group(1)), "table"
            continue
        if line.startswith("RSS hash key"):
            section = "key"
            continue
        if line.startswith("RSS hash function"):
            section = "hfunc"
            continue
        if line.startswith("RSS input transformation"):
            section = "xfrm"
            continue
        if section == "table":
            m = re.match(r"\d+:\s*(.*)", line)
            if m:
                table += [int(v) for v in m.group(1).split()]
        elif section == "key" and re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2})*", line):
            key = bytes(int(b, 16) for b in line.split(":"))
        elif section == "hfunc":
            m = re.match(r"(\S+): on", line)
            if m:
                hfunc = m.group(1)
        elif section == "xfrm":
            m = re.match(r"(symmetric-xor|symmetric-or-xor): on", line)
            if m:
                xfrm = True
    return rings, table, key, hfunc, xfrm


def _run_ethtool(args: Sequence[str]) -> tuple[int, str]:
    exe = shutil.which("ethtool")
    if exe is None:
        raise RssCheckError("ethtool is not installed (apt-get install ethtool)")
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10)
    return r.returncode, r.stdout + r.stderr


def read_nic(name: str, flow_types: Sequence[str],
             ethtool: Callable[[Sequence[str]], tuple[int, str]] = _run_ethtool) -> NicRss:
    """Ask ethtool about interface `name`."""
    rc, text = ethtool(["-x", name])
    if rc != 0 and re.search(r"no such device|does not exist", text, re.I):
        raise RssCheckError(f"interface {name} does not exist (in this network namespace)")
    if rc != 0:
        why = text.strip().splitlines()[-1] if text.strip() else f"ethtool -x exited with {rc}"
        return NicRss(name, False, why)
    rings, table, key, hfunc, xfrm = parse_rxfh(text)
    nic = NicRss(name, True, rings=rings, table=table, key=key, hfunc=hfunc, symmetric_xfrm=xfrm)
    for ft in flow_types:
        rc, text = ethtool(["-n", name, "rx-flow-hash", ft])
        nic.hashed[ft] = parse_flow_hash(text) if rc == 0 else None
    if rings is None and not any(nic.hashed.values()):
        nic.supported, nic.reason = False, "no RSS indirection table or hash fields reported"
    return nic


def flow_types(proto_mask: int) -> list[str]:
    """The ethtool flow types a definition's protocols fall in (tcp4, udp4; ip4 for the others).

    A listed "icmp" is not among them: ICMP is then keyed by its identifier or the header an
    error quotes, which no NIC hashes (see the module doc)."""
    if not proto_mask:
        return ["tcp4", "udp4", "ip4"]
    out = [ft for bit, ft in ((1, "tcp4"), (2, "udp4"), (8, "ip4")) if proto_mask & bit]
    return list(dict.fromkeys(out))


@dataclass
class DeviceReport:
    device: str
    key: list[str] | None
    nic: str | None
    nic_ok: bool
    fanout_ok: bool
    lines: list[str]
    icmp: bool = False   # ICMP is keyed by identifier / quoted header: NIC RSS cannot steer it


def analyse(devices: Sequence[str], defs: Sequence[list[int] | None], proto_mask: int,
            nics: Mapping[str, NicRss], workers: int = 2) -> list[DeviceReport]:
    """One report per device: can NIC RSS (on that device's interface) and kernel fanout keep sets on one core?"""
    keys = {d: [FIELD_NAMES[f] for f in defn] if defn is not None else None for d, defn in zip(devices, defs,
                                                                                               strict=True)}
    fts = flow_types(proto_mask)
    reports = []
    for d, defn in zip(devices, defs, strict=True):
        key = keys[d]
        nic = nics.get(d)
        lines: list[str] = []
        shown = " ".join(key) if key else "none"
        if key and ("l4.sport" in key or "l4.dport" in key) and "proto" not in key:
            shown += " (+ IP protocol)"
        nic_ok = key is None
        if key is None:
            lines.append("no packet sets on this device: every packet is an orphan, any queue will do")
        elif nic is None:
            lines.append("NIC RSS: no interface given for this device")
            nic_ok = False
        elif not nic.supported:
            lines.append(f"NIC RSS ({nic.name}): no — the interface has no RSS ({nic.reason}); "
                         "a veth or a single-queue NIC: only kernel fanout can steer here")
            nic_ok = False
        else:
            problems, notes = [], []
            for f in key:
                if f in NEVER_HASHED:
                    notes.append(f"{f}: {NEVER_HASHED[f]}")
            for ft in fts:
                h = nic.hashed.get(ft)
                if h is None:
                    problems.append(f"{ft}: the NIC does not report its hash fields")
                    continue
                if not h:
                    problems.append(f"{ft}: the NIC hashes no field (all such packets on one queue)")
                    continue
                extra = sorted(h - set(key))
                if extra:
                    want = "".join(LETTERS[f] for f in key if f in LETTERS and f != "vlan")
                    problems.append(f"{ft}: the NIC hashes {', '.join(extra)}, not in the key, so a packet set "
                                    f"spreads over queues (ethtool -N {nic.name} rx-flow-hash {ft} {want})")
                else:
                    coarse = "" if h == {f for f in key if f in LETTERS} else " (fewer fields: coarser, still correct)"
                    notes.append(f"{ft}: hashes {', '.join(sorted(h))}: all in the key{coarse}")
            partners = [o for o in devices if o != d and keys[o] is not None and keys[o] != key]
            if partners:
                hashed = set().union(*(nic.hashed.get(ft) or set() for ft in fts))
                needs = any(SWAP.get(f) in hashed and f in hashed for f in key)
                if needs and not nic.symmetric:
                    problems.append(f"the definition is bidirectional ({', '.join(partners)} reverses it): it needs "
                                    f"a symmetric hash, and {nic.name}'s key is not symmetric and symmetric-xor is "
                                    f"off (ethtool -X {nic.name} xfrm symmetric-xor, or a 6d:5a-repeated key)")
                elif needs:
                    notes.append("bidirectional definition: the NIC's hash is symmetric "
                                 f"({'symmetric-xor' if nic.symmetric_xfrm else 'symmetric key'})")
                others = {nics[o].name for o in partners if o in nics}
                if others - {nic.name}:
                    notes.append(f"the reverse direction arrives on {', '.join(sorted(others - {nic.name}))}: "
                                 "both NICs need the same key, function and indirection table, and the same "
                                 "queue -> core mapping")
            nic_ok = not problems
            if proto_mask & 4:
                notes.append("icmp: echo is keyed by its identifier and an error by the header it quotes; no "
                             "NIC hashes these, so NIC RSS cannot keep them with their sessions (kernel fanout "
                             "does); the verdict covers the other protocols")
            head = f"NIC RSS ({nic.name}, {nic.rings or '?'} queues, {nic.hfunc or '?'} hash): "
            lines.append(head + ("yes" if nic_ok else "no"))
            lines += [f"  - {p}" for p in problems] + [f"  - {n}" for n in notes]
        try:
            prog = compile_steering(defn, proto_mask, max(workers, 1))
            lines.append(f"kernel fanout: yes ({len(prog) // 8}-instruction classic-BPF program; not steered "
                         "by the key: IPv6, a second VLAN tag, tunnels' inner headers — such packets are "
                         "orphans; non-IPv4 orphans follow the kernel's flow hash)")
            fanout_ok = True
        except ValueError as e:
            lines.append(f"kernel fanout: no ({e})")
            fanout_ok = False
        reports.append(DeviceReport(d, key, nic.name if nic else None, nic_ok, fanout_ok,
                                    [f"{d}: key {shown}"] + ["  " + ln for ln in lines],
                                    icmp=key is not None and bool(proto_mask & 4)))
    return reports


def check_rss(nf_path: str, nic_specs: Sequence[str], params: Sequence[str] = (),
              ethtool: Callable[[Sequence[str]], tuple[int, str]] = _run_ethtool) -> list[DeviceReport]:
    """Load the NF, read each interface's RSS set-up, and report per device.

    ``nic_specs``: ``["eth1"]`` (one NIC for every device) or ``["lan=eth1", "wan=eth2"]``.
    """
    from nfos.runtime.session import Session

    s = Session(nf_path, 0, list(params), collect_output=False)
    try:
        s.init()
        nf = s.nf
        devices, defs, mask = list(nf.devices), nf.key_definitions(), nf.proto_mask()
    finally:
        s.close()
    mapping: dict[str, str] = {}
    for spec in nic_specs:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            dev, sep, name = part.partition("=")
            if not sep:
                mapping.update({d: part for d in devices if d not in mapping})
            elif dev not in devices:
                raise RssCheckError(f"--nic {part}: the NF has no device {dev!r} (its devices: {', '.join(devices)})")
            else:
                mapping[dev] = name
    cache: dict[str, NicRss] = {}
    fts = flow_types(mask)
    for name in sorted(set(mapping.values())):
        cache[name] = read_nic(name, fts, ethtool)
    return analyse(devices, defs, mask, {d: cache[n] for d, n in mapping.items()})
