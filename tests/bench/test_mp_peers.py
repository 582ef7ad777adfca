"""The hand-parallelised peers (bench/peers/mp_nat.py, mp_bridge.py) against the plain sequential peers.

With one process a parallel peer is the plain peer, frame for frame.  With several, the
order across processes is arbitrary, so outputs are compared as multisets, on traces where
the interleaving cannot change what passes: for the NAT only the choice of external
endpoint may differ (checked to be stable per internal endpoint and never shared), for the
bridge nothing (2 ports, every unicast flow crosses ports: ``nfos gen bridge``).
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct
from collections import Counter

import pytest

from frames import assert_checksums_valid, tcp_frame, udp_frame
from nfos.io import gen_caida
from nfos.io.capture import Trace
from nfos.io.gen_bridge import gen_bridge

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECOND = 1_000_000_000


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peers():
    return {n: load(f"bench/peers/{n}.py", f"bench_peer_{n}")
            for n in ("plain_nat", "mp_nat", "plain_bridge", "mp_bridge")}


# ------------------------------------------------------------------ NAT

def test_mp_nat_one_process_is_the_plain_peer(peers):
    """Replies to the endpoints a sequential NAT allocates, hairpins, ARP, ICMP, VLAN, IP options,
    fragments and malformed frames (the trace of tests/nf/test_nat.py)."""
    nat_tests = load("tests/nf/test_nat.py", "nat_tests_for_mp")
    base = gen_caida(6000, 600, reverse=0.5, rate=5000, seed=3)
    trace = nat_tests.nat_trace(base, 64512, 64512, random.Random(7))
    want = peers["plain_nat"].run(trace.frames, trace.devs, trace.times_ns, public_ips=1)
    counters: dict = {}
    got, seconds = peers["mp_nat"].run(trace.frames, trace.devs, trace.times_ns, workers=1, public_ips=1,
                                       counters=counters)
    assert got == want and seconds > 0
    assert len(want["lan"]) > 1000 and any(f[12:14] == b"\x08\x06" for f in want["wan"])
    assert counters["out_lan"] == len(want["lan"]) and counters["exhausted_ports"] == 0


def tagged_nat_trace(endpoints: int = 400, seed: int = 5) -> Trace:
    """LAN->WAN only: each internal endpoint (TCP or UDP) sends to three remote hosts, interleaved;
    the payload names the endpoint, so its public endpoint can be read off the output."""
    rng = random.Random(seed)
    eps = list(dict.fromkeys((0x0A000000 | rng.randrange(1 << 24), rng.randrange(1024, 65536),
                              rng.choice((6, 17))) for _ in range(endpoints)))
    frames, times = [], []
    for _ in range(3):
        order = eps[:]
        rng.shuffle(order)
        for src, sport, proto in order:
            tag = struct.pack("!IHB", src, sport, proto)
            dst = 0x0B000000 + rng.randrange(1 << 24)
            frames.append(udp_frame(src, dst, sport, 53, tag) if proto == 17 else
                          tcp_frame(src, dst, sport, 443, payload=tag))
            times.append(SECOND + len(times) * 1000)
    return Trace(["lan", "wan"], frames, times, [0] * len(frames), [])


def _anonymous(f: bytes) -> bytes:
    """The frame with its source address and port and the checksums blanked."""
    l4 = 34
    at = l4 + (16 if f[23] == 6 else 6)
    b = bytearray(f)
    b[24:30] = bytes(6)
    b[l4:l4 + 2] = b"\0\0"
    b[at:at + 2] = b"\0\0"
    return bytes(b)


@pytest.mark.parametrize("workers", [2, 3])
def test_mp_nat_outputs_equal_the_plain_peer_up_to_the_external_endpoint(peers, workers):
    trace = tagged_nat_trace()
    want = peers["plain_nat"].run(trace.frames, trace.devs, trace.times_ns, public_ips=1)
    counters: dict = {}
    got, _ = peers["mp_nat"].run(trace.frames, trace.devs, trace.times_ns, workers=workers, public_ips=1,
                                 counters=counters)
    assert not got["lan"] and not want["lan"] and len(got["wan"]) == len(want["wan"]) == len(trace)
    assert Counter(map(_anonymous, got["wan"])) == Counter(map(_anonymous, want["wan"]))
    assert all(p["packets"] > 0 for p in counters["per_process"]) and len(counters["per_process"]) == workers
    seen: dict[tuple[int, int, int], tuple[bytes, int]] = {}
    for f in got["wan"]:
        assert_checksums_valid(f)
        payload = f[54:61] if f[23] == 6 else f[42:49]
        internal = struct.unpack("!IHB", payload)
        public = (f[26:30], struct.unpack_from("!H", f, 34)[0])
        assert seen.setdefault(internal, public) == public          # endpoint-independent mapping
    for proto in (6, 17):
        pubs = [p for k, p in seen.items() if k[2] == proto]
        assert len(set(pubs)) == len(pubs)                           # never shared


def test_mp_nat_exhaustion_is_counted(peers):
    trace = tagged_nat_trace(300)
    kw = {"public_ips": 1, "ports_per_ip": 50}
    plain: dict = {}
    peers["plain_nat"].run(trace.frames, trace.devs, trace.times_ns, counters=plain, **kw)
    counters: dict = {}
    got, _ = peers["mp_nat"].run(trace.frames, trace.devs, trace.times_ns, workers=2, counters=counters, **kw)
    # every endpoint sends 3 packets; 50 + 50 ports (TCP, UDP) are handed out, never freed
    assert counters["exhausted_ports"] == plain["exhausted_ports"] > 0
    assert len(got["wan"]) == len(trace) - plain["exhausted_ports"]


def test_mp_nat_rejects_address_filtering(peers):
    with pytest.raises(ValueError, match="endpoint"):
        peers["mp_nat"].run([], [], [], workers=1, filtering="address")


# ------------------------------------------------------------------ bridge

@pytest.mark.parametrize("seed,params", [
    (1, {"ports": 3, "capacity": 4, "validity": SECOND, "refresh_interval": 300_000_000}),
    (2, {"ports": 3, "capacity": 4, "validity": SECOND, "refresh_interval": 0}),
    (4, {"ports": 3, "capacity": 3, "validity": 0, "refresh_interval": 0}),
])
def test_mp_bridge_one_process_is_the_plain_peer(peers, seed, params):
    """Moves, expiry, a full table, group addresses, filtering and malformed frames
    (the hand traces of tests/nf/test_bridge.py)."""
    bridge_tests = load("tests/nf/test_bridge.py", "bridge_tests_for_mp")
    trace = bridge_tests.hand_trace(seed)
    want = peers["plain_bridge"].run(trace.frames, trace.devs, trace.times_ns, **params)
    got, seconds = peers["mp_bridge"].run(trace.frames, trace.devs, trace.times_ns, workers=1, **params)
    assert got == want and seconds > 0


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("refresh", [60 * SECOND, 0])
def test_mp_bridge_output_multiset_equals_the_plain_peer(peers, workers, refresh):
    trace = gen_bridge(6000, macs=200, flow_packets=400, seed=5)
    want = peers["plain_bridge"].run(trace.frames, trace.devs, trace.times_ns, refresh_interval=refresh)
    counters: dict = {}
    got, _ = peers["mp_bridge"].run(trace.frames, trace.devs, trace.times_ns, workers=workers,
                                    refresh_interval=refresh, counters=counters)
    assert {d: sorted(v) for d, v in got.items()} == {d: sorted(v) for d, v in want.items()}
    assert sum(len(v) for v in got.values()) == len(trace)
    assert len(counters["per_process"]) == workers and all(p["packets"] for p in counters["per_process"])


def test_mp_bridge_counts_without_keeping_output(peers):
    trace = gen_bridge(2000, macs=64, flow_packets=100, seed=2)
    want = peers["plain_bridge"].run(trace.frames, trace.devs, trace.times_ns)
    counters: dict = {}
    got, _ = peers["mp_bridge"].run(trace.frames, trace.devs, trace.times_ns, workers=2, keep_output=False,
                                    counters=counters)
    assert got == {"p0": [], "p1": []}
    assert (counters["out_p0"], counters["out_p1"]) == (len(want["p0"]), len(want["p1"]))


def test_a_failing_peer_process_is_reported(peers):
    with pytest.raises(RuntimeError, match="peer process failed"):
        peers["mp_bridge"].run([b"\xff" * 6 + b"\x02" * 54], [7], [SECOND], workers=1)   # a flood from port 7 of 2
