"""Typed NF parameters.

An NF declares its parameters with defaults; ``nfos run nf.py --param rate=1000
--param staleness=0.1ms`` overrides them.  The type of a parameter comes from
its default (``{"rate": 1000}`` is an int, ``{"expiry": seconds(60)}`` a
:class:`Duration`) or is given explicitly with :func:`param`.

Supported types: ``int``, ``float``, ``bool``, ``str``, :class:`IPv4`,
:class:`Duration`, and lists of any of these (``list[int]``, ``list[IPv4]``,
...).  Every parse error is a one-line :class:`ParamError` that names the
parameter, the offending value and what was expected.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "Duration",
    "IPv4",
    "Param",
    "ParamError",
    "Params",
    "describe_params",
    "ip",
    "ip_str",
    "mac",
    "mac_str",
    "micros",
    "millis",
    "param",
    "resolve_params",
    "seconds",
    "type_name",
]


class ParamError(ValueError):
    """A bad parameter declaration or value; the message is a single line."""


# --------------------------------------------------------------------------- Duration

_NS_PER_UNIT: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # MICRO SIGN
    "\u03bcs": 1_000,  # GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
# Units tried, largest first, when formatting a duration compactly.
_FORMAT_UNITS: tuple[tuple[str, int], ...] = (
    ("h", _NS_PER_UNIT["h"]),
    ("m", _NS_PER_UNIT["m"]),
    ("s", _NS_PER_UNIT["s"]),
    ("ms", _NS_PER_UNIT["ms"]),
    ("us", _NS_PER_UNIT["us"]),
)
_NUMBER = r"[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9][0-9_]*(?:[eE][+-]?[0-9]+)?"
_DURATION_RE = re.compile(
    rf"\s*(?P<sign>[+-]?)\s*(?P<num>{_NUMBER})\s*(?P<unit>[a-zA-Z\u00b5\u03bc]*)\s*"
)
_DURATION_HINT = (
    "a duration: a number with a unit ns, us, ms, s, m (minutes) or h, e.g. 100us, 0.1ms, 2s"
)


def _parse_duration(text: str) -> int:
    """Parse ``text`` to whole nanoseconds; raise ValueError(reason) if it is not one."""
    m = _DURATION_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"is not {_DURATION_HINT}")
    unit = m["unit"] or "s"
    if unit not in _NS_PER_UNIT:
        raise ValueError(f"has unknown unit {unit!r}; expected {_DURATION_HINT}")
    try:
        amount = Decimal(m["num"].replace("_", "")) * _NS_PER_UNIT[unit]
    except InvalidOperation:  # pragma: no cover - the regex only admits numbers
        raise ValueError(f"is not {_DURATION_HINT}") from None
    if m["sign"] == "-" and amount != 0:
        raise ValueError("is negative; durations must be >= 0")
    if amount != amount.to_integral_value():
        raise ValueError("is not a whole number of nanoseconds")
    return int(amount)


def _format_duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    for unit, size in _FORMAT_UNITS:
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


_NUMERIC_FORMATS = frozenset("bcdoxXneEfFgG%")


class Duration(int):
    """A non-negative time span in integer nanoseconds.

    ``Duration(100_000)`` is 100 microseconds; ``Duration("0.1ms")`` parses a
    string.  ``str()`` gives a compact unit string (``"100us"``), ``repr()``
    gives ``Duration('100us')``.  Arithmetic returns plain ints.
    """

    __slots__ = ()

    def __new__(cls, value: int | str | Duration = 0) -> Duration:
        if isinstance(value, str):
            try:
                ns = _parse_duration(value)
            except ValueError as e:
                raise ValueError(f"duration {value!r} {e}") from None
        elif isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"Duration() takes integer nanoseconds or a string like '100us', "
                f"not {type(value).__name__}; use seconds()/millis()/micros() for floats"
            )
        else:
            ns = int(value)
            if ns < 0:
                raise ValueError(f"duration must be >= 0, got {ns}ns")
        return super().__new__(cls, ns)

    @property
    def ns(self) -> int:
        return int(self)

    @property
    def seconds(self) -> float:
        return int(self) / 1e9

    def __str__(self) -> str:
        return _format_duration(int(self))

    def __repr__(self) -> str:
        return f"Duration({_format_duration(int(self))!r})"

    def __format__(self, spec: str) -> str:
        if spec and spec[-1] in _NUMERIC_FORMATS:
            return int.__format__(self, spec)
        return format(str(self), spec)

    def __reduce__(self) -> tuple[type[Duration], tuple[int]]:
        return (Duration, (int(self),))


def _from_seconds(x: float, scale: int, what: str) -> Duration:
    if isinstance(x, bool) or not isinstance(x, int | float | Decimal):
        raise TypeError(f"{what}() takes a number, not {type(x).__name__}")
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{what}({x!r}): durations must be finite and >= 0")
    return Duration(
        int((Decimal(repr(x)) if isinstance(x, float) else Decimal(x)) * scale + Decimal("0.5"))
    )


def seconds(x: float) -> Duration:
    """``seconds(0.5)`` -> ``Duration('500ms')``."""
    return _from_seconds(x, 1_000_000_000, "seconds")


def millis(x: float) -> Duration:
    """``millis(0.1)`` -> ``Duration('100us')``."""
    return _from_seconds(x, 1_000_000, "millis")


def micros(x: float) -> Duration:
    """``micros(250)`` -> ``Duration('250us')``."""
    return _from_seconds(x, 1_000, "micros")


# --------------------------------------------------------------------------- addresses

_IP_HINT = "an IPv4 address (a dotted quad like 10.0.0.1)"
_MAC_HINT = "a MAC address (six hex bytes like 02:00:00:00:00:01)"


def _parse_ip(text: str) -> int:
    parts = text.strip().split(".")
    if len(parts) != 4:
        raise ValueError(f"is not {_IP_HINT}")
    value = 0
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3:
            raise ValueError(f"is not {_IP_HINT}")
        if len(part) > 1 and part[0] == "0":
            raise ValueError(f"is not {_IP_HINT}: leading zeros are ambiguous")
        octet = int(part)
        if octet > 255:
            raise ValueError(f"is not {_IP_HINT}: {octet} is out of range 0-255")
        value = (value << 8) | octet
    return value


def ip_str(value: int) -> str:
    """``ip_str(0x0a000001)`` -> ``'10.0.0.1'``."""
    value = int(value)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{value} is not a 32-bit IPv4 address")
    return ".".join(str((value >> s) & 0xFF) for s in (24, 16, 8, 0))


class IPv4(int):
    """An IPv4 address stored as an int (host order); ``str()`` gives the dotted quad."""

    __slots__ = ()

    def __new__(cls, value: int | str | IPv4 = 0) -> IPv4:
        if isinstance(value, str):
            try:
                n = _parse_ip(value)
            except ValueError as e:
                raise ValueError(f"{value!r} {e}") from None
        elif isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"IPv4() takes an int or a dotted-quad string, not {type(value).__name__}"
            )
        else:
            n = int(value)
            if not 0 <= n <= 0xFFFFFFFF:
                raise ValueError(f"{n} is not a 32-bit IPv4 address")
        return super().__new__(cls, n)

    def __str__(self) -> str:
        return ip_str(self)

    def __repr__(self) -> str:
        return f"IPv4({ip_str(self)!r})"

    def __format__(self, spec: str) -> str:
        if spec and spec[-1] in _NUMERIC_FORMATS:
            return int.__format__(self, spec)
        return format(str(self), spec)

    def __reduce__(self) -> tuple[type[IPv4], tuple[int]]:
        return (IPv4, (int(self),))


def ip(text: str) -> IPv4:
    """``ip("10.0.0.1")`` -> ``IPv4('10.0.0.1')``; ValueError for anything but a dotted quad."""
    if not isinstance(text, str):
        raise TypeError(f"ip() takes a string, not {type(text).__name__}")
    return IPv4(text)


_MAC_RE = re.compile(
    r"[0-9a-fA-F]{1,2}(?P<sep>[:-])(?:[0-9a-fA-F]{1,2}(?P=sep)){4}[0-9a-fA-F]{1,2}"
)


def _parse_mac(text: str) -> int:
    s = text.strip()
    if not _MAC_RE.fullmatch(s):
        raise ValueError(f"is not {_MAC_HINT}")
    value = 0
    for part in re.split("[:-]", s):
        value = (value << 8) | int(part, 16)
    return value


def mac(text: str) -> int:
    """``mac("02:00:00:00:00:01")`` -> ``0x020000000001``; ':' or '-' separators."""
    if not isinstance(text, str):
        raise TypeError(f"mac() takes a string, not {type(text).__name__}")
    try:
        return _parse_mac(text)
    except ValueError as e:
        raise ValueError(f"{text!r} {e}") from None


def mac_str(value: int) -> str:
    """``mac_str(0x020000000001)`` -> ``'02:00:00:00:00:01'``."""
    value = int(value)
    if not 0 <= value <= 0xFFFF_FFFF_FFFF:
        raise ValueError(f"{value} is not a 48-bit MAC address")
    return ":".join(f"{(value >> s) & 0xFF:02x}" for s in range(40, -8, -8))


# --------------------------------------------------------------------------- scalar parsers

_INT_SUFFIX = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}
_INT_HINT = "an int (e.g. 1000, 1_000, 0x10, 10k, 2M)"
_FLOAT_HINT = "a float (e.g. 0.5, 1e6, 2.5k)"
_BOOL_HINT = "a bool (true/false, yes/no, on/off, 1/0)"
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse_int(text: str) -> int:
    s = text.strip()
    try:
        return int(s, 0)
    except ValueError:
        pass
    scale = 1
    if s and s[-1] in _INT_SUFFIX:
        scale, s = _INT_SUFFIX[s[-1]], s[:-1].rstrip()
    if re.fullmatch(r"[+-]?(?:" + _NUMBER + ")", s):
        amount = Decimal(s.replace("_", "")) * scale
        if amount == amount.to_integral_value():
            return int(amount)
    raise ValueError(f"is not {_INT_HINT}")


def _parse_float(text: str) -> float:
    s = text.strip()
    scale = 1
    if s and s[-1] in _INT_SUFFIX:
        scale, s = _INT_SUFFIX[s[-1]], s[:-1].rstrip()
    try:
        return float(s) * scale
    except ValueError:
        raise ValueError(f"is not {_FLOAT_HINT}") from None


def _parse_bool(text: str) -> bool:
    s = text.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"is not {_BOOL_HINT}")


def _parse_ipv4(text: str) -> IPv4:
    return IPv4(_parse_ip(text))


def _parse_dur(text: str) -> Duration:
    return Duration(_parse_duration(text))


_SCALARS: dict[type, object] = {
    int: _parse_int,
    float: _parse_float,
    bool: _parse_bool,
    str: str,
    IPv4: _parse_ipv4,
    Duration: _parse_dur,
}
_TYPE_NAMES: dict[str, type] = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "ipv4": IPv4,
    "ip": IPv4,
    "duration": Duration,
}


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class _Kind:
    elem: type
    is_list: bool = False

    def __str__(self) -> str:
        name = _elem_name(self.elem)
        return f"list[{name}]" if self.is_list else name


def _elem_name(t: type) -> str:
    return t.__name__


def _kind_of_type(t: object) -> _Kind:
    """Normalise a declared type (a class, ``list[X]``, or a string name) to a _Kind."""
    if isinstance(t, _Kind):
        return t
    if isinstance(t, str):
        s = t.replace(" ", "")
        m = re.fullmatch(r"(?:list|List)\[(.+)\]", s)
        if m:
            elem = _TYPE_NAMES.get(m[1].lower())
            if elem is not None:
                return _Kind(elem, True)
        elif s.lower() in _TYPE_NAMES:
            return _Kind(_TYPE_NAMES[s.lower()])
        raise ValueError(f"unknown parameter type {t!r}")
    origin = typing.get_origin(t)
    if origin in (list, tuple):
        args = typing.get_args(t)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise ValueError(f"unsupported parameter type {t!r}")
        if args and args[0] in _SCALARS:
            return _Kind(args[0], True)
        raise ValueError(f"unsupported parameter type {t!r}")
    if isinstance(t, type) and t in _SCALARS:
        return _Kind(t)
    if t in (list, tuple):
        raise ValueError(f"parameter type {t.__name__} needs an element type, e.g. list[int]")
    raise ValueError(f"unsupported parameter type {t!r}")


def _scalar_type_of(value: object) -> type:
    # Order matters: bool before int, Duration/IPv4 before int.
    for t in (bool, Duration, IPv4, int, float, str):
        if isinstance(value, t):
            return t
    raise ValueError(
        f"cannot infer a parameter type from default {value!r} "
        f"({type(value).__name__}); use nfos.param(type, default)"
    )


def _kind_of_default(value: object) -> _Kind:
    if isinstance(value, list | tuple):
        if not value:
            return _Kind(str, True)
        return _Kind(_scalar_type_of(value[0]), True)
    return _Kind(_scalar_type_of(value))


def type_name(t: object) -> str:
    """A declared type's display name: ``int``, ``Duration``, ``list[IPv4]``."""
    return str(_kind_of_type(t))


