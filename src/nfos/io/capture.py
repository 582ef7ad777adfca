"""Read pcap/pcapng captures and write pcap/pcapng, in pure Python.

A whole file is read into memory and walked with precompiled ``struct.Struct``
objects, because per-packet Python overhead dominates: a million 64-byte packets
load in about a second this way.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

__all__ = [
    "CaptureError",
    "PcapWriter",
    "Trace",
    "open_capture_writer",
    "read_capture",
    "read_captures",
    "write_pcapng",
]

StrPath = str | os.PathLike[str]

MAX_CAPLEN = 256 * 1024  # larger captured lengths mean a corrupt record
MAX_INTERFACES = 65536  # interface blocks per pcapng section; more mean a corrupt or hostile file
MAX_TIME_NS = (1 << 64) - 1  # nfos.now() is an unsigned 64-bit count of ns since the epoch
SNAPLEN = 262144
LINKTYPE_ETHERNET = 1
NS = 1_000_000_000

_PCAP_MAGICS = {  # first four bytes -> (byte order, ns per timestamp fraction unit)
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_SHB = 0x0A0D0D0A
_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}


class CaptureError(Exception):
    """A file that cannot be read as an Ethernet capture; the message names the file."""


@dataclass
class Trace:
    """Frames with their arrival times and devices, as an NF run consumes them.

    ``wire_lens`` is empty when every frame is whole; else it holds each frame's length on
    the wire (pcap ``orig_len``), which is larger than ``len(frame)`` for a frame the
    capture's snap length cut (``tcpdump -s 96``)."""

    dev_names: list[str]
    frames: list[bytes] = field(default_factory=list)
    times_ns: list[int] = field(default_factory=list)
    devs: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    wire_lens: Sequence[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def wire_len(self, i: int) -> int:
        """Frame ``i``'s length on the wire."""
        return max(len(self.frames[i]), self.wire_lens[i]) if self.wire_lens else len(self.frames[i])

    @property
    def cut(self) -> int:
        """How many frames the capture's snap length cut."""
        if not self.wire_lens:
            return 0
        return sum(1 for f, w in zip(self.frames, self.wire_lens, strict=True) if w > len(f))


def _not_ethernet(path: StrPath, linktype: int) -> CaptureError:
    return CaptureError(
        f"{os.fspath(path)}: link type {linktype} is not Ethernet (1); "
        "nfos reads Ethernet captures only"
    )


def _stop(path: StrPath, off: int, count: int, why: str = "") -> str:
    what = f"bad record at byte {off} after {count} packets ({why})" if why else (
        f"truncated at byte {off} after {count} packets")
    return f"{os.fspath(path)}: {what}; the rest is ignored"


#: ``progress(packets, bytes_read, bytes_total)``, called every 65,536 packets while a capture is parsed
Progress = Callable[[int, int, int], object]


def read_capture(path: StrPath, default_devices: list[str] | None = None,
                 progress: Progress | None = None) -> Trace:
    """Read a pcap or pcapng file of Ethernet frames.

    A pcap file has one device: every frame gets index 0 and ``dev_names`` is
    ``default_devices`` (or ``["eth0"]``). For pcapng, names found in
    ``default_devices`` keep their index there so indexes match the NF's devices;
    other interfaces are appended. A truncated or corrupt tail is dropped with a
    warning in ``Trace.warnings`` rather than an error, since captures cut by a
    killed tcpdump are common and their packets are still useful.  A frame the capture's
    snap length cut keeps its original length in ``Trace.wire_lens``.  ``progress`` sees the
    parse go on (packets and bytes so far, the file's size).
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CaptureError(f"{name}: no such file") from None
    except OSError as e:
        raise CaptureError(f"{name}: {e.strerror}") from None
    magic = data[:4]
    if magic in _PCAP_MAGICS:
        trace = _read_pcap(path, data, default_devices, progress)
    elif len(magic) == 4 and int.from_bytes(magic, "little") == _SHB:
        trace = _read_pcapng(path, data, default_devices, progress)
    else:
        raise CaptureError(
            f"{name}: not a pcap or pcapng file (magic 0x{magic.hex() or 'empty'} at byte 0)")
    if trace.times_ns and not 0 <= min(trace.times_ns) <= max(trace.times_ns) <= MAX_TIME_NS:
        i, t = next((i, t) for i, t in enumerate(trace.times_ns) if not 0 <= t <= MAX_TIME_NS)
        raise CaptureError(f"{name}: packet {i + 1} has timestamp {t:,} ns, outside 0..2^64-1 ns since "
                           "1970 (check the interface's if_tsoffset and if_tsresol)")
    return trace


def _read_pcap(path: StrPath, data: bytes, default_devices: list[str] | None,
               progress: Progress | None = None) -> Trace:
    order, frac_ns = _PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        raise CaptureError(f"{os.fspath(path)}: pcap file header truncated at byte {len(data)}")
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF
    if linktype != LINKTYPE_ETHERNET:
        raise _not_ethernet(path, linktype)
    trace = Trace(list(default_devices) if default_devices else ["eth0"])
    frames, times = trace.frames, trace.times_ns
    wires = array("I")
    add_frame, add_time, add_wire = frames.append, times.append, wires.append
    unpack = struct.Struct(order + "IIII").unpack_from
    off, n, cut = 24, len(data), 0
    while off + 16 <= n:
        sec, frac, cap, orig = unpack(data, off)
        end = off + 16 + cap
        if cap > MAX_CAPLEN or end > n:
            break
        add_frame(data[off + 16:end])
        add_time(sec * NS + frac * frac_ns)
        add_wire(orig)
        if orig > cap:
            cut += 1
        off = end
        if progress is not None and not len(frames) & 0xFFFF:
            progress(len(frames), off, n)
    if cut:
        trace.wire_lens = wires
    if off < n:
        cap = unpack(data, off)[2] if off + 16 <= n else 0
        why = f"captured length {cap} > {MAX_CAPLEN}" if cap > MAX_CAPLEN else ""
        trace.warnings.append(_stop(path, off, len(frames), why))
    trace.devs = [0] * len(frames)
    return trace


def _read_pcapng(path: StrPath, data: bytes, default_devices: list[str] | None,
                 progress: Progress | None = None) -> Trace:
    trace = Trace(list(default_devices or []))
    index = {d: i for i, d in enumerate(trace.dev_names)}
    frames, times, devs = trace.frames, trace.times_ns, trace.devs
    wires = array("I")
    cut = 0
    ifaces: list[tuple[int, int, int, int, int]] = []  # dev, ns mul, ns div, ns offset, snaplen
    off, n, why = 0, len(data), ""
    order = "<"
    head = struct.Struct("<II").unpack_from
    while off + 12 <= n:
        btype, blen = head(data, off)
        if btype == _SHB:  # a new section (the type reads the same in both byte orders)
            order = _BOM.get(data[off + 8:off + 12], "")
            if not order:
                why = f"section byte-order magic 0x{data[off + 8:off + 12].hex()}"
                break
            head = struct.Struct(order + "II").unpack_from
            epb = struct.Struct(order + "IIIII").unpack_from
            opb = struct.Struct(order + "HHIIII").unpack_from
            ifaces = []
            blen = head(data, off)[1]
        if blen < 12 or blen % 4:
            why = f"block length {blen}"
            break
        if off + blen > n:
            break
        if btype == 6 or btype == 2:  # enhanced / obsolete packet block
            if blen < 32:
                why = f"block length {blen}"
                break
            if btype == 6:
                ifid, hi, lo, cap, orig = epb(data, off + 8)
            else:
                ifid, _, hi, lo, cap, orig = opb(data, off + 8)
            if ifid >= len(ifaces) or cap > blen - 32 or cap > MAX_CAPLEN:
                why = f"interface {ifid}" if ifid >= len(ifaces) else f"captured length {cap}"
                break
            dev, mul, div, toff, _ = ifaces[ifid]
            frames.append(data[off + 28:off + 28 + cap])
            times.append(((hi << 32 | lo) * mul) // div + toff)
            devs.append(dev)
            wires.append(orig)
            if orig > cap:
                cut += 1
        elif btype == 3:  # simple packet block: interface 0, no timestamp
            if not ifaces or blen < 16:
                why = "simple packet block without interface" if blen >= 16 else f"block length {blen}"
                break
            dev, _, _, _, snaplen = ifaces[0]
            orig = head(data, off + 8)[0]
            cap = min(orig, blen - 16, snaplen or MAX_CAPLEN)
            frames.append(data[off + 12:off + 12 + cap])
            times.append(times[-1] if times else 0)
            devs.append(dev)
            wires.append(orig)
            if orig > cap:
                cut += 1
        elif btype == 1:
            if blen < 20:   # shorter than an interface block's fixed fields (found by fuzzing)
                why = f"block length {blen}"
                break
            if len(ifaces) == MAX_INTERFACES:
                raise CaptureError(f"{os.fspath(path)}: more than {MAX_INTERFACES:,} interface blocks in one "
                                   f"section (at byte {off}); nfos reads at most {MAX_INTERFACES:,}")
            ifaces.append(_interface(path, data, off, blen, order, len(ifaces), trace, index))
        off += blen
        if progress is not None and not len(frames) & 0xFFFF and btype in (2, 3, 6):
            progress(len(frames), off, n)
    if off < n:
        trace.warnings.append(_stop(path, off, len(frames), why))
    if cut:
        trace.wire_lens = wires
    return trace


def _interface(path: StrPath, data: bytes, off: int, blen: int, order: str, ifid: int,
               trace: Trace, index: dict[str, int]) -> tuple[int, int, int, int, int]:
    """Parse an IDB into (device index, ns multiplier, ns divisor, ns offset, snaplen)."""
    linktype, _, snaplen = struct.unpack_from(order + "HHI", data, off + 8)
    if linktype != LINKTYPE_ETHERNET:
        raise _not_ethernet(path, linktype)
    name, resol, tsoffset = f"if{ifid}", 6, 0
    p, end = off + 16, off + blen - 4
    while p + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, p)
        if p + 4 + length > end:   # an option past its block: the options end here (found by fuzzing)
            break
        value = data[p + 4:p + 4 + length]
        if code == 0:
            break
        if code == 2:
            name = value.decode("utf-8", "replace").rstrip("\0")
        elif code == 9 and length >= 1:
            resol = value[0]
        elif code == 14 and length >= 8:
            tsoffset = struct.unpack_from(order + "q", value)[0]
        p += 4 + length + (-length & 3)
    if resol & 0x80:
        mul, div = NS, 1 << (resol & 0x7F)
    else:
        mul, div = (10 ** (9 - resol), 1) if resol <= 9 else (1, 10 ** (resol - 9))
    if name not in index:
        index[name] = len(trace.dev_names)
        trace.dev_names.append(name)
    return index[name], mul, div, tsoffset * NS, snaplen


def read_captures(pairs: Sequence[tuple[str, StrPath]], progress: Progress | None = None) -> Trace:
    """Read one capture per device and merge them by time.

    Each file's frames arrive on its paired device (pairs naming the same device
    share it); equal timestamps keep file order, so the merge is reproducible.
    ``progress`` sees the packets and bytes of all files so far (the total: their sizes).
    """
    merged = Trace([])
    index: dict[str, int] = {}
    frames: list[bytes] = []
    times: list[int] = []
    devs: list[int] = []
    wires = array("I")
    cut = False
    sizes = [_size(path) for _dev, path in pairs]
    done_packets = done_bytes = 0
    for (dev_name, path), size in zip(pairs, sizes, strict=True):
        dev = index.setdefault(dev_name, len(index))
        each = None
        if progress is not None:
            def each(p: int, b: int, _t: int, base_p: int = done_packets, base_b: int = done_bytes) -> None:
                progress(base_p + p, base_b + b, sum(sizes))
        t = read_capture(path, progress=each)
        frames += t.frames
        times += t.times_ns
        devs += [dev] * len(t)
        wires.extend(t.wire_lens if t.wire_lens else (len(f) for f in t.frames))
        cut = cut or bool(t.wire_lens)
        merged.warnings += t.warnings
        done_packets += len(t)
        done_bytes += size
    merged.dev_names = list(index)
    order = sorted(range(len(frames)), key=times.__getitem__)  # stable; merges sorted runs fast
    merged.frames = [frames[i] for i in order]
    merged.times_ns = [times[i] for i in order]
    merged.devs = [devs[i] for i in order]
    if cut:
        merged.wire_lens = array("I", (wires[i] for i in order))
    return merged


def _size(path: StrPath) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class PcapWriter:
    """Classic pcap writer with nanosecond timestamps, so times round-trip exactly."""

    _record = struct.Struct("<IIII")

    def __init__(self, path: StrPath) -> None:
        self._f: IO[bytes] = open(path, "wb")
        self._f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))

    def write(self, frame: bytes, time_ns: int, wire_len: int | None = None) -> None:
        """One record; ``wire_len`` > len(frame) keeps a cut frame's original length."""
        sec, ns = divmod(time_ns, NS)
        cap = frame[:SNAPLEN]
        self._f.write(self._record.pack(sec, ns, len(cap), max(len(frame), wire_len or 0)))
        self._f.write(cap)

    def write_records(self, records: bytes) -> None:
        """Append ready-made records (16-byte little-endian header + frame each)."""
        self._f.write(records)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_capture_writer(path: StrPath) -> PcapWriter:
    """Open ``path`` for writing a pcap file (use as a context manager)."""
    return PcapWriter(path)


