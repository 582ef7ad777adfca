"""Map: a transactional hash map; conflicts happen only between keys of one bucket.

``Map(key, value, capacity, buckets=None, hash="crc32c", slots=8)``: keys and
values are Record types or scalar types.  ``m.get(k)`` returns the value (a
record view you can write in place, or an int), ``m.set(k, v)`` inserts or
updates and returns the value view, ``m.delete(k)``, ``k in m``, ``m[k]``,
``len(m)`` (reads every worker's entry budget: not for hot paths).  A record
key can also be given as a tuple of its field values.

Limits: ``capacity`` is the number of entries the Map accepts, exactly: the
insert of one more new key raises ``nfos.MapFull`` ("Map 'x' is full
(capacity N entries)"); a delete frees room.  It is counted per worker, as
the Allocator's pools are: each worker (and the control process) has an
entry budget (the capacity split evenly at creation), an insert takes one
from the caller's budget without any conflict, an empty budget steals half
of the richest one.  Separately, each of the ``buckets`` objects holds at
most ``slots`` entries inline, and a key lives only in its own bucket, so a
bucket can fill before the Map does: that also raises ``MapFull`` (naming the
bucket).  ``buckets`` defaults to the next power of two >= capacity (on
average at most one key per bucket when full), which makes a full bucket of
8 rare; raise ``buckets`` if it happens.  Memory is ``buckets`` x ``slots``
entries (pages are backed only when touched).

Recipes: two operations conflict when their keys share a bucket.  The same
key → keep that value in a DistributedObj; different keys (a collision) →
more ``buckets`` or another ``hash`` ("crc32c" or "mult", with ``seed``).
A worker whose entry budget ran dry steals from another's (reading every
budget: a conflict with their inserts) → over-provision ``capacity``.
"""

from __future__ import annotations

from nfos import _core
from nfos.records import Record, is_record_type, scalar_type
from nfos.structures.base import (
    MAX_COUNT,
    Conflict,
    Diagnosis,
    StructInfo,
    Structure,
    check_count,
    param_hint,
    record,
)

HASHES = {"crc32c": 0, "mult": 1}


Layout = tuple[type[Record] | None, int, list[tuple[str, int, int, int]]]


def layout(t: object, what: str) -> Layout:
    """(record type or None, size, [(name, offset, size, kind)]) for the C core."""
    if is_record_type(t):
        fields = [(f.name, f.offset, f.type.size, f.type.kind) for f in t.__nfos_fields__]
        if not fields:
            raise TypeError(f"Map {what} record {t.__name__} has no fields")
        return (t, t.__nfos_size__, fields)
    st = scalar_type(t, f"Map {what}")
    return (None, st.size, [("value", 0, st.size, st.kind)])


class Map(_core.MapBase, Structure):
    """A fixed-capacity transactional hash map (see the module doc)."""

    kind = "Map"
    operations = ("get", "set", "delete")
    unknown_other_op = "set"

    def __init__(self, key: object, value: object, capacity: int, buckets: int | None = None,
                 hash: str = "crc32c", seed: int = 0, slots: int = 8) -> None:
        check_count(capacity, "Map capacity")
        if hash not in HASHES:
            raise ValueError(f"Map hash must be one of {', '.join(HASHES)}, got {hash!r}")
        if buckets is None:   # on average one key per bucket at full capacity
            buckets = 1 << max(0, (capacity - 1).bit_length())
        if check_count(buckets, "Map buckets", MAX_COUNT + 1) & (buckets - 1):
            raise ValueError(f"Map buckets must be a power of two, got {buckets}")
        if not 1 <= slots <= 64:
            raise ValueError("Map slots (entries per bucket) must be 1..64")
        super().__init__(layout(key, "key"), layout(value, "value"), buckets, slots, HASHES[hash], seed, capacity)
        self.key_type, self.value_type = key, value
        self.info = record(self, "Map", capacity=capacity, buckets=buckets, hash=hash, seed=seed, slots=slots)

    def __repr__(self) -> str:
        return f"<Map {self.info.name or ''} buckets={self.buckets} ({self.info.created_at})>"

    @classmethod
    def classify(cls, c: Conflict, info: StructInfo, params: dict[str, object]) -> Diagnosis:
        ops = f"{c.own_op} vs {c.other_op}"
        b, h, cap = info.params.get("buckets"), info.params.get("hash"), info.params.get("capacity")
        if b is not None and c.element >= b:   # an entry budget (reported as buckets + slot)
            if "get" in (c.own_op, c.other_op):   # len() reads every budget
                return Diagnosis(ops, "len() read every worker's entry budget while another worker inserted "
                                      "or deleted a key", f"call len({info.called}) less often (e.g. from a "
                                      "periodic handler)", "", f"budget of slot {c.element - b}")
            return Diagnosis(ops, "a worker's entry budget ran dry and it took entries from another's",
                             f"over-provision capacity of {info.called}, now {cap}{param_hint('capacity', cap, params)}",
                             "capacity", f"budget of slot {c.element - b}")
        if c.own_detail and c.own_detail == c.other_detail:   # the key hashes the operations carried
            return Diagnosis(ops, "two transactions used the same key and at least one wrote it",
                             f"keep the value of this hot key of {info.called} in an nfos.DistributedObj",
                             "DistributedObj")
        return Diagnosis(ops, "different keys collide in one bucket",
                         f"give {info.called} more buckets (now {b}{param_hint('buckets', b, params)}) or another "
                         f"hash (now {h}: try {'mult' if h == 'crc32c' else 'crc32c'}, or a seed)", "buckets",
                         f"bucket {c.element}")
