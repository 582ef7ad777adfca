"""DistributedObj: a per-worker replicated record, merged on read (paper's mergeable object).

``update()`` returns this worker's replica to change; updates never conflict.
``read()`` returns the merge of all replicas (sum by default, or max/min per
field), cached for ``max_staleness``.  A read that has to merge reads every
replica and so conflicts with any concurrent update; raising
``max_staleness`` is the recipe.
"""

from __future__ import annotations

from nfos import _core
from nfos.records import is_record_type
from nfos.structures.base import (
    Conflict,
    Diagnosis,
    StructInfo,
    Structure,
    fmt_duration,
    param_hint,
    record,
)

_MERGE_OPS = {"sum": 0, "max": 1, "min": 2}


def staleness_ns(value: object) -> int:
    """A staleness in ns: an int is ns (nfos.Duration), a float is seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"max_staleness must be a duration >= 0 (e.g. nfos.millis(0.1)), got {value!r}")
    return int(value) if isinstance(value, int) else int(round(value * 1e9))


class DistributedObj(_core.DistributedObjBase, Structure):
    """``DistributedObj(Record type, merge="sum" | {"field": "max", ...}, max_staleness=0)``."""

    kind = "DistributedObj"
    operations = ("read", "update")
    unknown_other_op = "update"

    def __init__(self, record_type: type, merge: str | dict[str, str] = "sum",
                 max_staleness: object = 0) -> None:
        if not is_record_type(record_type):
            raise TypeError("DistributedObj takes a Record type (class C(nfos.Record): ...)")
        fields = record_type.__nfos_fields__
        ops = merge if isinstance(merge, dict) else {f.name: merge for f in fields}
        unknown = set(ops) - {f.name for f in fields}
        if unknown:
            raise ValueError(f"merge names unknown fields: {', '.join(sorted(unknown))}")
        spec = []
        for f in fields:
            op = ops.get(f.name, "sum")
            if op not in _MERGE_OPS:
                raise ValueError(f"merge for '{f.name}' must be sum, max or min, got {op!r}")
            if f.type.kind == _core.K_BYTES:
                raise TypeError(f"field '{f.name}': byte fields cannot be merged")
            spec.append((f.offset, f.type.kind, _MERGE_OPS[op]))
        ns = staleness_ns(max_staleness)
        super().__init__(record_type, record_type.__nfos_size__, spec, ns)
        self.record_type = record_type
        self.max_staleness = ns
        self.info = record(self, "DistributedObj", max_staleness=ns, merge=ops)

    def __repr__(self) -> str:
        return (f"<DistributedObj of {self.record_type.__name__} max_staleness={self.max_staleness}ns "
                f"({self.info.created_at})>")

    @classmethod
    def classify(cls, c: Conflict, info: StructInfo, params: dict[str, object]) -> Diagnosis:
        return stale_read_diagnosis(c, info, params, "merge every replica", "updated one", "a replica")


def stale_read_diagnosis(c: Conflict, info: StructInfo, params: dict[str, object], read: str, written: str,
                         part: str) -> Diagnosis:
    """The conflicts of a structure replicated per worker and merged on read (DistributedObj,
    Counter): a read that had to ``read`` (its cache older than max_staleness) met a worker
    that ``written``; the recipe is a longer max_staleness."""
    ops, st = f"{c.own_op} vs {c.other_op}", info.params.get("max_staleness", 0)
    recipe = f"raise max_staleness of {info.called}, now {fmt_duration(st)}"
    if c.own_op == "read":
        return Diagnosis(ops, f"a read had to {read} (its cache was older than max_staleness) "
                              f"while another worker {written}",
                         recipe + param_hint("max_staleness", st, params), "max_staleness")
    return Diagnosis(ops, f"conflict on {part} ({c.cause})", recipe, "max_staleness")