def write_pcapng(path: StrPath, dev_names: list[str], frames: list[bytes],
                 times_ns: list[int], devs: list[int], wire_lens: Sequence[int] | None = None) -> None:
    """Write a pcapng file with one named interface per device and ns timestamps.

    pcapng keeps the device of every frame, so a multi-device trace round-trips;
    ``wire_lens`` (a Trace's) keeps the original length of frames a capture cut.
    """
    u32 = struct.Struct("<I").pack
    epb = struct.Struct("<IIIIIII").pack
    with open(path, "wb") as f:
        f.write(struct.pack("<IIIHHqI", _SHB, 28, 0x1A2B3C4D, 1, 0, -1, 28))
        for name in dev_names:
            raw = name.encode()
            opts = (struct.pack("<HH", 2, len(raw)) + raw + b"\0" * (-len(raw) & 3)
                    + struct.pack("<HHB3x", 9, 1, 9) + b"\0\0\0\0")
            blen = 20 + len(opts)
            f.write(struct.pack("<IIHHI", 1, blen, LINKTYPE_ETHERNET, 0, SNAPLEN) + opts
                    + u32(blen))
        write = f.write
        for i, (frame, t, dev) in enumerate(zip(frames, times_ns, devs, strict=True)):
            cap = len(frame)
            pad = -cap & 3
            blen = 32 + cap + pad
            write(epb(6, blen, dev, t >> 32, t & 0xFFFFFFFF, cap, max(cap, wire_lens[i]) if wire_lens else cap))
            write(frame)
            if pad:
                write(b"\0" * pad)
            write(u32(blen))
