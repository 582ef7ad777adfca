"""What every structure records about itself, for error messages and the profiler."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field


@dataclass
class StructInfo:
    struct_id: int
    kind: str  # "Vector", "DistributedObj", ...
    created_at: str  # file:line of the constructor call in the NF
    name: str = ""  # attribute name under nf.state, when known
    params: dict[str, object] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind} '{self.name}'" if self.name else f"{self.kind} at {self.created_at}"


#: the largest size, capacity or bucket count of a structure or packet-set table (the C core
#: counts elements in 32 bits and rounds tables up to a power of two)
MAX_COUNT = (1 << 31) - 1


def check_count(value: object, what: str, limit: int = MAX_COUNT) -> int:
    """``value`` if it is an int in 1..limit, else a one-line ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    if value > limit:
        raise ValueError(f"{what} must be at most {limit:,}, got {value:,}")
    return value


#: struct_id -> StructInfo of the NF loaded in this process
registry: dict[int, StructInfo] = {}
#: struct_id -> (fn, interval_ns): housekeeping the control process runs periodically
housekeeping: dict[int, tuple[object, int]] = {}


def internal_periodics() -> list[tuple[object, int]]:
    """Housekeeping of the loaded NF's structures (e.g. reclaiming expired leases)."""
    return list(housekeeping.values())

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def creation_site() -> str:
    """file:line of the first caller outside the nfos package (the NF line)."""
    f = sys._getframe(1)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(_PACKAGE_DIR):
        f = f.f_back
    if f is None:
        return "?"
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"


def record(obj, kind: str, **params: object) -> StructInfo:
    info = StructInfo(obj._struct_id, kind, creation_site(), params=params)
    if not registry:
        housekeeping.clear()   # a new NF is being loaded
    registry[info.struct_id] = info
    return info
