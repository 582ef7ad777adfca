"""Property: on random traces, N workers give the sequential run's output, byte for byte.

Traces mix both directions of a few hosts and ports (so sessions and policed
hosts repeat), non-IP frames, UDP and TCP, and time gaps long enough to
expire sets.  The multiset of frames per output device must be identical
with --workers 0 and --workers 2.
"""

import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfos.io.capture import Trace
from nfos.io.gen import checksum16
from nfos.runtime.replay import replay

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAN_HOSTS = [0x0A000001, 0x0A000002, 0x0A000003]
WAN_HOSTS = [0x08080808, 0x01010101]
PORTS = [53, 80, 1234, 40000]


def frame(src: int, dst: int, sport: int, dport: int, proto: int, size: int) -> bytes:
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 512, 0, 0)
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + size, 0)
    payload = bytes(size)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4) + size, 0, 0, 64, proto, 0,
                     src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    ip = ip[:10] + struct.pack("!H", checksum16(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + l4 + payload


packet = st.tuples(
    st.sampled_from(["lan", "wan", "arp"]), st.sampled_from(LAN_HOSTS), st.sampled_from(WAN_HOSTS),
    st.sampled_from(PORTS), st.sampled_from(PORTS), st.sampled_from([6, 17]),
    st.integers(0, 1200), st.sampled_from([0, 1_000, 50_000_000, 2_000_000_000]))


def build(packets) -> Trace:
    frames, times, devs = [], [], []
    t = 1_000_000_000
    for kind, lan, wan, lport, wport, proto, size, gap in packets:
        t += gap
        if kind == "lan":
            frames.append(frame(lan, wan, lport, wport, proto, size))
            devs.append(0)
        elif kind == "wan":
            frames.append(frame(wan, lan, wport, lport, proto, size))
            devs.append(1)
        else:
            frames.append(b"\xff" * 6 + b"\x02\0\0\0\0\x03\x08\x06" + bytes(28))
            devs.append(size % 2)
        times.append(t)
    return Trace(["lan", "wan"], frames, times, devs, [])


def outputs(nf: str, trace: Trace, workers: int, params: list[str]) -> dict[str, list[bytes]]:
    r = replay(os.path.join(ROOT, "examples", nf), trace, workers=workers, params=params, keep_output=True)
    assert r.stats["handler_errors"] == 0
    return {d: sorted(v) for d, v in r.outputs.items()}


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(packet, min_size=1, max_size=300))
def test_firewall_parallel_equals_sequential(packets):
    trace = build(packets)
    params = ["expiry=1s"]
    assert outputs("firewall.py", trace, 2, params) == outputs("firewall.py", trace, 0, params)


@SETTINGS
@given(st.lists(packet, min_size=1, max_size=300))
def test_policer_parallel_equals_sequential(packets):
    trace = build(packets)
    params = ["rate=20000", "burst=3000"]
    assert outputs("policer.py", trace, 2, params) == outputs("policer.py", trace, 0, params)