# --------------------------------------------------------------------------- conversion


def _parse_scalar(elem: type, text: str) -> object:
    return _SCALARS[elem](text)  # type: ignore[operator]


def _parse_value(kind: _Kind, text: str) -> object:
    """Parse a command-line string; ValueError(reason) with a reason like 'is not an int'."""
    if not kind.is_list:
        return _parse_scalar(kind.elem, text)
    if text.strip() == "":
        return []
    out = []
    for i, item in enumerate(text.split(","), 1):
        item = item.strip()
        if item == "":
            raise ValueError(
                f"has an empty item {i}; expected a comma-separated list[{_elem_name(kind.elem)}]"
            )
        try:
            out.append(_parse_scalar(kind.elem, item))
        except ValueError as e:
            raise ValueError(f"item {i} {item!r} {e}") from None
    return out


def _coerce_scalar(elem: type, value: object) -> object:
    """Check/convert a Python default value to ``elem``; ValueError(reason) if it does not fit."""
    if isinstance(value, str) and elem is not str:
        return _parse_scalar(elem, value)
    if elem is bool:
        if isinstance(value, bool):
            return value
    elif elem is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif elem is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
    elif elem is str:
        if isinstance(value, str):
            return value
    elif elem in (Duration, IPv4):
        if isinstance(value, int) and not isinstance(value, bool):
            return elem(value)
    raise ValueError(f"is not {_article(elem)}")


