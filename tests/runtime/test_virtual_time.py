"""Issue 10.1: with workers, periodic handlers see the moment a sequential run sees.

A periodic handler due at virtual time T runs at a barrier: every worker has
processed all its packets with time < T and none with time >= T, expired sets
are swept at T, and one worker runs the handler alone.  So its reads and its
outputs (frames, printed lines) are those of the sequential run, byte for byte,
run after run — in the Harness and in ``nfos run``.  The same mechanism bounds
how far workers drift apart in virtual time (the drift horizon Δ).
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys

import pytest

from frames import udp_frame
from nfos.io.capture import read_capture, write_pcapng
from nfos.runtime.replay import replay
from nfos.runtime.session import MAX_DRIFT_NS, Session
from nfos.testing import Harness

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")

# The NF: bytes per source in a Map; every second the top 10 go into a Vector and
# are emitted (one frame) and printed (one line).
TOP10 = """
import struct

import nfos

nf = nfos.NF("top10", devices=["lan", "wan"])


class Talker(nfos.Record):
    src: nfos.ip4
    total: nfos.u64


@nf.init
def setup(p):
    nf.state.bytes = nfos.Map(nfos.ip4, nfos.u64, 1024)
    nf.state.top = nfos.Vector(Talker, 10)


@nf.orphan
def count(pkt):
    m = nf.state.bytes
    m[pkt.ip.src] = m.get(pkt.ip.src, 0) + pkt.len


