"""What every structure records about itself, and what it tells the profiler.

A structure is a plug-in (docs/structures.md): its C file, its lines in
``structures.def`` and ``operations.def``, and a Python class that derives
from its C base type and from :class:`Structure`, declaring its ``kind`` and
``operations`` (checked against ``_core.OPERATIONS``) and classifying its own
conflicts into a cause and a recipe.  The profiler looks the class up by kind
(:func:`structure_class`); it has no per-structure code.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from nfos import _core


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

    @property
    def called(self) -> str:
        """How a recipe names it: "'name' (file:line)", or "it (file:line)"."""
        return f"{repr(self.name) if self.name else 'it'} ({self.created_at})"


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


# ---------------------------------------------------------------- plug-ins
class Conflict(NamedTuple):
    """One conflict record of ``_core.conflicts()``: what an aborted transaction met."""
    cause: str          # abort_causes.def
    struct_id: int
    index: int          # the element, bucket, cell or pool (structure-specific)
    own_op: str         # operations.def names
    other_op: str       # "none": the other side's write record was not readable
    other_slot: int
    own_site: int       # NF source lines (0: unknown)
    other_site: int
    own_detail: int     # e.g. the hash of the Map key
    other_detail: int


@dataclass(frozen=True)
class Diagnosis:
    """A conflict in words: the operation pair, the cause, the recipe and the parameter it
    changes, and which element or bucket (listed after the cause when records are grouped)."""
    ops: str
    cause: str
    recipe: str
    parameter: str
    where: str = ""


#: kind -> structure class (filled as the classes are defined)
STRUCTURES: dict[str, type[Structure]] = {}


class Structure:
    """Mixin of every structure class: what the profiler asks it.

    Declare ``kind`` (as in operations.def), ``operations`` (its operation names, the same
    as operations.def lists for the kind: checked here), ``unknown_other_op`` (what the other
    side of a conflict most likely did when its record is unreadable), and override
    :meth:`classify`.
    """

    __slots__ = ()
    kind: ClassVar[str] = ""
    operations: ClassVar[tuple[str, ...]] = ()
    unknown_other_op: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.kind or cls.kind in STRUCTURES:
            return
        declared = tuple(name for kind, name, _rw in _core.OPERATIONS if kind == cls.kind)
        if tuple(cls.operations) != declared:
            raise TypeError(f"{cls.__name__} declares operations {cls.operations}, but operations.def has "
                            f"{declared} for {cls.kind}")
        STRUCTURES[cls.kind] = cls

    @classmethod
    def classify(cls, c: Conflict, info: StructInfo, params: dict[str, object]) -> Diagnosis:
        """The cause and recipe of conflict `c` on this structure (`params`: the NF's parameters)."""
        return Diagnosis(f"{c.own_op} vs {c.other_op}", f"conflict ({c.cause})", "-", "")


def structure_class(kind: str) -> type[Structure] | None:
    return STRUCTURES.get(kind)


def fmt_duration(ns: int) -> str:
    from nfos.params import Duration

    return str(Duration(ns))


def param_hint(setting: str, value: object, params: dict[str, object]) -> str:
    """The NF parameter that likely sets this structure setting: same value, a shared word."""
    words = set(setting.split("_"))
    for name, v in params.items():
        if type(v) is not bool and v == value and words & set(name.split("_")):
            return f", set by --param {name}"
    return ""
