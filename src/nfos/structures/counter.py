"""Counter: a sharded integer counter (the paper's DistributedObj, specialised to one sum).

``add(n=1)`` writes only this worker's shard, so adds never conflict.
``value()`` (or ``read()``) merges every shard into a cached sum, reused for
``max_staleness``; a merge reads every shard and so conflicts with any
concurrent add — raising ``max_staleness`` is the recipe.  Sums are signed
64-bit (they wrap around).
"""

from __future__ import annotations

from nfos import _core
from nfos.structures.base import (
    Conflict,
    Diagnosis,
    StructInfo,
    Structure,
    fmt_duration,
    param_hint,
    record,
)
from nfos.structures.distributed import staleness_ns


class Counter(_core.CounterBase, Structure):
    """``Counter(max_staleness=0)``: ``c.add(n=1)`` in any handler, ``c.value()`` reads the total."""

    kind = "Counter"
    operations = ("add", "read")
    unknown_other_op = "add"

    def __init__(self, max_staleness: object = 0) -> None:
        ns = staleness_ns(max_staleness)
        super().__init__(ns)
        self.max_staleness = ns
        self.info = record(self, "Counter", max_staleness=ns)

    def __repr__(self) -> str:
        return f"<Counter max_staleness={self.max_staleness}ns ({self.info.created_at})>"

    @classmethod
    def classify(cls, c: Conflict, info: StructInfo, params: dict[str, object]) -> Diagnosis:
        ops, st = f"{c.own_op} vs {c.other_op}", info.params.get("max_staleness", 0)
        recipe = f"raise max_staleness of {info.called}, now {fmt_duration(st)}"
        if c.own_op == "read":
            return Diagnosis(ops, "a read had to sum every shard (its cache was older than max_staleness) "
                                  "while another worker added to one",
                             recipe + param_hint("max_staleness", st, params), "max_staleness")
        return Diagnosis(ops, f"conflict on a shard ({c.cause})", recipe, "max_staleness")
