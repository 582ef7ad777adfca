"""A killed worker is recovered and respawned (issue 13, points 1-2).

When a worker dies (any signal, any moment: mid-handler, mid-commit), the control process
completes or discards its commit from the redo log, rolls back its transaction's private
writes (packet-set state and table) from the undo log in the arena, releases its locks and
forks a new worker for the same slot, which goes on with the same packet-set table and RX
ring.  Only the batch it had in flight is lost, and counted (``packets_lost``, ``respawns``).
A slot that dies 5 times within 10 s stops the run with an error naming the handler.

    pytest tests/reliability/test_respawn.py            # default: 1 kill, 10 random kills per NF
    pytest -m slow tests/reliability/test_respawn.py    # 100 random kills per NF
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time

import pytest

from frames import udp_frame
from nfos import _core
from nfos.io import gen_caida
from nfos.io.capture import Trace
from nfos.runtime.replay import replay
from nfos.runtime.session import WorkerDied
from nfos.testing import Harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAT = os.path.join(ROOT, "examples", "nat.py")
BRIDGE = os.path.join(ROOT, "examples", "bridge.py")

# Each session counts its packets and writes the count into the TTL of each packet it sends,
# so a packet set whose state kept a lost packet's write shows in every later frame.  A frame
# to port 6666 kills its worker (mid-handler: the batch's transaction is in progress).
COUNTING = os.path.join(ROOT, "tests", "runtime", "counting_nf.py")   # param die=kill|exit: port 6666 dies


def line_of(path: str, text: str) -> int:
    """The line of ``path`` that holds ``text`` (what an error names)."""
    with open(path) as f:
        return next(i for i, line in enumerate(f, 1) if text in line)


FIRST_LINE = line_of(COUNTING, "def first(pkt):")   # the new-packet-set handler an error names

# Money moves between accounts (a Vector); a DistributedObj counts the transfers.  The total
# is exact only if every commit is applied whole or not at all.  A frame to port 7777 makes
# its worker SIGKILL itself in the middle of the commit's write-back (an internal test hook).
TRANSFER = """
import nfos
from nfos import _core

nf = nfos.NF("transfer", devices=["lan", "wan"])
ACCOUNTS = 16
START = 1000


class Done(nfos.Record):
    transfers: nfos.u64


@nf.init
def setup(p):
    nf.state.accounts = nfos.Vector(nfos.u64, ACCOUNTS)
    nf.state.done = nfos.DistributedObj(Done, merge={"transfers": "sum"})
    for i in range(ACCOUNTS):
        nf.state.accounts[i] = START


@nf.orphan
def transfer(pkt):
    a, b = pkt.l4.sport % ACCOUNTS, pkt.l4.dport % ACCOUNTS
    amount = pkt.l4.sport // 16 % 50 + 1
    acc = nf.state.accounts
    if a != b and acc[a] >= amount:
        acc[a] -= amount
        acc[b] += amount
    nf.state.done.update().transfers += 1
    if pkt.l4.dport == 7777:
        _core._die_in_commit(1)
    pkt.send(1 - pkt.dev_index)
"""


def write_nf(tmp_path, text: str, name: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def numbered(n: int, flows: int = 50, poison: tuple[int, ...] = (), dport: int = 6666) -> Trace:
    """``n`` UDP frames of ``flows`` sessions, frame i carrying i in its payload; the frames at
    ``poison`` go to ``dport`` (one session of their own)."""
    t = Trace(["lan", "wan"])
    for i in range(n):
        f = i % flows
        if i in poison:
            frame = udp_frame("10.9.9.9", "192.0.2.7", 4444, dport, payload=i.to_bytes(4, "big"))
        else:
            frame = udp_frame(f"10.0.{f // 250}.{f % 250 + 1}", "192.0.2.7", 40000 + f, 1000 + f,
                              payload=i.to_bytes(4, "big"))
        t.frames.append(frame)
        t.times_ns.append(1_000_000 + i * 1000)
        t.devs.append(0)
    return t


def frame_id(frame: bytes) -> int:
    return int.from_bytes(frame[42:46], "big")


def sequential_over(nf: str, trace: Trace, kept: set[int]) -> list[bytes]:
    """The sequential run's output over the frames of ``trace`` whose ids are in ``kept``."""
    sub = Trace(trace.dev_names)
    for i, (f, t, d) in enumerate(zip(trace.frames, trace.times_ns, trace.devs, strict=True)):
        if i in kept:
            sub.frames.append(f)
            sub.times_ns.append(t)
            sub.devs.append(d)
    return replay(nf, sub, workers=0, keep_output=True, check=False).outputs["wan"]


