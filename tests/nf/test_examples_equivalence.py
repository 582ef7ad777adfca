"""The example NFs give the same output frames in every mode, and the plain peers match them.

* ``--workers 0``, 1 and 2 give the same multiset of frames per device for
  the firewall, the policer and the dummy NF (their state is per packet set,
  so the order in which workers interleave packets cannot matter).
* The plain sequential Python peers (bench/peers) give exactly the
  sequential nfos run's output, frame for frame and in order.
* The Anti-DDoS NF, run sequentially with ``staleness=0``, drops exactly the
  new flows that a direct model of its contract drops.

The "mixed" trace is a CAIDA-like trace whose WAN replies are delayed by up to
1 s (so firewall sessions expire before some replies), with copies of LAN
frames sent from WAN (unsolicited) and odd frames: 802.1Q tags, IP options,
fragments, malformed headers, ARP, ICMP, unpadded frames.
"""

import importlib.util
import os
import random
import struct

import pytest

from nfos.io import gen_antiddos, gen_caida
from nfos.io.capture import Trace
from nfos.runtime.replay import replay

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECOND = 1_000_000_000


def example(name: str) -> str:
    return os.path.join(ROOT, "examples", name)


def peer(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", "peers", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ traces

def _odd(frame: bytes, kind: str) -> bytes:
    """A variant of a plain Ethernet/IPv4/TCP|UDP frame of the generator."""
    eth, ip, rest = frame[:14], frame[14:34], frame[34:]
    total = struct.unpack_from("!H", ip, 2)[0]
    if kind == "vlan":
        return frame[:12] + b"\x81\x00\x00\x07" + frame[12:]
    if kind == "options":
        return eth + bytes([0x46]) + ip[1:2] + struct.pack("!H", total + 4) + ip[4:] + b"\x01" * 4 + rest
    if kind == "first_fragment":
        return eth + ip[:6] + b"\x20\x00" + ip[8:] + rest
    if kind == "later_fragment":
        return eth + ip[:6] + b"\x00\x10" + ip[8:] + rest
    if kind == "bad_length":
        return eth + ip[:2] + struct.pack("!H", len(frame)) + ip[4:] + rest
    if kind == "bad_l4":   # TCP data offset 16, or a UDP datagram too short for its header
        if ip[9] == 6:
            return eth + ip + rest[:12] + b"\x40" + rest[13:]
        return eth + ip[:2] + struct.pack("!H", 24) + ip[4:] + rest
    if kind == "icmp":
        return eth + ip[:9] + b"\x01" + ip[10:] + rest
    if kind == "unpadded":
        return frame[:14 + total]
    if kind == "arp":
        return eth[:12] + b"\x08\x06" + bytes(28)
    if kind == "runt":
        return frame[:20]
    raise ValueError(kind)


ODD = ["vlan", "options", "first_fragment", "later_fragment", "bad_length", "bad_l4", "icmp",
       "unpadded", "arp", "runt"]


def mixed_trace(packets: int, flows: int, seed: int) -> Trace:
    base = gen_caida(packets, flows, reverse=0.5, rate=5000, seed=seed)
    rng = random.Random(seed)
    rows = []
    for i, (frame, dev, t) in enumerate(zip(base.frames, base.devs, base.times_ns, strict=True)):
        if dev == 1:
            t += rng.randrange(SECOND)   # a late reply
        rows.append((t, i, dev, frame))
        r = rng.random()
        if r < 0.02 and dev == 0:
            rows.append((t, i, 1, frame))   # unsolicited, from WAN
        elif r < 0.08:
            rows.append((t, i, dev, _odd(frame, rng.choice(ODD))))
    rows.sort()
    return Trace(["lan", "wan"], [r[3] for r in rows], [r[0] for r in rows], [r[2] for r in rows], [])


@pytest.fixture(scope="module")
def caida() -> Trace:
    return gen_caida(16_000, 1_500, reverse=0.5, rate=5000, seed=1)


@pytest.fixture(scope="module")
def mixed() -> Trace:
    return mixed_trace(12_000, 1_000, seed=3)


def run(nf: str, trace: Trace, workers: int, params: list[str]):
    r = replay(example(nf), trace, workers=workers, keep_output=True, params=params)
    assert r.stats["handler_errors"] == 0
    assert r.stats["table_full"] == 0
    return r


def assert_modes_agree(nf: str, trace: Trace, params: list[str]):
    """Workers 0, 1 and 2 give the same frames per device; returns the sequential run."""
    seq = run(nf, trace, 0, params)
    want = {d: sorted(v) for d, v in seq.outputs.items()}
    for workers in (1, 2):
        got = run(nf, trace, workers, params).outputs
        assert {d: sorted(v) for d, v in got.items()} == want, f"{nf} {params}: workers={workers}"
    return seq


# ------------------------------------------------------------------ firewall

FIREWALL = {"caida": ([], {}), "mixed": (["expiry=500ms"], {"expiry": SECOND // 2})}


@pytest.mark.parametrize("trace_name", ["caida", "mixed"])
def test_firewall_modes_and_peer_agree(trace_name, request):
    trace = request.getfixturevalue(trace_name)
    params, kwargs = FIREWALL[trace_name]
    seq = assert_modes_agree("firewall.py", trace, params)
    assert peer("plain_firewall").run(trace.frames, trace.devs, trace.times_ns, **kwargs) == seq.outputs
    if trace_name == "mixed":   # the trace exercises drops and expiry
        wan_in = sum(trace.devs)
        assert 0 < len(seq.outputs["lan"]) < wan_in
        assert seq.stats["packet_sets_expired"] > 0
        assert seq.stats["malformed"] > 0


# ------------------------------------------------------------------ policer

POLICER = (["rate=2000", "burst=3000"], {"rate": 2000, "burst": 3000})


@pytest.mark.parametrize("trace_name", ["caida", "mixed"])
def test_policer_modes_and_peer_agree(trace_name, request):
    trace = request.getfixturevalue(trace_name)
    params, kwargs = POLICER
    seq = assert_modes_agree("policer.py", trace, params)
    assert peer("plain_policer").run(trace.frames, trace.devs, trace.times_ns, **kwargs) == seq.outputs
    wan_in = sum(trace.devs)
    assert 0 < len(seq.outputs["lan"]) < wan_in   # some WAN packets are policed
    assert seq.stats["packet_sets_expired"] > 0


def test_policer_peer_default_params(caida):
    seq = run("policer.py", caida, 0, [])
    assert peer("plain_policer").run(caida.frames, caida.devs, caida.times_ns) == seq.outputs


# ------------------------------------------------------------------ dummy

@pytest.mark.parametrize("mode,skew", [("ro", 0.0), ("rw", 0.0), ("rw", 0.99)])
def test_dummy_modes_agree(mode, skew):
    trace = gen_caida(8_000, 800, reverse=0.5, seed=2)
    seq = assert_modes_agree("dummy.py", trace, [f"mode={mode}", f"skew={skew}"])
    wan_in = sum(trace.devs)
    assert len(seq.outputs["lan"]) == wan_in
    assert len(seq.outputs["wan"]) == len(trace) - wan_in


# ------------------------------------------------------------------ Anti-DDoS

def antiddos_model(trace: Trace, min_flows: int, threshold: float) -> list[bytes]:
    """The frames the Anti-DDoS contract sends to WAN (no flow expires within the trace)."""
    one_packet: dict[tuple, bool] = {}
    flows = one_packet_flows = 0
    out = []
    for frame, dev in zip(trace.frames, trace.devs, strict=True):
        assert dev == 0 and frame[23] in (6, 17)
        key = (frame[26:34], frame[34:38], frame[23])
        if key in one_packet:
            if one_packet[key]:
                one_packet[key] = False
                one_packet_flows -= 1
            out.append(frame)
            continue
        one_packet[key] = True
        flows += 1
        one_packet_flows += 1
        if not (flows >= min_flows and one_packet_flows > threshold * flows):
            out.append(frame)
    return out


@pytest.mark.parametrize("threshold", [0.8, 0.7])
def test_antiddos_drops_new_flows_under_attack(threshold):
    trace = gen_antiddos(10_000)
    params = ["staleness=0", "min_flows=100", f"threshold={threshold}"]
    seq = run("anti_ddos.py", trace, 0, params)
    want = antiddos_model(trace, 100, threshold)
    assert seq.outputs == {"lan": [], "wan": want}
    dropped = len(trace) - len(want)
    assert seq.stats["dropped"] == dropped
    new_flows = len(trace) // 5
    if threshold == 0.8:   # 80% one-packet flows: only a normal flow's first packet tips the share
        assert dropped == (new_flows - 100) // 5
    else:                  # every new flow from the 100th on
        assert dropped == new_flows - 99
    # everything before the 100th flow's first packet passes
    assert want[:495] == trace.frames[:495]


def test_antiddos_parallel_accounts_for_every_packet():
    trace = gen_antiddos(10_000)
    r = run("anti_ddos.py", trace, 2, ["min_flows=100", "threshold=0.7"])
    assert r.stats["dropped"] > 0
    assert len(r.outputs["wan"]) + r.stats["dropped"] == len(trace)
