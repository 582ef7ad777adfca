"""Captures cut by a snap length (``tcpdump -s 96``; issue 12 point 5): a frame whose headers were
captured is processed, ``pkt.len`` is its wire length, its payload view what was captured, and it
is written out as captured with its wire length (pcap ``orig_len``); the others are malformed.
``nfos run`` says how many frames were cut in one warning line."""

from __future__ import annotations

import json
import struct
from array import array

import pytest

import frames as F
from nfos.io.capture import PcapWriter, Trace, read_capture
from nfos.runtime.replay import replay
from test_cli import nfos_cmd, stderr_lines

SECOND = 1_000_000_000
SNAP = 96

# Reports what it sees of each packet on wan (as an emitted frame), and forwards it lan -> wan.
VIEW = """
import nfos

nf = nfos.NF("view", devices=["lan", "wan"])

@nf.orphan
def see(pkt):
    l4 = pkt.tcp or pkt.udp
    nf.emit(repr((pkt.len, len(pkt.frame), pkt.cut, pkt.ip.len if pkt.ip else None,
                  l4.len if l4 else None, len(pkt.payload), pkt.tcp is not None, pkt.udp is not None)).encode(),
            "wan")
    pkt.send("wan")
"""


def cut(frame: bytes, snap: int = SNAP) -> tuple[bytes, int]:
    return frame[:snap], len(frame)


def report(out: bytes) -> tuple:
    return eval(out.decode())   # the NF's repr() of a tuple of ints and bools


@pytest.mark.parametrize("workers", [0, 2])
def test_cut_frames_with_their_headers_are_processed(write_nf, workers):
    nf = write_nf(VIEW)
    tcp = F.tcp_frame(payload=bytes(range(256)) * 5, flags=F.ACK)        # 14 + 20 + 20 + 1280
    udp = F.udp_frame(sport=5000, payload=b"u" * 900)                     # 14 + 20 + 8 + 900
    opts = F.tcp_frame(sport=41000, options=b"\x01" * 40, payload=b"x" * 500, flags=F.ACK)   # TCP header: 60
    ipopts = F.tcp_frame(sport=42000, ip_options=b"\x01" * 40, options=b"\x01" * 20, payload=b"y" * 300)
    whole = F.udp_frame(sport=6000, payload=b"w" * 10)
    rows = [cut(tcp), cut(udp), cut(opts), cut(ipopts), (whole, len(whole))]
    trace = Trace(["lan", "wan"], [f for f, _ in rows], [SECOND + i for i in range(len(rows))], [0] * len(rows),
                  [], array("I", [w for _, w in rows]))
    assert trace.cut == 4
    result = replay(nf, trace, workers=workers, keep_output=True)
    s = result.stats
    reports = sorted(report(f) for f in result.outputs["wan"] if not f.startswith(b"\x02"))
    # TCP cut after 96 bytes: its headers (54 bytes) are there; the IP and TCP lengths are the wire's
    assert (len(tcp), SNAP, True, len(tcp) - 14, len(tcp) - 34, SNAP - 54, True, False) in reports
    assert (len(udp), SNAP, True, len(udp) - 14, len(udp) - 34, SNAP - 42, False, True) in reports
    # a 60-byte TCP header ends at byte 94: still captured
    assert (len(opts), SNAP, True, len(opts) - 14, len(opts) - 34, SNAP - 94, True, False) in reports
    assert (len(whole), len(whole), False, 20 + 8 + 10, 18, 10, False, True) in reports   # padded to 60
    # IP options (40) + TCP header (40) end at byte 114, after the snap length: malformed, not processed
    assert len(reports) == 4
    assert (s["packets_in"], s["cut"], s["malformed"], s["dropped"]) == (5, 4, 1, 1)
    # forwarded frames go out as captured
    forwarded = sorted(f for f in result.outputs["wan"] if f.startswith(b"\x02"))
    assert forwarded == sorted([tcp[:SNAP], udp[:SNAP], opts[:SNAP], whole])