def _coerce_default(kind: _Kind, value: object) -> object:
    if value is None:
        return None
    if isinstance(value, str) and kind.is_list:
        return _parse_value(kind, value)
    if kind.is_list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"is not a list[{_elem_name(kind.elem)}]")
        out = []
        for i, item in enumerate(value, 1):
            try:
                out.append(_coerce_scalar(kind.elem, item))
            except ValueError as e:
                raise ValueError(f"item {i} {item!r} {e}") from None
        return out
    return _coerce_scalar(kind.elem, value)


def _article(elem: type) -> str:
    return {
        int: _INT_HINT,
        float: _FLOAT_HINT,
        bool: _BOOL_HINT,
        str: "a str",
        IPv4: _IP_HINT,
        Duration: _DURATION_HINT,
    }[elem]


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Param:
    """An explicit parameter declaration: ``Param(list[IPv4], [], "backend servers")``.

    ``type`` is ``int``, ``float``, ``bool``, ``str``, :class:`IPv4`,
    :class:`Duration`, ``list[X]`` of one of those, or the same as a string
    (``"list[IPv4]"``).  A string ``default`` is parsed like a command-line
    value; ``None`` means "no value unless given".
    """

    type: type | str
    default: object
    help: str = ""


def param(type: type | str, default: object, help: str = "") -> Param:
    """Declare a parameter with an explicit type."""
    return Param(type, default, help)