# ---------------------------------------------------------------- one kill, replay

@pytest.mark.parametrize("batch", [32, 1])
def test_a_worker_killed_mid_handler_is_respawned(tmp_path, batch):
    """SIGKILL inside a handler (its batch's transaction half done), 2 workers: the run completes,
    one respawn, only that batch lost, ``packets_in + packets_lost`` is the trace, and the output
    is the sequential run's over the packets not lost (the lost batch's writes to packet-set
    state and to the worker's table were rolled back)."""
    nf = COUNTING
    trace = numbered(4000, poison=(1500,))
    r = replay(nf, trace, workers=2, keep_output=True, batch=batch, check=False, params=["die=kill"])
    s = r.stats
    assert s["respawns"] == 1
    assert 1 <= s["packets_lost"] <= batch
    assert s["packets_in"] + s["packets_lost"] == len(trace)
    out = r.outputs["wan"]
    ids = {frame_id(f) for f in out}
    assert len(ids) == len(out) == s["packets_in"]
    assert 1500 not in ids   # the killing frame was in the lost batch
    assert collections.Counter(out) == collections.Counter(sequential_over(nf, trace, ids))


def test_a_worker_killed_mid_commit_has_its_commit_completed(tmp_path):
    """SIGKILL between the first and the second object written back by a commit: the control
    process completes the commit from the redo log (the transfer is applied whole: the total is
    exact) with the batch's output, staged before the commit, and its count: that batch is not
    lost; its locks are released and the run goes on with a new worker."""
    nf = write_nf(tmp_path, TRANSFER, "transfer.py")
    trace = numbered(3000, flows=64, poison=(1000,), dport=7777)
    r = replay(nf, trace, workers=2, keep_output=True, check=False)
    s = r.stats
    assert s["respawns"] == 1
    assert s["packets_in"] + s["packets_lost"] == len(trace)
    ids = [frame_id(f) for f in r.outputs["wan"]]
    assert 1000 in ids and len(ids) == len(set(ids)) == s["packets_in"]
    # nothing lost, unless aborts had split the batch: then the half after the one that died
    assert s["packets_lost"] == 0 or s["batch_splits"] > 0
    with Harness(nf, workers=2, check=False) as h:   # the same, where the final state can be read
        h.send_many([("lan", f) for f in trace.frames])
        st = h.nf.state
        total, done = h.transact(lambda: (sum(st.accounts[i] for i in range(16)), st.done.read().transfers))
        hs = h.stats()
    assert hs["respawns"] == 1
    assert total == 16 * 1000
    assert done == hs["packets_in"] == len(trace) - hs["packets_lost"]


# ------------------------------------------------------- a handler that always dies

def test_a_handler_that_exits_stops_the_run_with_a_clear_error(tmp_path):
    """A handler that calls os._exit: the slot dies again and again; the 5th death within 10 s
    stops the run with one error naming the worker and the handler's line, not a respawn loop."""
    trace = numbered(3000, poison=tuple(range(100, 3000, 100)))
    t0 = time.monotonic()
    with pytest.raises(WorkerDied) as e:
        replay(COUNTING, trace, workers=2, check=False, params=["die=exit"])
    assert time.monotonic() - t0 < 10
    msg = str(e.value)
    assert "died 5 times within 10 s" in msg
    assert "exit code 3" in msg
    # each killing frame opens a set (the one before was lost with its registration)
    assert f"in @nf.new_packet_set first (counting_nf.py:{FIRST_LINE})" in msg, msg


