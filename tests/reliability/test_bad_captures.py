"""Bad captures (issue 13, point 5): lengths past the end and a 2 GB snaplen give a one-line
warning (the packets before it are kept, the rest is ignored: the documented handling of a
cut or corrupt tail) within bounded memory and time — never an allocation of the claimed
size.  (10^6 interfaces and timestamps outside 0..2^64 are one-line CaptureErrors:
tests/io/test_capture.py.)"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import tracemalloc

import pytest

import frames as F
from nfos.io.capture import CaptureError, read_capture

FRAME = F.udp_frame()
TWO_GB = 2**31
AFTER_ONE = 24 + 16 + len(FRAME)   # a pcap's offset after its first record


def pcap(records: list[tuple[int, bytes]], snaplen: int = 262144) -> bytes:
    """Little-endian microsecond pcap; records are (captured length as written, bytes)."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)
    for i, (caplen, data) in enumerate(records):
        out += struct.pack("<IIII", 1_700_000_000, i, caplen, max(caplen, len(data))) + data
    return out


def block(btype: int, body: bytes, blen: int | None = None) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body) if blen is None else blen
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def pcapng(*blocks: bytes, snaplen: int = 0) -> bytes:
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 1, 0, snaplen) + struct.pack("<HH", 2, 3) + b"lan\0" + b"\0" * 4)
    return shb + idb + b"".join(blocks)


def epb(data: bytes, caplen: int | None = None, blen: int | None = None) -> bytes:
    cap = len(data) if caplen is None else caplen
    return block(6, struct.pack("<IIIII", 0, 0, 1000, cap, len(data)) + data, blen)


def read_bounded(path) -> object:
    """read_capture, asserting it took < 2 s and < 16 MiB above the file's own size."""
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        return read_capture(path, default_devices=["lan", "wan"])
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert time.monotonic() - t0 < 2.0
        assert peak < os.path.getsize(path) * 3 + (16 << 20), peak


CASES = {
    # pcap: a 2 GB snaplen in the file header is only a number: nothing is sized by it
    "pcap-snaplen-2GB": (pcap([(len(FRAME), FRAME)] * 3, snaplen=TWO_GB), 3, None),
    "pcap-snaplen-4GB-1": (pcap([(len(FRAME), FRAME)] * 3, snaplen=2**32 - 1), 3, None),
    # a record claiming 2 GB: the packets before it are kept
    "pcap-record-2GB": (pcap([(len(FRAME), FRAME), (TWO_GB, FRAME)]), 1,
                        f"bad record at byte {AFTER_ONE} after 1 packets (captured length 2147483648 > 262144)"),
    # a record's length past the end of the file (a capture cut short)
    "pcap-record-past-end": (pcap([(len(FRAME), FRAME), (1000, FRAME)]), 1, f"truncated at byte {AFTER_ONE} after 1 packets"),
    "pcap-header-cut": (pcap([(len(FRAME), FRAME)])[:24 + 10], 0, "truncated at byte 24 after 0 packets"),
    # pcapng: a 2 GB interface snaplen, then normal packets
    "pcapng-snaplen-2GB": (pcapng(epb(FRAME), epb(FRAME), snaplen=TWO_GB), 2, None),
    # a packet's captured length past its block
    "pcapng-caplen-past-block": (pcapng(epb(FRAME), epb(FRAME, caplen=TWO_GB)), 1, "captured length 2147483648"),
    # a block length past the end of the file, and a 2 GB one
    "pcapng-block-past-end": (pcapng(epb(FRAME), epb(FRAME, blen=4096)), 1, "truncated at byte"),
    "pcapng-block-2GB": (pcapng(epb(FRAME), epb(FRAME, blen=TWO_GB)), 1, "truncated at byte"),
    # a simple packet block claiming 2 GB under a 2 GB snaplen: bounded by its block
    "pcapng-spb-2GB": (pcapng(epb(FRAME), block(3, struct.pack("<I", TWO_GB) + FRAME), snaplen=TWO_GB), 2, None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_lengths_are_a_warning_within_bounds(tmp_path, name):
    data, packets, warning = CASES[name]
    path = tmp_path / (name + (".pcapng" if name.startswith("pcapng") else ".pcap"))
    path.write_bytes(data)
    trace = read_bounded(path)
    assert len(trace) == packets and all(f == FRAME for f in trace.frames[:1])
    if name == "pcapng-spb-2GB":
        assert len(trace.frames[1]) <= len(FRAME) + 3   # the block's bytes, not 2 GB
    if warning is None:
        assert trace.warnings == []
    else:
        assert len(trace.warnings) == 1 and warning in trace.warnings[0], trace.warnings
        assert trace.warnings[0].startswith(str(path)) and "\n" not in trace.warnings[0]
        assert trace.warnings[0].endswith("the rest is ignored")


@pytest.mark.parametrize("code, claimed", [(14, 8), (9, 6), (2, 300)])
def test_an_interface_option_past_its_block_ends_the_options(tmp_path, code, claimed):
    """Found by fuzzing (tests/fuzz/fuzz_captures.py): an if_tsoffset option claiming 8 bytes
    in a block that ends sooner made read_capture raise struct.error.  Now the options end
    there (the interface keeps its defaults)."""
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", code, claimed) + b"\x09\x00")
    path = tmp_path / "opt.pcapng"
    path.write_bytes(shb + idb + epb(FRAME))
    trace = read_bounded(path)
    assert trace.frames == [FRAME] and trace.times_ns == [1000 * 1000] and trace.warnings == []
    assert trace.dev_names == ["lan", "wan", "if0"]


def test_an_interface_block_too_short_for_its_fields_ends_the_reading(tmp_path):
    """Found by fuzzing: an interface block of 12 bytes (no room for link type and snaplen)
    made read_capture raise struct.error.  Now it is a bad block: a warning, the rest ignored."""
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    path = tmp_path / "short-idb.pcapng"
    path.write_bytes(pcapng(epb(FRAME)) + shb + block(1, b"", 12) + epb(FRAME))
    trace = read_bounded(path)
    assert trace.frames == [FRAME]
    assert len(trace.warnings) == 1 and "bad record at byte" in trace.warnings[0] and "block length 12" in trace.warnings[0]


def test_nfos_run_says_it_in_one_line(tmp_path):
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap([(len(FRAME), FRAME), (TWO_GB, FRAME)]))
    firewall = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "examples", "firewall.py")
    r = subprocess.run([sys.executable, "-m", "nfos", "run", firewall, "--in", str(path), "--workers", "0", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"nfos: warning: {path}: bad record at byte {AFTER_ONE} after 1 packets (captured length 2147483648 > 262144); "
        "the rest is ignored"]


def test_not_a_capture_is_one_error_line(tmp_path):
    path = tmp_path / "x.pcap"
    path.write_bytes(b"\xff" * 100)
    with pytest.raises(CaptureError) as e:
        read_capture(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(path))