def test_ip_length_beyond_an_uncut_frame_stays_malformed(write_nf):
    nf = write_nf(VIEW)
    good = F.udp_frame(payload=b"z" * 100, do_pad=False)
    long_ip = bytearray(good)
    struct.pack_into("!H", long_ip, 16, len(good) - 14 + 50)     # the IP says 50 more bytes than there are
    rows = [
        (bytes(long_ip), len(good)),            # not cut: malformed, as before
        (bytes(long_ip[:96]), len(good)),       # cut, but the IP length is beyond the wire length: malformed
        (bytes(long_ip[:96]), len(good) + 50),  # cut, and the wire had them: processed
        (good[:40], len(good)),                 # cut inside the UDP header: malformed
        (good[:12], len(good)),                 # cut inside the Ethernet header: malformed
    ]
    trace = Trace(["lan", "wan"], [f for f, _ in rows], [SECOND + i for i in range(len(rows))], [0] * len(rows),
                  [], array("I", [w for _, w in rows]))
    result = replay(nf, trace, workers=0, keep_output=True)
    reports = [report(f) for f in result.outputs["wan"] if not f.startswith(b"\x02")]
    # (the UDP length is the UDP header's field, which says 100 bytes of payload)
    assert reports == [(len(good) + 50, 96, True, len(good) - 14 + 50, len(good) - 34, 96 - 42, False, True)]
    assert (result.stats["malformed"], result.stats["cut"]) == (4, 4)


def test_nfos_run_warns_once_and_writes_what_was_captured(tmp_path):
    frames = [F.tcp_frame(sport=40000 + i, flags=F.SYN, payload=b"p" * (200 + i)) for i in range(5)]
    with PcapWriter(tmp_path / "cut.pcap") as w:
        for i, f in enumerate(frames):
            w.write(f[:SNAP], SECOND + i, len(f))
        w.write(frames[0][:40], SECOND + 9, len(frames[0]))    # cut inside TCP: malformed
    firewall = str(F.__file__).replace("tests/frames.py", "examples/firewall.py")
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        r = nfos_cmd("run", firewall, "--in", tmp_path / "cut.pcap", "--workers", workers, "--out", out,
                     "--stats-json", tmp_path / "s.json", "-q")
        assert r.returncode == 0, r.stderr
        lines = stderr_lines(r)
        assert len(lines) == 1 and lines[0].startswith("nfos: warning: 6 frame(s) were cut by the capture's snap "
                                                      "length"), lines
        stats = json.loads((tmp_path / "s.json").read_text())
        assert (stats["packets_in"], stats["cut"], stats["malformed"], stats["packets_out"]["wan"]) == (6, 6, 1, 5)
        data = (out / "wan.pcap").read_bytes()
        records, off = [], 24
        while off < len(data):
            _s, _ns, incl, orig = struct.unpack_from("<IIII", data, off)
            records.append((data[off + 16:off + 16 + incl], orig))
            off += 16 + incl
        assert sorted(records) == sorted((f[:SNAP], len(f)) for f in frames)   # the output says "cut" too
        assert read_capture(out / "wan.pcap").wire_lens   # and reads back as cut


def test_reading_a_cut_pcapng_keeps_the_wire_lengths(tmp_path):
    frame = F.udp_frame(payload=b"q" * 500)
    epb = struct.pack("<IIIIIII", 6, 32 + SNAP, 0, 0, SECOND, SNAP, len(frame)) + frame[:SNAP] + struct.pack(
        "<I", 32 + SNAP)
    shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    idb = struct.pack("<IIHHII", 1, 20, 1, 0, SNAP, 20)
    (tmp_path / "c.pcapng").write_bytes(shb + idb + epb)
    t = read_capture(tmp_path / "c.pcapng", ["lan"])
    assert t.frames == [frame[:SNAP]] and list(t.wire_lens) == [len(frame)] and t.cut == 1
    assert t.wire_len(0) == len(frame)


def test_a_cut_trace_round_trips_through_pcapng(tmp_path):
    from nfos.io.capture import write_pcapng

    frames = [F.udp_frame(payload=b"r" * 300), F.udp_frame(payload=b"s" * 10)]
    rows = [cut(frames[0]), (frames[1], len(frames[1]))]
    t = Trace(["lan"], [f for f, _ in rows], [SECOND, SECOND + 1], [0, 0], [], array("I", [w for _, w in rows]))
    write_pcapng(tmp_path / "t.pcapng", t.dev_names, t.frames, t.times_ns, t.devs, t.wire_lens)
    back = read_capture(tmp_path / "t.pcapng", ["lan"])
    assert back.frames == t.frames and list(back.wire_lens) == list(t.wire_lens) and back.cut == 1
