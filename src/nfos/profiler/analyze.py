"""Scalability profiler (paper §4.6): why does my NF not scale, and what do I change?

Input: the run's counters and the conflict records the workers left in the
arena (one per abort: the structure and element, what this transaction did
to it and at which NF line, what the other worker did and at which line).
Output: a :class:`Profile` — totals, aborts per NF source line, and conflict
causes ranked by aborts, each with the recipe (a parameter to change) of the
paper's Tables 3-5.

Attribution: an abort involves the line whose access aborted and the line
whose committed write it met; both are counted for the line table.  A
conflict is classified by its structure: the profiler looks up the class of
the structure's kind (``nfos.structures.base.structure_class``) and asks it
(``classify``) for the operation pair, the cause and the recipe — the
paper's Tables 3-5, each structure's own.  Only the aborts that are no
conflicts are named here: handler errors and an oversized transaction.  A
record also names the handler the transaction ran (handlers.def), so an
oversized transaction is told by its cause: a batch of packets (a smaller
``--batch``), or one periodic handler or control-process transaction that
scans more than one transaction holds (it ran irrevocably at once: scan less
per run, or nothing to do if it is rare).  Irrevocable fallbacks are counted
too.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nfos import _core
from nfos.structures.base import Conflict, StructInfo, structure_class

#: record layout from _core.conflicts() (the fields of nfos.structures.base.Conflict)
Record = tuple[str, int, int, str, str, int, int, int, str, int, int, int]
#: the NF's handlers by handlers.def name; "periodic": the schedule (Session.handler_functions)
Handlers = Mapping[str, Callable[..., object] | Sequence[Callable[..., object]] | None]
#: how a profile names the transactions of each handler kind
_HANDLER_WORDS = {name: "a control-process transaction" if name == "transact" else f"@nf.{name}"
                  for name, _doc in _core.HANDLERS}
#: the handlers that run in a worker's batches (a too-large batch splits; one packet goes irrevocable)
PACKET_HANDLERS = ("packet", "new_packet_set", "expired", "orphan", "malformed")
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


def handler_label(c: Conflict, handlers: Handlers | None, nf_file: str) -> str:
    """How a profile names the handler of a conflict record: "@nf.periodic report (nf.py:40)";
    a structure's housekeeping by its method; the kind alone when the function is unknown."""
    word = _HANDLER_WORDS.get(c.handler, c.handler)
    fn: object = None
    if handlers is not None:
        entry = handlers.get(c.handler)
        if c.handler == "periodic" and isinstance(entry, Sequence):
            fn = entry[c.handler_index] if 0 <= c.handler_index < len(entry) else None
        else:
            fn = entry
    if fn is None:
        return word
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__name__", "?")
    if code is None:   # a structure's housekeeping (a C method), e.g. Allocator.expire
        owner = getattr(getattr(fn, "__self__", None), "info", None)
        what = f"{getattr(owner, 'label', type(getattr(fn, '__self__', fn)).__name__)}.{name}"
        return f"the housekeeping {what}" if c.handler == "periodic" else f"{word} {what}"
    where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    if nf_file and os.path.basename(code.co_filename) == os.path.basename(nf_file):
        where = f"{os.path.basename(nf_file)}:{code.co_firstlineno}"
    return f"{word} {name} ({where})"


def classify(rec: Record, info: StructInfo | None, params: dict[str, object],
             handlers: Handlers | None = None, nf_file: str = "") -> tuple[str, str, str, str, str]:
    """(ops, cause in words, recipe, parameter, where) of one conflict record; `where` names the
    element or bucket, and is listed after the cause when records are grouped."""
    ops, cause, recipe, parameter, *where = _classify(rec, info, params, handlers, nf_file)
    return (ops, cause, recipe, parameter, where[0] if where else "")


def _too_large(c: Conflict, handlers: Handlers | None, nf_file: str) -> tuple[str, ...]:
    """An oversized transaction, named by what ran it, with a recipe that fits."""
    who = handler_label(c, handlers, nf_file)
    if c.handler in PACKET_HANDLERS:   # a batch: it split at once; a single packet ran irrevocably
        return ("-", f"the transaction of a batch ({who}) outgrew its descriptor (too many objects or bytes); "
                     "it was split, and a single packet too large ran irrevocably",
                "use a smaller --batch, or touch fewer structure elements per packet", "batch")
    if c.handler == "transact":
        return ("-", f"{who} touched more objects than one transaction holds; it ran irrevocably "
                     "(workers paused meanwhile)",
                "none needed if rare (an inspection); else touch fewer elements per transaction", "")
    alone = "it ran irrevocably (workers paused meanwhile)"
    if c.handler == "exit":
        alone = "it ran irrevocably"
    return ("-", f"the transaction of {who} touched more objects than one transaction holds; {alone}",
            "scan fewer elements per run (e.g. a slice of the buckets each period), or none needed if rare",
            "")


def _classify(rec: Record, info: StructInfo | None, params: dict[str, object],
              handlers: Handlers | None = None, nf_file: str = "") -> tuple[str, ...]:
    c = Conflict(*rec)
    if c.cause == "handler_error":
        return ("-", "a handler raised (not a conflict); the packet was dropped",
                "fix the exception (see the logged traceback)", "")
    if c.cause == "too_large":
        return _too_large(c, handlers, nf_file)
    cls = structure_class(info.kind) if info is not None else None
    if cls is None or info is None:
        return (f"{c.own_op} vs {c.other_op}", f"conflict ({c.cause})", "-", "")
    if c.other_op == "none" and cls.unknown_other_op:   # the other side's write record was not readable
        c = c._replace(other_op=cls.unknown_other_op)
    d = cls.classify(c, info, params)
    return (d.ops, d.cause, d.recipe, d.parameter, d.where)


def analyze(stats: dict[str, Any], records: list[Record], lost: int, registry: Mapping[int, StructInfo],
            nf_path: str, params: dict[str, object], handlers: Handlers | None = None) -> Profile:
    """Turn the counters and conflict records of a run into a ranked Profile.  ``handlers``
    (Session.handler_functions) lets an oversized transaction be named by its handler and line."""
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
        ops, cause, recipe, parameter, where = classify(rec, info, params, handlers, nf_path)
        if rec[0] in ("too_large", "handler_error"):   # not about the structure met
            info = None
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
