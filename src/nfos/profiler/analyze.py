"""Scalability profiler (paper §4.6): why does my NF not scale, and what do I change?

Input: the run's counters and the conflict records the workers left in the
arena (one per abort: the structure and element, what this transaction did
to it and at which NF line, what the other worker did and at which line).
Output: a :class:`Profile` — totals, aborts per NF source line, and conflict
causes ranked by aborts, each with the recipe (a parameter to change) of the
paper's Tables 3-5.

Attribution: an abort involves the line whose access aborted and the line
whose committed write it met; both are counted for the line table.  Causes
are classified from the structure kind and the operation pair:

- Vector, same element → keep the hot element in a DistributedObj;
- DistributedObj, read (a merge) vs update → raise ``max_staleness``;
- Map, same key → keep that value in a DistributedObj; keys colliding in a
  bucket → more ``buckets`` or another ``hash``;
- Allocator, allocate vs allocate on the pools → a pool ran dry and stole:
  over-provision ``capacity``; refreshes on one allocated list → raise
  ``refresh_interval``;
- and the aborts that are no conflicts: handler errors, an oversized
  transaction.  Irrevocable fallbacks are counted too.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from nfos.structures.base import StructInfo

#: record layout from _core.conflicts()
Record = tuple[str, int, int, str, str, int, int, int, int, int]
IMBALANCE_HINT = 1.5


@dataclass
class LineRow:
    file: str
    line: int
    code: str
    aborts: int
    share: float


@dataclass
class CauseRow:
    structure: str
    created_at: str
    ops: str
    cause: str
    recipe: str
    parameter: str
    aborts: int
    share: float
    lines: list[int] = field(default_factory=list)


@dataclass
class Profile:
    nf: str
    workers: int
    transactions: int
    commits: int
    aborts: int
    abort_rate: float
    irrevocable: int
    imbalance: float
    imbalance_hint: str
    per_worker: list[dict[str, int]]
    sampled_aborts: int
    lost_records: int
    lines: list[LineRow]
    causes: list[CauseRow]
    throughput_pps: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fmt_duration(ns: int) -> str:
    from nfos.params import Duration

    return str(Duration(ns))


def _param_hint(setting: str, value: object, params: dict[str, object]) -> str:
    """The NF parameter that likely sets this structure setting: same value, a shared word."""
    words = set(setting.split("_"))
    for name, v in params.items():
        if type(v) is not bool and v == value and words & set(name.split("_")):
            return f", set by --param {name}"
    return ""


def classify(rec: Record, info: StructInfo | None, params: dict[str, object]) -> tuple[str, str, str, str, str]:
    """(ops, cause in words, recipe, parameter, where) of one conflict record; `where` names the
    element or bucket, and is listed after the cause when records are grouped."""
    ops, cause, recipe, parameter, *where = _classify(rec, info, params)
    return (ops, cause, recipe, parameter, where[0] if where else "")


def _classify(rec: Record, info: StructInfo | None, params: dict[str, object]) -> tuple[str, ...]:
    cause, _sid, index, own_op, other_op, _other_slot, _own_site, _other_site, own_detail, other_detail = rec
    if cause == "handler_error":
        return ("-", "a handler raised (not a conflict); the packet was dropped",
                "fix the exception (see the logged traceback)", "")
    if cause == "too_large":
        return ("-", "the transaction outgrew its descriptor (too many objects or bytes)",
                "use a smaller --batch, or touch fewer structure elements per packet", "batch")
    if info is None:
        return (f"{own_op} vs {other_op}", f"conflict ({cause})", "-", "")
    if other_op == "none":   # the other side's write record was not readable: infer it
        other_op = {"DistributedObj": "update", "Vector": "write", "Map": "set"}.get(info.kind, other_op)
    ops = f"{own_op} vs {other_op}"
    name = f"'{info.name}'" if info.name else "it"
    where = f"({info.created_at})"
    p = info.params
    if info.kind == "Vector":
        return (ops, "two transactions used the same element and at least one wrote it",
                f"keep the hot element(s) of {name} {where} in an nfos.DistributedObj "
                "(updates never conflict)", "DistributedObj", f"[{index}]")
    if info.kind == "DistributedObj":
        st = p.get("max_staleness", 0)
        if own_op == "read":
            return (ops, "a read had to merge every replica (its cache was older than max_staleness) "
                         "while another worker updated one",
                    f"raise max_staleness of {name} {where}, now {_fmt_duration(st)}"
                    f"{_param_hint('max_staleness', st, params)}",
                    "max_staleness")
        return (ops, f"conflict on a replica ({cause})",
                f"raise max_staleness of {name} {where}, now {_fmt_duration(st)}", "max_staleness")
    if info.kind == "Map":
        if own_detail and own_detail == other_detail:
            return (ops, "two transactions used the same key and at least one wrote it",
                    f"keep the value of this hot key of {name} {where} in an nfos.DistributedObj", "DistributedObj")
        b, h = p.get("buckets"), p.get("hash")
        return (ops, "different keys collide in one bucket",
                f"give {name} {where} more buckets (now {b}{_param_hint('buckets', b, params)}) or another "
                f"hash (now {h}: try {'mult' if h == 'crc32c' else 'crc32c'}, or a seed)", "buckets",
                f"bucket {index}")
    if info.kind == "Allocator":
        cap, ri = p.get("capacity"), p.get("refresh_interval", 0)
        is_head = index >= (cap or 0)
        if "refresh" in (own_op, other_op):
            return (ops, "refreshes of indexes on the same per-worker list (its tail and head)",
                    f"raise refresh_interval of {name} {where}, now {_fmt_duration(ri)}"
                    f"{_param_hint('refresh_interval', ri, params)}",
                    "refresh_interval")
        if own_op == "allocate" and is_head:
            return (ops, "a worker's pool ran dry and it took indexes from another pool",
                    f"over-provision capacity of {name} {where}, now {cap}{_param_hint('capacity', cap, params)}",
                    "capacity")
        return (ops, f"conflict on {'a pool' if is_head else 'an index'} ({own_op} vs {other_op})",
                f"over-provision capacity of {name} {where}, now {cap}", "capacity")
    return (ops, f"conflict ({cause})", "-", "")


def analyze(stats: dict[str, Any], records: list[Record], lost: int, registry: Mapping[int, StructInfo],
            nf_path: str, params: dict[str, object]) -> Profile:
    """Turn the counters and conflict records of a run into a ranked Profile."""
    try:
        with open(nf_path) as f:
            source = f.read().splitlines()
    except OSError:
        source = []
    base = os.path.basename(nf_path)
    n = len(records)
    line_counts: Counter[int] = Counter()
    groups: dict[tuple, list[Record]] = defaultdict(list)
    hot: dict[tuple, Counter[str]] = defaultdict(Counter)
    for rec in records:
        for site in {rec[6], rec[7]}:
            if site:
                line_counts[site] += 1
        info = registry.get(rec[1])
        ops, cause, recipe, parameter, where = classify(rec, info, params)
        key = (info.label if info else "-", info.created_at if info else "-", ops, cause, recipe, parameter)
        groups[key].append(rec)
        if where:
            hot[key][where] += 1
    lines = [LineRow(base, ln, source[ln - 1].strip() if 0 < ln <= len(source) else "", c, c / n if n else 0.0)
             for ln, c in sorted(line_counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    causes = []
    for key, recs in groups.items():
        structure, created, ops, cause, recipe, parameter = key
        if hot[key]:   # the hottest elements / buckets, most aborts first
            top = sorted(hot[key].items(), key=lambda kv: (-kv[1], kv[0]))[:5]
            cause = f"{cause}: {', '.join(w for w, _ in top)}"
        sites = sorted({s for r in recs for s in (r[6], r[7]) if s})
        causes.append(CauseRow(structure, created, ops, cause, recipe, parameter, len(recs),
                               len(recs) / n if n else 0.0, sites))
    causes.sort(key=lambda c: -c.aborts)
    imbalance = float(stats.get("imbalance", 1.0))
    hint = (f"load imbalance {imbalance:.2f} > {IMBALANCE_HINT}: define finer-grained packet sets"
            if imbalance > IMBALANCE_HINT else "")
    return Profile(
        nf=stats.get("nf", base), workers=stats["workers"], transactions=stats["transactions"],
        commits=stats["commits"], aborts=stats["aborts"], abort_rate=stats["abort_rate"],
        irrevocable=stats.get("irrevocable", 0), imbalance=imbalance, imbalance_hint=hint,
        per_worker=[{"packets": w["packets"], "transactions": w["transactions"], "aborts": w["aborts"]}
                    for w in stats["per_worker"]],
        sampled_aborts=n, lost_records=lost, lines=lines, causes=causes,
        throughput_pps=stats.get("throughput_pps", 0.0))
