"""``@nf.malformed(pkt)``: frames the parser rejects go to the NF when it asks for them (issue 12
point 5), e.g. a transparent NF forwards them; the default drops and counts them, as before."""

from __future__ import annotations

import struct

import pytest

import frames as F
from nfos.io.capture import Trace
from nfos.runtime.replay import replay
from nfos.testing import Harness

SECOND = 1_000_000_000

TRANSPARENT = """
import nfos

nf = nfos.NF("transparent", devices=["lan", "wan"])

class S(nfos.Record):
    n: nfos.u32

@nf.init
def setup(p):
    nf.packet_sets(nfos.on("lan", ipv4=("src", "dst"), l4=("sport", "dport")),
                   nfos.on("wan", ipv4=("dst", "src"), l4=("dport", "sport")), state=S)

def across(pkt):
    pkt.send("wan" if pkt.dev == "lan" else "lan")

@nf.new_packet_set
def new(pkt):
    nf.register(pkt)
    across(pkt)

@nf.packet
def later(pkt, s):
    across(pkt)

@nf.orphan
def orphan(pkt):
    across(pkt)

@nf.malformed
def bad(pkt):
    assert pkt.ip is None and pkt.tcp is None and pkt.udp is None and pkt.l4 is None and pkt.icmp is None
    assert (pkt.eth is None) == (len(pkt.frame) < 14) and pkt.len == len(pkt.frame)
    if pkt.frame.startswith(b"RAISE"):
        raise ValueError("a bad frame")
    if pkt.frame.startswith(b"EMIT"):
        nf.emit(b"seen:" + pkt.frame, "lan")
    across(pkt)
"""


def malformed_frames() -> list[bytes]:
    tcp = F.tcp_frame(flags=F.SYN, do_pad=False)
    bad_ihl = bytearray(tcp)
    bad_ihl[14] = 0x44                                        # IHL 16 bytes
    long_ip = bytearray(tcp)
    struct.pack_into("!H", long_ip, 16, len(tcp) - 14 + 9)    # IP length beyond the frame
    bad_doff = bytearray(tcp)
    bad_doff[14 + 20 + 12] = 0x30                             # TCP data offset 12 bytes
    return [b"\x01\x02\x03", b"\xff" * 13, bytes(bad_ihl), bytes(long_ip), bytes(bad_doff),
            F.ether(ethertype=0x0800) + b"\x45\x00"]          # IPv4 header cut short


def good_frames() -> list[bytes]:
    return [F.tcp_frame(sport=40000 + i, flags=F.SYN) for i in range(5)] + [F.arp_frame()]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_transparent_nf_forwards_malformed_frames(write_nf, workers):
    nf = write_nf(TRANSPARENT)
    bad, good = malformed_frames(), good_frames()
    frames = [f for pair in zip(good, bad, strict=True) for f in pair]
    trace = Trace(["lan", "wan"], frames, [SECOND + i * 1000 for i in range(len(frames))], [0] * len(frames), [])
    result = replay(nf, trace, workers=workers, keep_output=True)
    s = result.stats
    assert sorted(result.outputs["wan"]) == sorted(frames)     # every frame, unchanged
    assert (s["packets_in"], s["malformed"], s["dropped"], s["handler_errors"]) == (len(frames), len(bad), 0, 0)
    assert s["packets_out"] == {"lan": 0, "wan": len(frames)}


@pytest.mark.parametrize("workers", [0, 2])
def test_without_the_handler_malformed_frames_are_dropped_and_counted(write_nf, workers):
    src = TRANSPARENT.split("@nf.malformed")[0]
    nf = write_nf(src)
    bad, good = malformed_frames(), good_frames()
    frames = good + bad
    trace = Trace(["lan", "wan"], frames, [SECOND + i * 1000 for i in range(len(frames))], [0] * len(frames), [])
    result = replay(nf, trace, workers=workers, keep_output=True)
    assert sorted(result.outputs["wan"]) == sorted(good)
    s = result.stats
    assert (s["packets_in"], s["malformed"], s["dropped"]) == (len(frames), len(bad), len(bad))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_handler_in_the_harness_emits_and_raises(write_nf, workers, capfd):
    nf = write_nf(TRANSPARENT)
    with Harness(nf, workers=workers) as h:
        assert h.send("wan", b"\x01\x02") == [("lan", b"\x01\x02")]
        assert sorted(h.send("lan", b"EMIT!")) == [("lan", b"seen:EMIT!"), ("wan", b"EMIT!")]
        assert h.send("lan", b"RAISE") == []
        s = h.stats()
    assert (s["packets_in"], s["malformed"], s["handler_errors"], s["dropped"]) == (3, 3, 1, 1)
    assert "ValueError: a bad frame" in capfd.readouterr().err