@nf.periodic(nfos.seconds(1))
def report():
    best = sorted(nf.state.bytes.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    rows = b""
    for i in range(10):
        src, total = best[i] if i < len(best) else (0, 0)
        slot = nf.state.top[i]
        slot.src = src
        slot.total = total
        rows += struct.pack("!IQ", slot.src, slot.total)
    nf.emit(b"TOP" + struct.pack("!Q", nfos.now()) + rows, "wan")
    print(f"top {nfos.now()} " + " ".join(f"{s:08x}:{n}" for s, n in best))
"""


def talkers(seed: int, n: int = 1200, span_ns: int = 4_500_000_000) -> tuple[list[bytes], list[int]]:
    """Packets of 40 sources at random times over `span_ns`, starting at 0, with some exactly at
    the due times (a packet at T comes after the handler due at T)."""
    rng = random.Random(seed)
    sources = [f"10.{i % 3}.{i // 3}.{1 + i % 7}" for i in range(40)]
    times = sorted([0] + [rng.randrange(1, span_ns) for _ in range(n)] + [k * 1_000_000_000 for k in (1, 2, 3, 4)] * 3)
    frames = [udp_frame(src=rng.choice(sources), dst="192.0.2.1", sport=1000 + rng.randrange(50), dport=9,
                        payload=bytes(rng.randrange(0, 300))) for _ in times]
    return frames, times


def expected(frames: list[bytes], times: list[int]) -> tuple[list[bytes], list[str]]:
    """The sequential semantics, computed here: at each T = 1, 2, 3, 4 s, the bytes of the
    packets with time < T."""
    frames_out, lines = [], []
    for t_s in (1, 2, 3, 4):
        T = t_s * 1_000_000_000
        total: dict[int, int] = {}
        for f, t in zip(frames, times, strict=True):
            if t < T:
                src = int.from_bytes(f[26:30], "big")
                total[src] = total.get(src, 0) + len(f)
        best = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        rows = b"".join(struct.pack("!IQ", *(best[i] if i < len(best) else (0, 0))) for i in range(10))
        frames_out.append(b"TOP" + struct.pack("!Q", T) + rows)
        lines.append(f"top {T} " + " ".join(f"{s:08x}:{n}" for s, n in best))
    return frames_out, lines


def tops(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if f.startswith(b"TOP")]


@pytest.mark.parametrize("workers", [0, 2, 2, 2])
def test_top10_snapshots_in_the_harness_are_the_sequential_ones(write_nf, workers):
    frames, times = talkers(seed=5)
    want, _ = expected(frames, times)
    with Harness(write_nf(TOP10), workers=workers) as h:
        out = h.send_many([("lan", f, t / 1e9) for f, t in zip(frames, times, strict=True)])
        assert h.stats()["packets_in"] == len(frames)
    assert tops([f for _d, f in out]) == want


@pytest.mark.parametrize("workers", [0, 2, 2, 2])
def test_top10_snapshots_of_nfos_run_are_the_sequential_ones(write_nf, tmp_path, workers):
    frames, times = talkers(seed=11)
    want_frames, want_lines = expected(frames, times)
    trace = tmp_path / "t.pcapng"
    write_pcapng(trace, ["lan", "wan"], frames, times, [0] * len(frames))
    out = tmp_path / f"out{workers}"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "nfos", "run", write_nf(TOP10), "--in", str(trace),
                        "--workers", str(workers), "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if line.startswith("top ")] == want_lines
    assert tops(read_capture(out / "wan.pcap").frames) == want_frames


# Sets expire after 0.5 s idle; every second the handler emits how many have expired: a periodic
# handler at T sees every expiry up to T (the sweep at T runs first), in every mode.
EXPIRING = """
import struct

import nfos

nf = nfos.NF("expiring", devices=["lan", "wan"])


class Count(nfos.Record):
    n: nfos.u64


@nf.init
def setup(p):
    nf.packet_sets(nfos.on("lan", ipv4=("src",)), nfos.on("wan", ipv4=("dst",)), expiry=nfos.millis(500))
    nf.state.expired = nfos.DistributedObj(Count)


@nf.new_packet_set
def new(pkt):
    nf.register(pkt)


@nf.expired
def gone(state):
    nf.state.expired.update().n += 1


@nf.periodic(nfos.seconds(1))
def report():
    nf.emit(b"EXP" + struct.pack("!QQ", nfos.now(), nf.state.expired.read().n), "wan")
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_a_periodic_handler_sees_every_expiry_up_to_its_time(write_nf, workers):
    rng = random.Random(3)
    items, last = [], {}
    for i in range(30):   # source i talks from a to b (gaps < 0.5 s), then is silent
        a = rng.randrange(0, 3_000_000_000)
        b = a + rng.randrange(0, 400_000_000)
        src = f"10.1.{i}.1"
        for t in range(a, b + 1, 100_000_000):
            items.append((t, udp_frame(src=src, dst="192.0.2.1", sport=1, dport=2)))
        last[src] = max(range(a, b + 1, 100_000_000))
    items.sort(key=lambda x: x[0])
    items.append((4_000_000_000, udp_frame(src="10.9.9.9", dst="192.0.2.1", sport=1, dport=2)))
    with Harness(write_nf(EXPIRING), workers=workers) as h:
        out = h.send_many([("lan", f, t / 1e9) for t, f in items])
    got = [struct.unpack("!QQ", f[3:19]) for _d, f in out if f.startswith(b"EXP")]
    want = [(T, sum(1 for b in last.values() if b + 500_000_000 <= T))
            for T in (1_000_000_000, 2_000_000_000, 3_000_000_000, 4_000_000_000)]
    assert got == want


# Drift: every packet records its virtual time and the moment (monotonic clock) its handler ran;
# the packets of one worker are made 10x slower.  No packet q of one worker may run after a packet
# p of another started when t_q < t_p - Δ (q was still unprocessed while p, Δ later, ran).
DRIFT = """
import time

import nfos

nf = nfos.NF("drift", devices=["lan", "wan"], params={"packets": 1})


class Seen(nfos.Record):
    vtime: nfos.u64
    real: nfos.u64


@nf.init
def setup(p):
    nf.state.seen = nfos.Vector(Seen, p.packets)


@nf.orphan
def on(pkt):
    i = int.from_bytes(pkt.payload[:4], "big")
    if pkt.payload[4]:   # the slow worker's packets: about 10x the work
        t = time.perf_counter()
        while time.perf_counter() - t < 0.0004:
            pass
    s = nf.state.seen[i]
    s.vtime = pkt.time
    s.real = time.monotonic_ns()


@nf.exit
def dump():
    for i in range(0, len(nf.state.seen), 64):
        rows = b""
        for j in range(i, min(i + 64, len(nf.state.seen))):
            rows += nf.state.seen[j].vtime.to_bytes(8, "big") + nf.state.seen[j].real.to_bytes(8, "big")
        nf.emit(b"SEEN" + i.to_bytes(4, "big") + rows, "wan")
"""


def test_the_drift_bound_holds_when_one_worker_is_ten_times_slower(write_nf):
    from nfos import _core
    from nfos.io.capture import Trace

    path = write_nf(DRIFT)
    rng = random.Random(9)
    n = 500
    flows = [(f"10.2.{i}.1", f"192.0.2.{1 + i}") for i in range(16)]
    probe = Session(path, workers=2, check=False)   # which worker each flow goes to
    try:
        probe.init()
        worker = {fl: _core.steer_frame(udp_frame(src=fl[0], dst=fl[1], sport=5, dport=6), 0)[0] for fl in flows}
    finally:
        probe.close()
    assert set(worker.values()) == {0, 1}, worker
    frames, times, on = [], [], []
    for i in range(n):
        fl = rng.choice(flows)
        slow = worker[fl] == 1
        frames.append(udp_frame(src=fl[0], dst=fl[1], sport=5, dport=6, payload=i.to_bytes(4, "big") + bytes([slow])))
        times.append(i * 200_000)   # 0.2 ms apart: 100 ms of virtual time, many Δ
        on.append(worker[fl])
    trace = Trace(["lan", "wan"], frames, times, [0] * n)
    r = replay(path, trace, workers=2, params=[f"packets={n}"], keep_output=True, check=False)
    assert r.stats["packets_in"] == n and r.stats["handler_errors"] == 0
    seen: list[tuple[int, int]] = [(0, 0)] * n
    for f in r.outputs["wan"]:
        if f.startswith(b"SEEN"):
            base = int.from_bytes(f[4:8], "big")
            for k in range(0, len(f) - 8, 16):
                seen[base + k // 16] = struct.unpack("!QQ", f[8 + k:24 + k])
    assert [v for v, _r in seen] == times
    delta = MAX_DRIFT_NS
    worst = 0
    for p in range(n):
        for q in range(p):   # q earlier in virtual time than p
            if on[q] != on[p] and seen[q][1] > seen[p][1]:   # ... but it ran after p did
                worst = max(worst, times[p] - times[q])
    assert worst <= delta, f"a worker ran {worst / 1e6:.3f} ms of virtual time ahead of another (Δ = 1 ms)"


def test_max_drift_is_a_session_option(write_nf):
    with pytest.raises(ValueError, match="max_drift_ns"):
        Session(write_nf(TOP10), workers=2, max_drift_ns=-1)
