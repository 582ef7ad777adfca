import shutil
import struct
import subprocess

import pytest

from nfos.io import (
    CaptureError,
    PcapWriter,
    open_capture_writer,
    read_capture,
    read_captures,
    write_pcapng,
)

FRAMES = [bytes([i]) * (60 + i) for i in range(5)]
TIMES = [1_700_000_000_123_456_789 + 1000 * i for i in range(5)]


def write_pcap(path, frames=FRAMES, times=TIMES):
    with open_capture_writer(path) as w:
        assert isinstance(w, PcapWriter)
        for frame, t in zip(frames, times, strict=True):
            w.write(frame, t)


def test_pcap_round_trip(tmp_path):
    path = tmp_path / "t.pcap"
    write_pcap(path)
    trace = read_capture(path)
    assert trace.frames == FRAMES
    assert trace.times_ns == TIMES
    assert trace.devs == [0] * 5
    assert trace.dev_names == ["eth0"]
    assert trace.warnings == []
    assert len(trace) == 5
    assert read_capture(path, ["lan", "wan"]).dev_names == ["lan", "wan"]


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_microseconds(tmp_path, order):
    path = tmp_path / "us.pcap"
    body = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    body += struct.pack(order + "IIII", 10, 999_999, 3, 60) + b"abc"
    body += struct.pack(order + "IIII", 11, 5, 2, 2) + b"de"
    path.write_bytes(body)
    trace = read_capture(path)
    assert trace.frames == [b"abc", b"de"]
    assert trace.times_ns == [10_999_999_000, 11_000_005_000]


def test_pcapng_round_trip(tmp_path):
    path = tmp_path / "t.pcapng"
    devs = [0, 1, 1, 2, 0]
    times = [0, 1, (1 << 32) + 7, 1 << 62, TIMES[0]]
    write_pcapng(path, ["lan", "wan", "dmz"], FRAMES, times, devs)
    trace = read_capture(path)
    assert trace.dev_names == ["lan", "wan", "dmz"]
    assert trace.frames == FRAMES
    assert trace.times_ns == times
    assert trace.devs == devs
    assert trace.warnings == []


def test_pcapng_default_devices_keep_their_index(tmp_path):
    path = tmp_path / "t.pcapng"
    write_pcapng(path, ["wan", "x", "lan"], FRAMES[:3], TIMES[:3], [0, 1, 2])
    trace = read_capture(path, default_devices=["lan", "wan"])
    assert trace.dev_names == ["lan", "wan", "x"]
    assert trace.devs == [1, 2, 0]


def _block(btype, body):
    blen = 12 + len(body)
    return struct.pack(">II", btype, blen) + body + struct.pack(">I", blen)


