"""Serializability checked: record a replay's commit order, re-execute it sequentially.

``nfos run --record-commits FILE`` (``replay(..., record_commits=FILE)``) records every
committed transaction of every worker: its place in the serial order, its worker, its handler
kind (handlers.def), its starting clock and what it ran (the trace indexes of its packets, the
packet sets an expiry sweep expired, or the periodic handler).  ``nfos verify FILE``
(:func:`verify`) loads the same NF with the same parameters and worker count, re-executes those
transactions one at a time in the recorded order in one process, each as its worker (that
worker's packet-set table, its replicas, shards, budgets and pools) at its recorded clock, then
compares the output (per device as multisets, then each slot's in its commit order) and the final
bytes of every structure with the run's.  docs/reliability.md explains the order rule and the limits.

The file is JSON lines (FORMAT, VERSION): a header object, one object per transaction (in the
order the workers committed them, per worker), and an end object.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections import Counter as Multiset
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nfos import _core

FORMAT = "nfos-commits"
VERSION = 1
#: CommitRec (worker_loop.h): order, clock, seq, writer, handler, n, worker, index, item[BATCH_MAX]
COMMIT_REC = struct.Struct(f"<QQQBBBBI{_core.BATCH_MAX}I")
if COMMIT_REC.size != _core.COMMIT_REC_SIZE:   # pragma: no cover (a C change not made here)
    raise ImportError(f"nfos.runtime.verify reads {COMMIT_REC.size}-byte commit records, the C core writes "
                      f"{_core.COMMIT_REC_SIZE}")
HANDLER_NAMES = [name for name, _doc in _core.HANDLERS]
#: at most this many lines per kind of difference, then a count
MAX_LINES = 20


def records_capacity(packets: int) -> int:
    """Records room per slot for a trace of ``packets`` packets: every packet and every
    expired set in a transaction of its own, and periodic handlers."""
    return 2 * packets + 65536


def frame_digest(frame: bytes) -> str:
    return hashlib.sha256(frame).hexdigest()[:24]


def structure_digests(registry: Any) -> list[dict[str, Any]]:
    """The loaded NF's structures in creation order: name and sha256 of their state (every object
    whose payload is not all zero, with its place: _core.struct_dump)."""
    parts: dict[int, list[bytes]] = {}
    for sid, data in _core.struct_dump():
        parts.setdefault(sid, []).append(data)
    out = []
    for sid, chunks in parts.items():
        try:
            label = registry[sid].label
        except KeyError:
            label = f"structure {sid}"
        blob = b"".join(chunks)
        out.append({"name": label, "sha256": hashlib.sha256(blob).hexdigest()})
    return out


def output_digests(outputs: dict[str, list[bytes]]) -> dict[str, list[str]]:
    return {dev: sorted(frame_digest(f) for f in frames) for dev, frames in outputs.items()}


def slot_output_digests(sent: Iterable[tuple[int, str, bytes]]) -> dict[str, dict[str, list[str]]]:
    """Per slot and device, the digests of the frames it sent, in the order it sent them (its
    commit order): {slot: {device: [digest]}}."""
    out: dict[str, dict[str, list[str]]] = {}
    for slot, dev, frame in sent:
        out.setdefault(str(slot), {}).setdefault(dev, []).append(frame_digest(frame))
    return out


def collect_records(nslots: int) -> tuple[list[dict[str, Any]], int]:
    """Every slot's commit records (the run has ended), in per-slot commit order; and how many
    did not fit."""
    recs: list[dict[str, Any]] = []
    lost = 0
    for slot in range(nslots):
        got = _core.commit_records(slot)
        if got is None:
            continue
        data, n_lost = got
        lost += n_lost
        for order, clock, seq, writer, handler, n, worker, index, *items in COMMIT_REC.iter_unpack(data):
            recs.append({"o": order, "w": writer, "k": worker, "s": seq, "h": HANDLER_NAMES[handler],
                         "c": clock, "i": index, "x": list(items[:n])})
    return recs, lost


def write_record(path: str, header: dict[str, Any], recs: list[dict[str, Any]], end: dict[str, Any]) -> None:
    with open(path, "w") as f:
        f.write(json.dumps(dict({"format": FORMAT, "version": VERSION}, **header)) + "\n")
        for r in recs:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
        f.write(json.dumps(dict({"end": True}, **end)) + "\n")


def read_record(path: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """The header, the transactions and the end object of a record file (ValueError if it is not one)."""
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines or lines[0].get("format") != FORMAT:
        raise ValueError(f"{path}: not an nfos commit record (nfos run --record-commits)")
    if lines[0].get("version") != VERSION:
        raise ValueError(f"{path}: commit record version {lines[0].get('version')}, this nfos reads {VERSION}")
    if len(lines) < 2 or not lines[-1].get("end"):
        raise ValueError(f"{path}: the record is truncated (no end line)")
    return lines[0], lines[1:-1], lines[-1]


def serial_order(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order rule: writers by write version; a read-only transaction (order: its snapshot rv)
    after the writer of that version and before the next; ties by worker and its commit order."""
    return sorted(recs, key=lambda r: (r["o"], 0 if r["w"] else 1, r["k"], r["s"]))


