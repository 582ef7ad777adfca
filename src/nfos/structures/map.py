"""Map: a transactional hash map; conflicts happen only between keys of one bucket.

``Map(key, value, capacity, buckets=None, hash="crc32c", slots=8)``: keys and
values are Record types or scalar types.  ``m.get(k)`` returns the value (a
record view you can write in place, or an int), ``m.set(k, v)`` inserts or
updates and returns the value view, ``m.delete(k)``, ``k in m``, ``m[k]``.
A record key can also be given as a tuple of its field values.

Recipes: two operations conflict when their keys share a bucket.  The same
key → keep that value in a DistributedObj; different keys (a collision) →
more ``buckets`` or another ``hash`` ("crc32c" or "mult", with ``seed``).
A full bucket raises ``nfos.MapFull`` (a ``nfos.TableFull``).
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
        super().__init__(layout(key, "key"), layout(value, "value"), buckets, slots, HASHES[hash], seed)
        self.key_type, self.value_type, self.capacity = key, value, capacity
        self.info = record(self, "Map", capacity=capacity, buckets=buckets, hash=hash, seed=seed, slots=slots)

    def __repr__(self) -> str:
        return f"<Map {self.info.name or ''} buckets={self.buckets} ({self.info.created_at})>"

    @classmethod
    def classify(cls, c: Conflict, info: StructInfo, params: dict[str, object]) -> Diagnosis:
        ops = f"{c.own_op} vs {c.other_op}"
        if c.own_detail and c.own_detail == c.other_detail:   # the key hashes the operations carried
            return Diagnosis(ops, "two transactions used the same key and at least one wrote it",
                             f"keep the value of this hot key of {info.called} in an nfos.DistributedObj",
                             "DistributedObj")
        b, h = info.params.get("buckets"), info.params.get("hash")
        return Diagnosis(ops, "different keys collide in one bucket",
                         f"give {info.called} more buckets (now {b}{param_hint('buckets', b, params)}) or another "
                         f"hash (now {h}: try {'mult' if h == 'crc32c' else 'crc32c'}, or a seed)", "buckets",
                         f"bucket {c.element}")
