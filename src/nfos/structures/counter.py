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
    record,
)
from nfos.structures.distributed import stale_read_diagnosis, staleness_ns


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
        return stale_read_diagnosis(c, info, params, "sum every shard", "added to one", "a shard")
