"""Allocator: hands out indexes 0..capacity-1 from per-worker pools, with optional leases.

``Allocator(capacity, lease=None, refresh_interval=0, on_expire=None)``:
``allocate()`` → index or None, ``free(i)``, ``refresh(i)``, ``is_allocated(i)``,
``lease_remaining(i)``.  An index typically keys a Vector of values and sits
in a Map, so an allocator bounds a table and expires its entries: with a
``lease``, an index not refreshed for that long is reclaimed (by the control
process, or lazily by an empty pool) and ``on_expire(index)`` runs in the
same transaction so the NF can drop the dependent state.

Recipes: allocations conflict only when a worker's pool runs dry and it
steals from another pool → over-provision ``capacity``.  A refresh writes its
index's cell (and, once per sweep period, the owner's expiry list), so
refreshes of one index on two workers conflict on the cell → raise
``refresh_interval`` (a refresh younger than it is a read-only no-op; a
lease may then end up to one interval early).
"""

from __future__ import annotations

from collections.abc import Callable

from nfos import _core
from nfos.structures.base import (
    Conflict,
    Diagnosis,
    StructInfo,
    Structure,
    check_count,
    current,
    fmt_duration,
    param_hint,
    record,
)
from nfos.structures.distributed import staleness_ns as duration_ns


def sweep_period(lease_ns: int) -> int:
    """How often expired leases are reclaimed (ns): lease/16, between 1 ms and 1 s.  A refresh
    moves its index in the pool's expiry list only once the list is this far behind it."""
    return min(max(lease_ns // 16, 1_000_000), 1_000_000_000)


class Allocator(_core.AllocatorBase, Structure):
    """Index allocator with per-worker pools and optional leases (see the module doc)."""

    kind = "Allocator"
    operations = ("allocate", "free", "refresh", "expire", "query")

    def __init__(self, capacity: int, lease: object = None, refresh_interval: object = 0,
                 on_expire: Callable[[int], object] | None = None) -> None:
        check_count(capacity, "Allocator capacity")
        lease_ns = 0 if lease is None else duration_ns(lease)
        refresh_ns = duration_ns(refresh_interval)
        if on_expire is not None and not callable(on_expire):
            raise TypeError("on_expire must be a function of the expired index")
        loading = current()   # the NF's registry: its worker count sizes the pools
        sweep = sweep_period(lease_ns)
        super().__init__(capacity, lease_ns, refresh_ns, on_expire, loading.workers, sweep)
        self.lease, self.refresh_interval = lease_ns, refresh_ns
        self.info = record(self, "Allocator", capacity=capacity, lease=lease_ns, refresh_interval=refresh_ns)
        if lease_ns:   # the control process reclaims expired leases this often
            loading.housekeeping[self.info.struct_id] = (self.expire, sweep)

    def __repr__(self) -> str:
        return f"<Allocator {self.info.name or ''} capacity={self.capacity} ({self.info.created_at})>"


    @classmethod
    def classify(cls, c: Conflict, info: StructInfo, params: dict[str, object]) -> Diagnosis:
        ops = f"{c.own_op} vs {c.other_op}"
        cap, ri = info.params.get("capacity"), info.params.get("refresh_interval", 0)
        is_head = c.element >= (cap or 0)   # pool heads are reported as index capacity + slot
        if "refresh" in (c.own_op, c.other_op):
            where = ("refreshes moving indexes in the same per-worker expiry list" if is_head
                     else "refreshes of the same index (its lease cell) or of neighbours in an expiry list")
            return Diagnosis(ops, where,
                             f"raise refresh_interval of {info.called}, now {fmt_duration(ri)}"
                             f"{param_hint('refresh_interval', ri, params)}", "refresh_interval")
        if c.own_op == "allocate" and is_head:
            return Diagnosis(ops, "a worker's pool ran dry and it took indexes from another pool",
                             f"over-provision capacity of {info.called}, now {cap}{param_hint('capacity', cap, params)}",
                             "capacity")
        return Diagnosis(ops, f"conflict on {'a pool' if is_head else 'an index'} ({c.own_op} vs {c.other_op})",
                         f"over-provision capacity of {info.called}, now {cap}", "capacity")