_RESERVED = frozenset({"keys", "items", "values", "get"})


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: _Kind
    default: object
    help: str


def _spec(nf_name: str, name: str, decl: object) -> _Spec:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ParamError(
            f"NF {nf_name!r}: parameter name {name!r} must be a Python identifier not starting with '_'"
        )
    if name in _RESERVED:
        raise ParamError(
            f"NF {nf_name!r}: parameter name {name!r} is reserved (it is a Params method)"
        )
    try:
        if isinstance(decl, Param):
            kind = _kind_of_type(decl.type)
            default = _coerce_default(kind, decl.default)
            help_text = decl.help
        else:
            kind = _kind_of_default(decl)
            default = _coerce_default(kind, decl)
            help_text = ""
    except ValueError as e:
        msg = str(e)
        if msg.startswith(("is ", "item ", "has ")):
            bad = decl.default if isinstance(decl, Param) else decl
            msg = f"default {bad!r} {msg}"
        raise ParamError(f"NF {nf_name!r}: parameter {name!r}: {msg}") from None
    return _Spec(name, kind, default, help_text)


def describe_params(
    nf_name: str, declared: Mapping[str, object]
) -> list[tuple[str, str, object, str]]:
    """``(name, type name, default, help)`` for each declared parameter, sorted by name.

    Useful for ``nfos run nf.py --help``; raises ParamError for a bad declaration.
    """
    specs = [_spec(nf_name, n, d) for n, d in declared.items()]
    return [(s.name, str(s.kind), s.default, s.help) for s in sorted(specs, key=lambda s: s.name)]