def _diff_lines(what: str, recorded: Sequence[str], replayed: Sequence[str]) -> list[str]:
    a, b = Multiset(recorded), Multiset(replayed)
    out = []
    for d in sorted(set(a) | set(b)):
        if a[d] != b[d]:
            out.append(f"{what}: frame {d} sent {a[d]} time(s) by the run, {b[d]} by the sequential re-execution")
    if len(out) > MAX_LINES:
        out = out[:MAX_LINES] + [f"{what}: ... and {len(out) - MAX_LINES} more differing frames"]
    return out


def verify(path: str, load_trace: Callable[[list[str], dict[str, Any]], Any]) -> list[str]:
    """Re-execute the record at ``path`` sequentially in its recorded order; one line per
    violation (empty: the run equals that serial execution).  ``load_trace(devices, header)``
    returns the trace (nfos.io.capture.Trace) the run replayed."""
    from nfos.runtime.replay import trace_devices  # (replay imports this module)
    from nfos.runtime.session import Session

    header, recs, end = read_record(path)
    problems: list[str] = []
    if end.get("lost"):
        problems.append(f"the record is incomplete: {end['lost']} transaction(s) did not fit in the record buffers")
    session = Session(header["nf"], header["workers"], header["params"], batch=header["batch"],
                      collect_output=True)
    try:
        nf = session.nf
        trace = load_trace(list(nf.devices), header)
        devs = trace_devices(trace, nf.name, list(nf.devices))
        if len(trace) != header.get("packets", len(trace)):
            problems.append(f"the trace has {len(trace)} packets, the run replayed {header['packets']}")
        times: list[int] = []
        latest = 0
        for i, t in enumerate(trace.times_ns):   # replay time never goes back (as load_trace does)
            latest = t if i == 0 or t > latest else latest
            times.append(latest)
        wires = trace.wire_lens or [len(f) for f in trace.frames]
        session.init(start_time_ns=times[0] if times else 0)
        _core.replay_io(True)
        sent: list[tuple[int, str, bytes]] = []   # (slot, device, frame) in the serial order

        def take(slot: int) -> None:
            for mask, frame in _core.replay_io(True):
                sent.extend((slot, d, frame) for i, d in enumerate(nf.devices) if mask >> i & 1)

        try:
            packet = HANDLER_NAMES.index("packet")
            for r in serial_order(recs):
                h = HANDLER_NAMES.index(r["h"])
                if h == packet:
                    items: list[Any] = [(trace.frames[i], devs[i], wires[i], times[i], i) for i in r["x"]]
                else:
                    items = list(r["x"])
                if _core.replay_tx(r["k"], h, r["i"], r["c"], items) == 1:
                    problems.append(f"transaction {r['s']} of worker {r['k']} (order {r['o']}): an expiry "
                                    f"sweep's packet sets {r['x']} have not expired in the serial order")
                take(r["k"])
            _core.set_slot(session.control_slot)
            if nf.handlers.exit is not None:
                _core.set_clock(end.get("exit_clock", 0))
                try:
                    _core.run_exit(nf.handlers.exit)
                except Exception as e:
                    session._log_error(e, "@nf.exit")
                take(session.control_slot)
        finally:
            _core.replay_io(False)
        outputs: dict[str, list[bytes]] = {d: [] for d in nf.devices}
        for _slot, dev, frame in sent:
            outputs[dev].append(frame)
        got = output_digests(outputs)
        for dev, recorded in end["outputs"].items():
            problems += _diff_lines(f"output on {dev}", recorded, got.get(dev, []))
        if not problems:   # the same frames: each worker's, in its commit order, in that order too
            mine_by_slot = slot_output_digests(sent)
            for slot, devs in end.get("slot_outputs", {}).items():
                for dev, recorded in devs.items():
                    replayed = mine_by_slot.get(slot, {}).get(dev, [])
                    if recorded != replayed:
                        at = next((i for i, (a, b) in enumerate(zip(recorded, replayed, strict=False)) if a != b),
                                  min(len(recorded), len(replayed)))
                        problems.append(f"output of slot {slot} on {dev}: the same frames in another order "
                                        f"(first difference at its frame {at})")
        mine = structure_digests(session.registry)
        theirs = end["structures"]
        if len(mine) != len(theirs):
            problems.append(f"the NF has {len(mine)} structures now, the run had {len(theirs)}")
        for a, b in zip(theirs, mine, strict=False):
            if a["sha256"] != b["sha256"]:
                problems.append(f"final state of {a['name']} differs (sha256 {a['sha256'][:16]} in the run, "
                                f"{b['sha256'][:16]} re-executed)")
    finally:
        session.close()
    return problems


def record_header(nf_path: str, params: Sequence[str] | dict[str, str] | None, inputs: Sequence[str],
                  workers: int, batch: int, packets: int) -> dict[str, Any]:
    if isinstance(params, dict):
        params = [f"{k}={v}" for k, v in params.items()]
    return {"nf": os.path.abspath(nf_path), "params": list(params or []), "trace": list(inputs),
            "workers": workers, "batch": batch, "packets": packets}