def test_nfos_run_reports_the_dying_handler(tmp_path):
    """The same through ``nfos run``: one error line, exit status 1, no worker left."""
    import subprocess
    import sys

    from nfos.io.capture import write_pcapng

    trace = numbered(2000, poison=tuple(range(100, 2000, 100)))
    pcap = tmp_path / "in.pcapng"
    write_pcapng(str(pcap), trace.dev_names, trace.frames, trace.times_ns, trace.devs)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    p = subprocess.run([sys.executable, "-m", "nfos", "run", COUNTING, "--in", str(pcap), "--workers", "2", "-q",
                        "--param", "die=exit"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode != 0
    lines = [x for x in p.stderr.splitlines() if x.startswith("nfos: error")]
    assert len(lines) == 1 and "died 5 times within 10 s" in lines[0] and f"counting_nf.py:{FIRST_LINE}" in lines[0], p.stderr


# -------------------------------------------------- random kills: the invariants

def kill_during(h: Harness, items: list[tuple[str, bytes, float]], rng: random.Random, kills: int,
                waited: list[float]) -> list[tuple[str, bytes]]:
    """Send ``items`` through the Harness in ``kills`` chunks, SIGKILLing a random worker at a
    random moment while each chunk is processed; every death is recovered before the next.
    Returns the output."""
    s = h.session
    assert s is not None
    s.respawn_limit = 10 ** 6   # these deaths are the test's, not a handler's
    step = max(1, len(items) // kills)
    out: list[tuple[str, bytes]] = []
    for k in range(kills):
        chunk = items[k * step:(k + 1) * step] if k < kills - 1 else items[k * step:]
        victim = rng.randrange(s.workers)
        proc = s.procs[victim]
        delay = rng.random() * 0.0015

        def kill(p=proc, d=delay, w=victim, done_at_respawn: dict[int, int] = {}) -> None:  # noqa: B006
            time.sleep(d)
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            t_kill = time.monotonic()
            while time.monotonic() - t_kill < 2:   # until the slot processes again (or has nothing to)
                if s.procs[w] is not p:
                    done = done_at_respawn.setdefault(w, _core.rx_done(w))
                    if _core.rx_done(w) > done or not _core.rx_pending(w):
                        waited.append(time.monotonic() - t_kill)
                        return
                time.sleep(0.0002)

        t = threading.Thread(target=kill, kwargs={"done_at_respawn": {}})
        t.start()
        out += h.send_many(chunk)
        while t.is_alive():   # a death after the chunk was done is found here
            s.check_workers()
            time.sleep(0.0005)
        proc.join(5)
        s.check_workers()
        assert s.procs[victim] is not proc   # respawned
    return out


def nat_items(n: int, seed: int) -> list[tuple[str, bytes, float]]:
    base = gen_caida(n, max(1, n // 20), rate=20_000, seed=seed)
    return [("lan", f, t / 1e9) for f, t in zip(base.frames, base.times_ns, strict=True)]


def check_nat(h: Harness) -> None:
    st = h.nf.state
    n = h.nf.params.public_ips * h.nf.params.ports_per_ip

    def read():
        out = {}
        for name in ("tcp_ports", "udp_ports"):
            a = getattr(st, name)
            out[name] = (*a.counts(), a.capacity)
        items = list(st.mappings.items())
        eps = {}
        for key, index in items:
            proto = key & 0xFF
            alloc, base = (st.tcp_ports, 0) if proto == 6 else (st.udp_ports, n)
            if alloc.is_allocated(index):
                ep = st.endpoints[base + index]
                eps[key] = (proto, index, ep.ip, ep.port)
        return out, [k for k, _ in items], eps

    counts, keys, live = h.transact(read)
    for allocated, free, capacity in counts.values():
        assert allocated + free == capacity
    assert len(keys) == len(set(keys))   # every key once
    owners = collections.Counter((proto, index) for proto, index, _ip, _port in live.values())
    assert all(c == 1 for c in owners.values())   # no live index mapped by two keys
    for key, (_proto, _index, ip, port) in live.items():   # forward (key -> index) = reverse (index -> endpoint)
        assert (ip, port) == (key >> 24, key >> 8 & 0xFFFF)


def bridge_items(n: int, seed: int) -> list[tuple[str, bytes, float]]:
    rng = random.Random(seed)
    macs = [f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(64)]
    out = []
    for i in range(n):
        a, b = rng.sample(macs, 2)
        port = "p0" if macs.index(a) % 2 == 0 else "p1"
        out.append((port, udp_frame("10.0.0.1", "10.0.0.2", 40000 + i % 1000, 9, eth_src=a, eth_dst=b),
                    i * 0.0001))
    return out


def check_bridge(h: Harness) -> None:
    st = h.nf.state

    def read():
        items = list(st.table.items())
        return [k for k, _ in items], [v.idx for _k, v in items if st.leases.is_allocated(v.idx)], \
            (*st.leases.counts(), st.leases.capacity)

    keys, idxs, (allocated, free, capacity) = h.transact(read)
    assert len(keys) == len(set(keys))
    assert len(idxs) == len(set(idxs))   # no lease index owned by two MACs
    assert allocated + free == capacity


def transfer_items(n: int, seed: int) -> list[tuple[str, bytes, float]]:
    rng = random.Random(seed)
    return [("lan", udp_frame("10.0.0.1", "10.0.0.2", rng.randrange(1 << 16), rng.randrange(1 << 15)),
             i * 0.00001) for i in range(n)]


def check_transfer(h: Harness) -> None:
    st = h.nf.state
    total, done = h.transact(lambda: (sum(st.accounts[i] for i in range(16)), st.done.read().transfers))
    s = h.stats()
    assert total == 16 * 1000
    assert done == s["packets_in"]   # a transfer counted exactly when its packet is


CASES = {
    "nat": (NAT, nat_items, check_nat, {"public_ips": 1, "ports_per_ip": 2000}),
    "bridge": (BRIDGE, bridge_items, check_bridge, {"ports": 2}),
    "transfer": (None, transfer_items, check_transfer, {}),
}


def random_kills(tmp_path, case: str, kills: int, packets: int, seed: int = 1) -> dict[str, float]:
    path, items_of, check, params = CASES[case]
    if path is None:
        path = write_nf(tmp_path, TRANSFER.replace("7777", "-1"), "transfer.py")
    items = items_of(packets, seed)
    waited: list[float] = []
    t0 = time.monotonic()
    with Harness(path, workers=2, params=params, check=False) as h:
        kill_during(h, items, random.Random(seed), kills, waited)
        h.advance(0.001)
        s = h.stats()
        assert s["respawns"] == kills
        assert s["packets_in"] + s["packets_lost"] == len(items)
        assert s["packets_lost"] <= 32 * kills
        check(h)
        respawn_s = max(r["seconds"] for r in h.session.recoveries) if h.session else 0.0
    return {"kills": kills, "lost": s["packets_lost"], "resumed_max_s": max(waited, default=0.0),
            "respawn_max_s": respawn_s, "seconds": time.monotonic() - t0}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invariants_after_10_random_kills(tmp_path, case):
    r = random_kills(tmp_path, case, kills=10, packets=3000)   # (the invariants: checked inside)
    print(case, r)
    assert r["kills"] == 10 and r["lost"] <= 32 * 10


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_invariants_after_100_random_kills(tmp_path, case):
    r = random_kills(tmp_path, case, kills=100, packets=30_000, seed=2)
    print(case, r)
    assert r["kills"] == 100 and r["lost"] <= 32 * 100


def test_the_counting_nf_after_random_kills_is_the_sequential_run(tmp_path):
    """10 kills at random moments (Harness, 2 workers): the output is the sequential run's over
    the frames not lost, and the frames lost are exactly ``packets_lost``."""
    nf = COUNTING
    trace = numbered(6000, flows=80)
    items = [("lan", f, t / 1e9) for f, t in zip(trace.frames, trace.times_ns, strict=True)]
    waited: list[float] = []
    with Harness(nf, workers=2, check=False) as h:
        out = [f for d, f in kill_during(h, items, random.Random(5), 10, waited) + h.advance(0.001) if d == "wan"]
        s = h.stats()
    assert s["respawns"] == 10
    ids = {frame_id(f) for f in out}
    assert len(trace) - len(ids) == s["packets_lost"], (sorted(set(range(len(trace))) - ids), s["packets_in"],
                                                        s["dropped"], s["handler_errors"], len(out))
    assert collections.Counter(out) == collections.Counter(sequential_over(nf, trace, ids))
    assert max(waited) < 0.25   # 17-34 ms here; a shared 2-core VM can stall a process that long


# --------------------------------------------------- deaths at a barrier, in a sweep

PERIODIC = """
import os
import nfos

nf = nfos.NF("periodic_death", devices=["lan", "wan"])
MARK = MARKPATH


class Count(nfos.Record):
    n: nfos.u32


def first_death():
    # True once (in whichever process gets there first)
    try:
        os.close(os.open(MARK, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


@nf.init
def setup(p):
    nf.state.seen = nfos.Vector(nfos.u64, 1)
    nf.state.runs = nfos.Vector(nfos.u64, 1)
    nf.packet_sets(nfos.on("lan", ipv4=("src", "dst"), l4=("sport", "dport")), protocols=("udp",), state=Count,
                   expiry=nfos.millis(EXPIRY))


@nf.new_packet_set
def first(pkt):
    nf.register(pkt).n = 1
    nf.state.seen[0] += 1
    pkt.send("wan")


@nf.packet
def more(pkt, s):
    s.n += 1
    nf.state.seen[0] += 1
    pkt.send("wan")


@nf.expired
def gone(s):
    if WHERE == "expired" and first_death():
        os.kill(os.getpid(), 9)
    nf.emit(bytes(12) + b"\\x88\\xb6" + s.n.to_bytes(4, "big") + bytes(40), "wan")


@nf.periodic(nfos.millis(1))
def snapshot():
    nf.state.runs[0] += 1
    if WHERE == "periodic" and nf.state.runs[0] == 3 and first_death():
        os.kill(os.getpid(), 9)   # leading the barrier, its writes half done
    nf.emit(bytes(12) + b"\\x88\\xb5" + nf.state.seen[0].to_bytes(8, "big") + nf.state.runs[0].to_bytes(8, "big")
            + bytes(30), "wan")
"""


def test_a_worker_killed_leading_a_periodic_barrier(tmp_path):
    """SIGKILL inside a periodic handler, which runs alone at its barrier in the leading worker:
    its in-place writes are rolled back, the barrier is open again, the replacement leads it, and
    the output (every snapshot included) is the sequential run's; nothing is lost."""
    nf = tmp_path / "periodic.py"
    nf.write_text(PERIODIC.replace("MARKPATH", repr(str(tmp_path / "died"))).replace("WHERE", '"periodic"')
                  .replace("EXPIRY", "1000"))
    trace = numbered(4000, flows=40)   # 4 ms of trace: 3-4 barriers
    (tmp_path / "died").touch()   # the sequential run is this process: it must not die
    seq = replay(str(nf), trace, workers=0, keep_output=True, check=False)
    (tmp_path / "died").unlink()
    r = replay(str(nf), trace, workers=2, keep_output=True, check=False)
    assert (tmp_path / "died").exists()
    assert r.stats["respawns"] == 1 and r.stats["packets_lost"] == 0
    assert r.stats["packets_in"] == len(trace)
    assert collections.Counter(r.outputs["wan"]) == collections.Counter(seq.outputs["wan"])


def test_a_worker_killed_in_an_expiry_sweep(tmp_path):
    """SIGKILL inside an expiry handler: the sweep's transaction is rolled back (the set is back
    in the table), the replacement sweeps it again; the run completes with exact accounting and
    every set's expiry record sent once."""
    nf = tmp_path / "expiring.py"
    nf.write_text(PERIODIC.replace("MARKPATH", repr(str(tmp_path / "died"))).replace("WHERE", '"expired"')
                  .replace("EXPIRY", "1"))
    trace = numbered(4000, flows=400)   # each flow: a packet every 0.4 ms, gaps to expire in
    trace.times_ns = [t + (i // 1000) * 5_000_000 for i, t in enumerate(trace.times_ns)]
    r = replay(str(nf), trace, workers=2, keep_output=True, check=False)
    assert (tmp_path / "died").exists()
    s = r.stats
    assert s["respawns"] == 1
    assert s["packets_in"] + s["packets_lost"] == len(trace)
    expiries = [f for f in r.outputs["wan"] if f[12:14] == b"\x88\xb6"]
    assert len(expiries) == s["packet_sets_expired"] and s["packet_sets_expired"] > 0
    # the first three quarters' sets expired (the last quarter's are live at the end), each once
    assert 3000 - s["packets_lost"] <= sum(int.from_bytes(f[14:18], "big") for f in expiries) <= 3000, s
