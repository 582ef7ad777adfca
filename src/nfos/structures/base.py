"""What every structure records about itself, what it tells the profiler, and the registry
of one loaded NF's structures.

A structure is a plug-in (docs/structures.md): its C file, its lines in
``structures.def`` and ``operations.def``, and a Python class that derives
from its C base type and from :class:`Structure`, declaring its ``kind`` and
``operations`` (checked against ``_core.OPERATIONS``) and classifying its own
conflicts into a cause and a recipe.  The profiler looks the class up by kind
(:func:`structure_class`); it has no per-structure code.

The registry belongs to the runtime session that loads the NF (``Session.registry``);
a structure being created finds it through :func:`current`, the one accessor of
"the NF being loaded in this process".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, ClassVar, NamedTuple, Protocol

from nfos import _core


@dataclass
class StructInfo:
    struct_id: int
    kind: str  # "Vector", "DistributedObj", ...
    created_at: str  # file:line of the constructor call in the NF
    name: str = ""  # attribute name under nf.state, when known
    params: dict[str, Any] = field(default_factory=dict)   # the constructor's, for recipes

    @property
    def label(self) -> str:
        return f"{self.kind} '{self.name}'" if self.name else f"{self.kind} at {self.created_at}"

    @property
    def called(self) -> str:
        """How a recipe names it: "'name' (file:line)", or "it (file:line)"."""
        return f"{repr(self.name) if self.name else 'it'} ({self.created_at})"


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


#: housekeeping work: (function called in a transaction, interval in ns)
Housekeeping = tuple[Callable[[], object], int]


class Registry(dict[int, StructInfo]):
    """struct_id -> StructInfo of one loaded NF's structures, with what the runtime needs
    from them: the worker count they are built for (an Allocator has a pool per slot) and
    the housekeeping the control process runs (e.g. reclaiming expired leases)."""

    def __init__(self, workers: int = 0) -> None:
        super().__init__()
        self.workers = workers
        self.housekeeping: dict[int, Housekeeping] = {}

    def periodics(self) -> list[Housekeeping]:
        """The housekeeping as (function, interval ns) pairs, in creation order."""
        return list(self.housekeeping.values())


class _Session(Protocol):
    registry: Registry


_current: _Session | None = None   # the session that loaded the NF of this process


def current() -> Registry:
    """The registry of the NF being loaded (or run) in this process; RuntimeError if none."""
    if _current is None:
        raise RuntimeError("nfos structures must be created while an NF is loaded")
    return _current.registry


def set_current(session: _Session) -> None:
    """The runtime marks the session whose NF this process loads (and then runs)."""
    global _current
    _current = session


def release(session: _Session) -> None:
    """The session is closed: no NF is loaded any more (unless another session is current)."""
    global _current
    if _current is session:
        _current = None


class _CurrentRegistry(Mapping[int, StructInfo]):
    """``registry``: a live view of the current session's registry (empty when none)."""

    def _reg(self) -> Mapping[int, StructInfo]:
        return {} if _current is None else _current.registry

    def __getitem__(self, struct_id: int) -> StructInfo:
        return self._reg()[struct_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._reg())

    def __len__(self) -> int:
        return len(self._reg())

    def __repr__(self) -> str:
        return f"<registry of the current NF: {dict(self._reg())!r}>"


#: struct_id -> StructInfo of the NF loaded in this process (a view: see Session.registry)
registry: Mapping[int, StructInfo] = _CurrentRegistry()

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def creation_site() -> str:
    """file:line of the first caller outside the nfos package (the NF line)."""
    f: FrameType | None = sys._getframe(1)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(_PACKAGE_DIR):
        f = f.f_back
    if f is None:
        return "?"
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"


class _Structure(Protocol):
    @property
    def _struct_id(self) -> int: ...


def record(obj: _Structure, kind: str, **params: object) -> StructInfo:
    """Register a structure just created (in the C core) with the NF being loaded."""
    info = StructInfo(obj._struct_id, kind, creation_site(), params=params)
    current()[info.struct_id] = info
    return info


# ---------------------------------------------------------------- plug-ins
class Conflict(NamedTuple):
    """One conflict record of ``_core.conflicts()``: what an aborted transaction met."""
    cause: str          # abort_causes.def
    struct_id: int
    element: int        # the element, bucket, cell or pool index (structure-specific)
    own_op: str         # operations.def names
    other_op: str       # "none": the other side's write record was not readable
    other_slot: int
    own_site: int       # NF source lines (0: unknown)
    other_site: int
    handler: str        # the handler the aborted transaction ran (handlers.def; _core.HANDLERS)
    handler_index: int  # a periodic handler's place in the schedule (Session.periodics())
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
        # the class's own descriptors of its C base's methods: CPython specialises a C method
        # call only for an instance of exactly the descriptor's type (table.get(k) ~10 ns faster)
        _core.own_methods(cls)
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