# --------------------------------------------------------------------------- resolved values


class Params:
    """Read-only resolved parameters: ``p.rate``, ``p["rate"]``, ``dict(p)``, ``"rate" in p``."""

    __slots__ = ("_values", "_nf_name", "__dict__")
    _values: dict[str, object]
    _nf_name: str

    def __init__(self, values: Mapping[str, object] | None = None, nf_name: str = "") -> None:
        object.__setattr__(self, "_values", dict(values or {}))
        object.__setattr__(self, "_nf_name", nf_name)
        # Values are also plain instance attributes: `p.rate` in a handler is a dict hit,
        # not a __getattr__ call (which costs ~0.5 us).
        self.__dict__.update(self._values)

    def __getattr__(self, name: str) -> Any:   # a value of the parameter's declared kind
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            known = ", ".join(sorted(self._values)) or "none"
            where = f" for NF {self._nf_name!r}" if self._nf_name else ""
            raise AttributeError(f"no parameter {name!r}{where} (known: {known})") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("parameters are read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("parameters are read-only")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> KeysView[str]:
        return self._values.keys()

    def items(self) -> ItemsView[str, object]:
        return self._values.items()

    def values(self) -> ValuesView[object]:
        return self._values.values()

    def get(self, name: str, default: object = None) -> object:
        return self._values.get(name, default)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Params):
            return self._values == other._values
        if isinstance(other, Mapping):
            return self._values == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Params({inner})"

    def __reduce__(self) -> tuple[type[Params], tuple[dict[str, object], str]]:
        return (Params, (self._values, self._nf_name))


def _split_given(given: Mapping[str, str] | Iterable[str]) -> list[tuple[str, str]]:
    if isinstance(given, Mapping):
        return [(str(k), v) for k, v in given.items()]
    if isinstance(given, str):
        given = [given]
    pairs = []
    for text in given:
        if not isinstance(text, str) or "=" not in text:
            raise ParamError(f"parameter {text!r} must be written name=value")
        k, v = text.split("=", 1)
        if not k.strip():
            raise ParamError(f"parameter {text!r} must be written name=value")
        pairs.append((k, v))
    return pairs


def resolve_params(
    nf_name: str,
    declared: Mapping[str, object],
    given: Mapping[str, str] | Iterable[str] = (),
) -> Params:
    """Combine an NF's declared parameters with command-line values.

    ``declared`` maps a name to a :class:`Param` or a plain default whose type
    gives the parameter type.  ``given`` is a dict ``name -> string`` or a list
    of ``"name=value"`` strings (a later value for the same name wins; ``-`` in
    a given name matches ``_``).  Raises :class:`ParamError` with a one-line
    message for unknown names, malformed text or values that do not parse.
    """
    specs = {name: _spec(nf_name, name, decl) for name, decl in declared.items()}
    values = {name: s.default for name, s in specs.items()}
    for raw_name, text in _split_given(given):
        name = raw_name.strip().replace("-", "_")
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(sorted(specs))
            where = f"(known: {known})" if known else "(it declares no parameters)"
            raise ParamError(f"unknown parameter {raw_name.strip()!r} for NF {nf_name!r} {where}")
        if not isinstance(text, str):
            try:
                values[name] = _coerce_default(spec.kind, text)
            except ValueError as e:
                raise ParamError(f"parameter {name!r}: {text!r} {e}") from None
            continue
        try:
            values[name] = _parse_value(spec.kind, text)
        except ValueError as e:
            raise ParamError(f"parameter {name!r}: {text!r} {e}") from None
    return Params(values, nf_name)
