"""Shared by the fuzz targets (tests/fuzz/fuzz_*.py): the C core under a loaded NF, and frames
built from the fuzzer's bytes — mostly well-formed enough to reach deep into the parser
(Ethernet, one or two VLAN tags, IPv4 with options and fragments, TCP/UDP/ICMP), with any
field, length or checksum wrong and the frame cut anywhere.

The C core is not coverage-instrumented (gcc's sanitizers have no libFuzzer coverage), so
the structure comes from here: the fuzzer's coverage of this Python code and of the
readers steers the mutations, and ASan/UBSan watch the C core (see docs/reliability.md).
"""

from __future__ import annotations

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEVICES = ("lan", "wan", "dmz")


def load_session():
    """A Session of fuzz_nf.py (2 workers configured, none started: the control process probes)."""
    from nfos.runtime.session import Session

    s = Session(os.path.join(HERE, "fuzz_nf.py"), 2, collect_output=False, check=False)
    s.init()
    return s


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def gen_frame(fdp) -> bytes:
    """A frame from the fuzzer's bytes (`fdp`: atheris.FuzzedDataProvider)."""
    shape = fdp.ConsumeIntInRange(0, 7)
    if shape == 0:   # anything
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 160))
    eth = fdp.ConsumeBytes(12).ljust(12, b"\0")
    for _ in range(fdp.ConsumeIntInRange(0, 2) if shape < 3 else 0):   # VLAN tags (a second is QinQ)
        eth += struct.pack("!HH", fdp.PickValueInList([0x8100, 0x88A8, 0x9100]), fdp.ConsumeIntInRange(0, 0xFFFF))
    ethertype = fdp.PickValueInList([0x0800] * 6 + [0x0806, 0x86DD, 0x8100, fdp.ConsumeIntInRange(0, 0xFFFF)])
    eth += struct.pack("!H", ethertype)
    if ethertype != 0x0800:
        return eth + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    nopt = fdp.ConsumeIntInRange(0, 10) if fdp.ConsumeBool() else 0
    options = fdp.ConsumeBytes(4 * nopt).ljust(4 * nopt, b"\x01")
    ihl = 5 + nopt if fdp.ConsumeIntInRange(0, 9) else fdp.ConsumeIntInRange(0, 15)
    version = 4 if fdp.ConsumeIntInRange(0, 15) else fdp.ConsumeIntInRange(0, 15)
    proto = fdp.PickValueInList([6, 6, 17, 17, 1, fdp.ConsumeIntInRange(0, 255)])
    if proto == 6:
        off = 5 if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(0, 15)
        l4 = struct.pack("!HHIIBBHHH", fdp.ConsumeIntInRange(0, 65535), fdp.ConsumeIntInRange(0, 65535),
                         fdp.ConsumeIntInRange(0, 2**32 - 1), fdp.ConsumeIntInRange(0, 2**32 - 1), off << 4,
                         fdp.ConsumeIntInRange(0, 255), fdp.ConsumeIntInRange(0, 65535), 0, 0)
        l4 += fdp.ConsumeBytes(max(0, off * 4 - 20))
    elif proto == 17:
        l4 = struct.pack("!HHHH", fdp.ConsumeIntInRange(0, 65535), fdp.ConsumeIntInRange(0, 65535), 0, 0)
    elif proto == 1:
        l4 = struct.pack("!BBHHH", fdp.ConsumeIntInRange(0, 255), fdp.ConsumeIntInRange(0, 255), 0,
                         fdp.ConsumeIntInRange(0, 65535), fdp.ConsumeIntInRange(0, 65535))
        l4 = l4[:fdp.ConsumeIntInRange(0, 8)] if fdp.ConsumeIntInRange(0, 7) == 0 else l4
    else:
        l4 = b""
    big = fdp.ConsumeIntInRange(0, 63) == 0   # now and then a frame past 64 KiB (16-bit offsets)
    payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 48)) + (b"\xa5" * 66000 if big else b"")
    seg = l4 + payload
    total = min(4 * ihl + len(seg), 65535) if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(0, 65535)
    frag = 0 if fdp.ConsumeIntInRange(0, 5) else fdp.ConsumeIntInRange(0, 0xFFFF)   # DF/MF, offsets
    src, dst = fdp.ConsumeIntInRange(0, 2**32 - 1), fdp.ConsumeIntInRange(0, 2**32 - 1)
    hdr = struct.pack("!BBHHHBBHII", version << 4 | (ihl & 15), fdp.ConsumeIntInRange(0, 255), total,
                      fdp.ConsumeIntInRange(0, 65535), frag, fdp.ConsumeIntInRange(0, 255), proto, 0, src, dst)
    hdr += options
    if fdp.ConsumeIntInRange(0, 7):   # a correct header checksum, mostly
        hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    if proto in (6, 17) and len(l4) >= 8 and fdp.ConsumeIntInRange(0, 7):   # a correct L4 checksum, mostly
        at = 16 if proto == 6 else 6
        if proto == 17:
            seg = seg[:4] + struct.pack("!H", len(seg) & 0xFFFF) + seg[6:]
        pseudo = struct.pack("!IIBBH", src, dst, 0, proto, len(seg) & 0xFFFF)
        c = csum(pseudo + seg) or (0xFFFF if proto == 17 else 0)
        seg = seg[:at] + struct.pack("!H", c) + seg[at + 2:]
    frame = eth + hdr + seg
    frame += b"\0" * (fdp.ConsumeIntInRange(0, 20) if fdp.ConsumeBool() else 0)   # Ethernet padding
    if fdp.ConsumeIntInRange(0, 5) == 0:   # cut anywhere
        frame = frame[:fdp.ConsumeIntInRange(0, len(frame))]
    return frame


def run(target, argv: list[str], instrument: tuple[str, ...] = ()) -> None:
    """atheris.Setup + Fuzz for `target` (with the modules in `instrument` coverage-instrumented)."""
    import atheris

    with atheris.instrument_imports(include=list(instrument)):
        for name in instrument:
            __import__(name)
    atheris.Setup(argv, target)
    atheris.Fuzz()


if HERE not in sys.path:
    sys.path.insert(0, HERE)
