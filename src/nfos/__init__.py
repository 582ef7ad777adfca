"""nfos: write a network function as a sequential Python program; run it on every core.

See README.md for a walk-through and docs/architecture.md for how it works.
"""

from nfos._core import MapFull, Packet, TableFull, TransactionAborted, now
from nfos.nf import NF, NFError, on
from nfos.params import (
    Duration,
    IPv4,
    Param,
    ParamError,
    ip,
    ip_str,
    mac_str,
    micros,
    millis,
    param,
    seconds,
)
from nfos.records import Bytes, Record, boolean, f64, i8, i16, i32, i64, ip4, mac, u8, u16, u32, u64
from nfos.structures import Allocator, Counter, DistributedObj, Map, Vector

__version__ = "0.1.0"


__all__ = [
    "NF", "NFError", "on", "Record", "Packet", "Vector", "DistributedObj", "Map", "Allocator", "Counter",
    "TableFull",
    "MapFull",
    "TransactionAborted", "now", "seconds", "millis", "micros", "Duration", "IPv4", "ip", "ip_str",
    "mac_str", "Param", "ParamError", "param", "Bytes", "boolean", "f64", "i8", "i16",
    "i32", "i64", "ip4", "mac", "u8", "u16", "u32", "u64",
]
