import struct
from collections import Counter

import pytest

from nfos.io import checksum16, gen_antiddos, gen_caida, read_capture, write_pcapng


def five_tuple(frame):
    sip, dip = frame[26:30], frame[30:34]
    sport, dport = struct.unpack_from("!HH", frame, 34)
    return sip, dip, sport, dport, frame[23]


def assert_valid(frame):
    assert len(frame) == 64
    assert frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    assert ip[0] == 0x45 and ip[8] == 64
    assert checksum16(ip) == 0
    proto = ip[9]
    l4len = {6: 20, 17: 8}[proto]
    assert struct.unpack_from("!H", ip, 2)[0] == 20 + l4len
    assert frame[34 + l4len:] == bytes(30 - l4len)  # Ethernet padding
    pseudo = ip[12:20] + struct.pack("!BBH", 0, proto, l4len)
    assert checksum16(pseudo + frame[34:34 + l4len]) == 0


@pytest.fixture(scope="module")
def caida():
    return gen_caida(42_000, 2000, reverse=0.3, seed=7)


def test_checksum16_known_value():
    # RFC 1071 example words 0001 f203 f4f5 f6f7 sum to 0xddf2 (after carry), checksum 0x220d
    assert checksum16(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert checksum16(b"\x01") == 0xFEFF


def test_caida_deterministic():
    a = gen_caida(3000, 150, reverse=0.2, seed=3)
    b = gen_caida(3000, 150, reverse=0.2, seed=3)
    c = gen_caida(3000, 150, reverse=0.2, seed=4)
    assert a.frames == b.frames and a.times_ns == b.times_ns and a.devs == b.devs
    assert a.frames != c.frames


def test_caida_counts_and_sizes():
    trace = gen_caida(42_000, 2000, seed=5)
    assert len(trace) == 42_000
    assert trace.dev_names == ["lan", "wan"]
    assert trace.devs == [0] * 42_000
    assert trace.times_ns[:3] == [1_000_000_000, 1_000_001_000, 1_000_002_000]
    sizes = sorted(Counter(map(five_tuple, trace.frames)).values())
    assert len(sizes) == 2000
    assert sum(sizes) / len(sizes) == 21.0
    assert sizes[-1] > 20 * sizes[len(sizes) // 2]
    for frame in trace.frames[:5000]:
        assert frame[:12] == bytes.fromhex("020000000002020000000001")
        assert frame[26] == 10  # LAN source in 10/8
        assert 1 <= frame[30] <= 126 and frame[30] != 10


def test_caida_frames_valid(caida):
    for frame in caida.frames:
        assert_valid(frame)


def test_caida_tcp_flags_and_replies(caida):
    flows = {}
    for frame, dev in zip(caida.frames, caida.devs, strict=True):
        key = five_tuple(frame)
        if dev == 1:
            key = (key[1], key[0], key[3], key[2], key[4])
        flows.setdefault(key, []).append((dev, frame))
    assert len(flows) == 2000
    answered = 0
    for key, pkts in flows.items():
        requests = [f for d, f in pkts if d == 0]
        replies = [f for d, f in pkts if d == 1]
        if replies:
            answered += 1
            assert len(replies) == len(requests)
        if key[4] == 6:
            flags = [f[47] for f in requests]
            assert flags[0] == 0x02
            if len(flags) > 1:
                assert flags[1:-1] == [0x10] * (len(flags) - 2) and flags[-1] == 0x11
            assert [f[47] for f in replies] == [0x12, *[0x10] * (len(replies) - 1)][:len(replies)]
    assert abs(answered / 2000 - 0.3) <= 0.05
    for i, (frame, dev) in enumerate(zip(caida.frames, caida.devs, strict=True)):
        if dev == 1:
            req = caida.frames[i - 1]
            assert caida.devs[i - 1] == 0
            assert frame[:6] == req[6:12] and frame[6:12] == req[:6]
            assert frame[26:30] == req[30:34] and frame[30:34] == req[26:30]
            assert frame[34:36] == req[36:38] and frame[36:38] == req[34:36]


def test_write_and_read_back(tmp_path):
    trace = gen_caida(500, 30, reverse=0.5, seed=2)
    path = tmp_path / "g.pcapng"
    write_pcapng(path, trace.dev_names, trace.frames, trace.times_ns, trace.devs)
    back = read_capture(path)
    assert (back.dev_names, back.frames, back.times_ns, back.devs) == (
        trace.dev_names, trace.frames, trace.times_ns, trace.devs)


def test_antiddos_pattern():
    trace = gen_antiddos(2500, rate=2e6, seed=9)
    assert len(trace) == 2500
    assert trace.devs == [0] * 2500
    assert trace.times_ns[1] - trace.times_ns[0] == 500
    for frame in trace.frames:
        assert_valid(frame)
    keys = [five_tuple(f) for f in trace.frames]
    sizes = Counter(keys)
    assert len(sizes) == 500
    assert Counter(sizes.values()) == {1: 400, 21: 100}
    assert {k[1] for k in keys} == {bytes([100, 0, 0, 1])}
    seen = set()
    for key, frame in zip(keys, trace.frames, strict=True):
        assert frame[47] == (0x10 if key in seen else 0x02)
        seen.add(key)
    assert gen_antiddos(2500, seed=9).frames == trace.frames


def test_bad_arguments():
    with pytest.raises(ValueError, match="flows <= packets"):
        gen_caida(10, 11)
    with pytest.raises(ValueError, match="reverse"):
        gen_caida(10, 5, reverse=1.5)
    with pytest.raises(ValueError, match="rate"):
        gen_antiddos(10, rate=0)