def test_pcapng_big_endian_microseconds_and_sections(tmp_path):
    shb = _block(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
    # if_tsresol = 6 (microseconds), no if_name -> "if0"
    idb = _block(1, struct.pack(">HHI", 1, 0, 0) + struct.pack(">HHB3x", 9, 1, 6)
                 + struct.pack(">HH", 0, 0))
    ts = 1_500_000_123_456
    epb = _block(6, struct.pack(">IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, 3, 64) + b"xyz\0")
    spb = _block(3, struct.pack(">I", 2) + b"pq\0\0")
    other = _block(0x0BAD, b"")
    path = tmp_path / "be.pcapng"
    data = shb + idb + epb + other + spb
    path.write_bytes(data + data)  # a second section reuses the name if0
    trace = read_capture(path)
    assert trace.dev_names == ["if0"]
    assert trace.frames == [b"xyz", b"pq"] * 2
    assert trace.times_ns == [ts * 1000] * 4
    assert trace.devs == [0] * 4


def test_pcapng_binary_resolution(tmp_path):
    shb = _block(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(1, struct.pack(">HHI", 1, 0, 0) + struct.pack(">HHB3x", 9, 1, 0x80 | 10)
                 + struct.pack(">HH4s", 2, 3, b"lan\0"))
    epb = _block(6, struct.pack(">IIIII", 0, 0, 3 * 1024 + 512, 0, 0))
    path = tmp_path / "bin.pcapng"
    path.write_bytes(shb + idb + epb)
    trace = read_capture(path)
    assert trace.dev_names == ["lan"]
    assert trace.times_ns == [3_500_000_000]
    assert trace.frames == [b""]


def test_read_captures_merges_by_time_stably(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcapng"
    write_pcap(a, [b"a0", b"a1", b"a2"], [10, 20, 30])
    write_pcapng(b, ["zz"], [b"b0", b"b1", b"b2"], [5, 20, 40], [0, 0, 0])
    trace = read_captures([("wan", b), ("lan", a)])
    assert trace.dev_names == ["wan", "lan"]
    assert trace.frames == [b"b0", b"a0", b"b1", b"a1", b"a2", b"b2"]
    assert trace.times_ns == [5, 10, 20, 20, 30, 40]
    assert trace.devs == [0, 1, 0, 1, 1, 0]


def test_bad_magic(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"hello world, not a capture")
    with pytest.raises(CaptureError, match=r"x\.txt: not a pcap or pcapng file \(magic 0x68656c6c"):
        read_capture(path)


def test_missing_file(tmp_path):
    with pytest.raises(CaptureError, match=r"nope\.pcap: no such file"):
        read_capture(tmp_path / "nope.pcap")


def test_non_ethernet_pcap(tmp_path):
    path = tmp_path / "raw.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
    with pytest.raises(CaptureError) as err:
        read_capture(path)
    assert str(err.value) == (f"{path}: link type 101 is not Ethernet (1); "
                              "nfos reads Ethernet captures only")


def test_non_ethernet_pcapng(tmp_path):
    path = tmp_path / "raw.pcapng"
    shb = _block(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
    path.write_bytes(shb + _block(1, struct.pack(">HHI", 113, 0, 0)))
    with pytest.raises(CaptureError, match=r"raw\.pcapng: link type 113 is not Ethernet"):
        read_capture(path)


@pytest.mark.parametrize("suffix", ["pcap", "pcapng"])
def test_truncated_keeps_complete_packets(tmp_path, suffix):
    path = tmp_path / f"t.{suffix}"
    if suffix == "pcap":
        write_pcap(path)
        cut = 24 + 3 * 16 + sum(map(len, FRAMES[:3])) + 20  # inside record 3's body
    else:
        write_pcapng(path, ["lan"], FRAMES, TIMES, [0] * 5)
        sizes = [32 + len(f) + (-len(f) & 3) for f in FRAMES]
        cut = path.stat().st_size - sum(sizes[3:]) + 10  # inside block 3
    path.write_bytes(path.read_bytes()[:cut])
    trace = read_capture(path)
    assert trace.frames == FRAMES[:3]
    assert trace.times_ns == TIMES[:3]
    start = cut - (20 if suffix == "pcap" else 10)
    assert trace.warnings == [
        f"{path}: truncated at byte {start} after 3 packets; the rest is ignored"]


def test_absurd_caplen_stops_with_warning(tmp_path):
    path = tmp_path / "big.pcap"
    write_pcap(path, FRAMES[:1], TIMES[:1])
    path.write_bytes(path.read_bytes() + struct.pack("<IIII", 1, 0, 1 << 20, 1 << 20) + b"x" * 64)
    trace = read_capture(path)
    assert trace.frames == FRAMES[:1]
    off = 24 + 16 + len(FRAMES[0])
    assert trace.warnings == [
        f"{path}: bad record at byte {off} after 1 packets "
        "(captured length 1048576 > 262144); the rest is ignored"]


def test_tcpdump_reads_written_pcap(tmp_path):
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump is not installed")
    path = tmp_path / "t.pcap"
    write_pcap(path)
    done = subprocess.run([tcpdump, "-r", str(path), "-nn", "-c", "3"], capture_output=True)
    assert done.returncode == 0, done.stderr


# Bad captures (issue "Nothing lost", point 5): one-line errors, bounded memory and time.

SHB = _block(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))


def _idb(options=b""):
    return _block(1, struct.pack(">HHI", 1, 0, 0) + options + struct.pack(">HH", 0, 0))


def _epb(ts, frame=b"abcd"):
    return _block(6, struct.pack(">IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame)


def test_negative_if_tsoffset_is_a_one_line_error(tmp_path):
    path = tmp_path / "neg.pcapng"
    path.write_bytes(SHB + _idb(struct.pack(">HHq", 14, 8, -2_000_000_000)) + _epb(1_000_000))
    with pytest.raises(CaptureError, match=r"packet 1 has timestamp -1,999,999,999,000,000,000 ns, outside "
                                           r"0\.\.2\^64-1 ns since 1970 \(check the interface's if_tsoffset"):
        read_capture(path)


def test_timestamps_past_2_64_ns_are_a_one_line_error(tmp_path):
    path = tmp_path / "far.pcapng"   # if_tsresol 0: seconds; 2**40 s is past 2**64 ns
    path.write_bytes(SHB + _idb(struct.pack(">HHB3x", 9, 1, 0)) + _epb(5) + _epb(1 << 40))
    with pytest.raises(CaptureError, match=rf"packet 2 has timestamp {(1 << 40) * 10**9:,} ns, outside"):
        read_capture(path)


def test_a_million_interface_blocks_are_refused_early(tmp_path):
    path = tmp_path / "idbs.pcapng"
    path.write_bytes(SHB + _idb() * 1_000_000 + _epb(1))
    with pytest.raises(CaptureError, match=r"more than 65,536 interface blocks in one section \(at byte "):
        read_capture(path)
