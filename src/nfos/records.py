"""Records: fixed-size typed state that can live in shared memory.

    class Session(nfos.Record):
        internal_dev: nfos.u8
        lan_flags: nfos.u8
        seen: nfos.u64

A Record class is a table computed once: each field gets an offset and a C
descriptor, so reading ``s.lan_flags`` in a handler is one descriptor call
on the record's bytes (natural alignment, size rounded up to 8).  Python's
``int``, ``float`` and ``bool`` are accepted as ``i64``, ``f64`` and ``bool``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeGuard

from nfos import _core
from nfos import params as _params


@dataclass(frozen=True)
class ScalarType:
    """A fixed-size field type (``nfos.u8`` ... ``nfos.f64``, ``nfos.Bytes(n)``).

    ``nfos.mac`` and ``nfos.ip4`` are also converters: ``nfos.mac("02:00:00:00:00:01")``.
    """

    name: str
    kind: int
    size: int
    parse: Callable[[str], int] | None = None

    def __call__(self, text: str) -> int:
        if self.parse is None:
            raise TypeError(f"nfos.{self.name} is a field type, not a converter")
        return self.parse(text)

    def __repr__(self) -> str:
        return f"nfos.{self.name}"


u8 = ScalarType("u8", _core.K_U8, 1)
u16 = ScalarType("u16", _core.K_U16, 2)
u32 = ScalarType("u32", _core.K_U32, 4)
u64 = ScalarType("u64", _core.K_U64, 8)
i8 = ScalarType("i8", _core.K_I8, 1)
i16 = ScalarType("i16", _core.K_I16, 2)
i32 = ScalarType("i32", _core.K_I32, 4)
i64 = ScalarType("i64", _core.K_I64, 8)
f64 = ScalarType("f64", _core.K_F64, 8)
boolean = ScalarType("boolean", _core.K_BOOL, 1)
ip4 = ScalarType("ip4", _core.K_U32, 4, _params.ip)  # an IPv4 address as an int
mac = ScalarType("mac", _core.K_U64, 8, _params.mac)  # a MAC address as an int (48 bits used)


def Bytes(n: int) -> ScalarType:  # noqa: N802 - reads like a type
    """A fixed-size byte string field of ``n`` bytes (zero padded)."""
    if not 1 <= n <= 4096:
        raise ValueError(f"Bytes(n) needs 1 <= n <= 4096, got {n}")
    return ScalarType(f"Bytes({n})", _core.K_BYTES, n)


_PYTHON_TYPES = {int: i64, float: f64, bool: boolean}


def scalar_type(t: object, where: str) -> ScalarType:
    """Map a field annotation to a ScalarType, or raise a clear TypeError."""
    if isinstance(t, ScalarType):
        return t
    if t in _PYTHON_TYPES:
        return _PYTHON_TYPES[t]
    raise TypeError(
        f"{where}: {t!r} is not a record field type "
        "(use nfos.u8/u16/u32/u64, i8..i64, f64, boolean, ip4, mac, Bytes(n), int, float, bool)"
    )


@dataclass(frozen=True)
class FieldSpec:
    name: str
    offset: int
    type: ScalarType


class RecordMeta(type):
    """Computes a Record's layout from its annotations and installs C field descriptors."""

    __nfos_fields__: tuple[FieldSpec, ...]   # every field, inherited ones first
    __nfos_size__: int                       # bytes, a multiple of 8

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> RecordMeta:
        ns.setdefault("__slots__", ())  # no __dict__: views stay small and untracked by the GC
        annotations = ns.get("__annotations__", {})
        inherited: list[FieldSpec] = []
        for b in bases:
            inherited.extend(getattr(b, "__nfos_fields__", ()))
        fields = list(inherited)
        offset = max((f.offset + f.type.size for f in inherited), default=0)
        for fname, ann in annotations.items():
            if isinstance(ann, str):  # from __future__ import annotations
                ann = eval(ann, vars(__import__("nfos")), dict(ns))  # noqa: S307 - NF's own names
            st = scalar_type(ann, f"{name}.{fname}")
            align = min(st.size, 8) if st.kind != _core.K_BYTES else 1
            offset = (offset + align - 1) // align * align
            fields.append(FieldSpec(fname, offset, st))
            offset += st.size
            ns.pop(fname, None)  # a default value would shadow the descriptor
        for f in fields[len(inherited):]:
            ns[f.name] = _core.Field(f.name, f.offset, f.type.size, f.type.kind)
        cls = super().__new__(mcls, name, bases, ns, **kw)
        cls.__nfos_fields__ = tuple(fields)
        cls.__nfos_size__ = max(8, (offset + 7) // 8 * 8)
        _core.record_type_ready(cls)   # views hold no Python references: not tracked by the GC
        return cls


class Record(_core.RecordView, metaclass=RecordMeta):
    """Base class of packet-set state and structure elements (see module doc)."""

    if TYPE_CHECKING:   # set by RecordMeta (an annotation here would declare a field)
        __nfos_fields__: ClassVar[tuple[FieldSpec, ...]]
        __nfos_size__: ClassVar[int]

    def __repr__(self) -> str:
        try:
            parts = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self.__nfos_fields__)
        except RuntimeError:
            return f"<{type(self).__name__} (transaction finished)>"
        return f"{type(self).__name__}({parts})"

    def as_dict(self) -> dict[str, object]:
        """The record's fields as a plain dict (a copy)."""
        return {f.name: getattr(self, f.name) for f in self.__nfos_fields__}


def is_record_type(t: object) -> TypeGuard[type[Record]]:
    return isinstance(t, type) and issubclass(t, Record)
