"""Random NFs for tests/conformance/test_random_nfs.py: a spec → NF source, a seed → a trace, a check.

One generated NF file hosts many independent random *programs*.  A packet's
destination address (10.1.0.P) names its program P; every packet set includes
the destination in its key, so a set belongs to one program, and program P owns
its structures (``st.pP_*``).  Each program has its own handlers (new set,
packet, expired, orphan, periodic, exit dump), dispatched by P.

Only operations the README promises give the sequential result are generated:

* per-set state (``s.*``) and a Map keyed injectively by the set's key (``om``:
  get/set/delete, and decisions on what it read): one set's packets run in
  order on one worker;
* shared aggregates updated commutatively (``+=`` into a Counter, a
  DistributedObj replica, a Vector element, a Map entry keyed by a packet
  value mod M) and read in packet handlers only to be discarded (the reads make
  conflicts, nothing depends on them);
* ``pub``, a Vector written only by periodic handlers, read anywhere: a
  periodic handler runs at a barrier, so a packet at t reads what the last
  handler due at or before t wrote; periodic handlers read and reset anything;
* an Allocator index per set (allocated on a new set, freed when it expires)
  keying a Vector of per-set byte counts: capacities never below the number of
  keys a program has, Maps never holding more keys than their capacity nor 8
  per bucket (so ``MapFull`` and a failed allocation never depend on order);
* DistributedObj with ``max_staleness`` > 0 is read only to be discarded (a
  merged read may be that stale, and was seen to be in the exit handler too).

Outputs: packets sent to ``a``/``b`` (TTL rewritten from set state), frames
emitted on ``dump`` by expiry, periodic and exit handlers (the exit handler
dumps every structure of every program: ``("exit", P, ...)``).  Both runs
must give the same multiset of frames per device.
"""

from __future__ import annotations

import os
import random
import struct
from collections import Counter as Multiset
from dataclasses import dataclass, field

from hypothesis import strategies as st

from nfos.io.capture import Trace
from nfos.io.gen import checksum16
from nfos.runtime.replay import replay

# The trace's value domains (small: hot keys, repeated sets).
SRCS = [0x0A000000 + i for i in range(4)]        # 10.0.0.0-3: key part src & 3
SPORTS = [1000, 1001]                             # key part sport & 1
DPORTS = [2000, 2001]                             # key part dport & 1
GAPS_NS = [0, 0, 10_000, 500_000, 3_000_000, 30_000_000]

#: packet-set definitions: name -> (ipv4 fields, l4 fields, key expression, key domain)
SET_DEFS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, int]] = {
    "prog": (("dst",), (), "0", 1),
    "host": (("src", "dst"), (), "(pkt.ip.src & 3)", 4),
    "sport": (("src", "dst"), ("sport",), "(pkt.ip.src & 3) * 4 + (pkt.l4.sport & 1) * 2 + (pkt.ip.proto & 1)",
              16),
    "flow": (("src", "dst"), ("sport", "dport"),
             "(pkt.ip.src & 3) * 8 + (pkt.l4.sport & 1) * 4 + (pkt.l4.dport & 1) * 2 + (pkt.ip.proto & 1)", 32),
}
# (A key with ports also holds the protocol: TCP and UDP sessions differ, steer.c; TCP is 6,
# UDP 17, so proto & 1 is that part of the key.)

PKT_VALUES = ["pkt.len", "(pkt.ip.src & 3)", "pkt.l4.sport", "(pkt.l4.dport & 1)", "pkt.ip.ttl",
              "(pkt.len % 7)"]
SET_VALUES = ["s.cnt", "s.acc", "s.key", "(s.acc % 13)"]


@dataclass
class Program:
    """One random program's structures and handler bodies (lines without indentation)."""

    pid: int
    ctr: bool = False
    dobj_staleness: int | None = None          # None: no DistributedObj; else max_staleness ns
    vec: int = 0                               # Vector size (0: none)
    hm: tuple[int, int | None] | None = None   # (capacity M = key domain, buckets)
    om: int | None = None                      # owned Map buckets (0: default), None: none
    alloc: int = 0                             # Allocator capacity (0: none)
    pub: bool = False
    tick: int = 0                              # which periodic handler (0 or 1)
    new_skip: str | None = None                # a packet condition: no set is made
    new_ops: list[str] = field(default_factory=list)
    pkt_ops: list[str] = field(default_factory=list)
    exp_ops: list[str] = field(default_factory=list)
    orphan_ops: list[str] = field(default_factory=list)
    tick_ops: list[str] = field(default_factory=list)


@dataclass
class Spec:
    """A whole NF file: its packet-set definition, expiry, periodic intervals, programs."""

    set_def: str
    both_devices: bool
    expiry_us: int
    intervals_us: tuple[int, int]
    programs: list[Program]

    @property
    def domain(self) -> int:
        return SET_DEFS[self.set_def][3]


# ------------------------------------------------------------------ strategies
def _shared_update(draw: st.DrawFn, p: Program, values: list[str]) -> str | None:
    """One commutative update (or a discarded read) of a shared structure, or None if P has none."""
    choices = []
    if p.ctr:
        choices += [f"st.p{p.pid}_ctr.add(V)", f"_ = st.p{p.pid}_ctr.value()"]
    if p.dobj_staleness is not None:
        choices += [f"st.p{p.pid}_dobj.update().a += V", f"st.p{p.pid}_dobj.update().b -= V",
                    f"_ = st.p{p.pid}_dobj.read().a"]
    if p.vec:
        choices += [f"st.p{p.pid}_vec[V % {p.vec}] += V", f"_ = st.p{p.pid}_vec[V % {p.vec}]"]
    if p.hm:
        m = p.hm[0]
        choices += [f"k = V % {m}; st.p{p.pid}_hm[k] = (st.p{p.pid}_hm.get(k) or 0) + V",
                    f"_ = st.p{p.pid}_hm.get(V % {m})", f"_ = len(st.p{p.pid}_hm)"]
    if not choices:
        return None
    line = draw(st.sampled_from(choices))
    while "V" in line:
        line = line.replace("V", draw(st.sampled_from(values)), 1)
    return line


def _cond(draw: st.DrawFn, p: Program, values: list[str]) -> str:
    """A deterministic condition: set state, packet values, the set's own Map entry, pub."""
    srcs = list(values)
    if p.pub:
        srcs.append(f"st.p{p.pid}_pub[{draw(st.integers(0, 1))}]")
    if p.om is not None and "s.key" in values:
        srcs.append(f"(st.p{p.pid}_om.get(s.key) or 0)")
    a = draw(st.sampled_from(srcs))
    return f"({a}) % {draw(st.integers(2, 4))} == {draw(st.integers(0, 1))}"


@st.composite
def _program(draw: st.DrawFn, pid: int, domain: int) -> Program:
    p = Program(pid)
    p.ctr = draw(st.booleans())
    p.dobj_staleness = draw(st.sampled_from([None, 0, 0, 1_000_000]))
    p.vec = draw(st.sampled_from([0, 1, 2, 4]))
    if draw(st.booleans()):
        m = draw(st.integers(1, 8))
        p.hm = (m, draw(st.sampled_from([1, 2, None])))
    if domain <= 8 and draw(st.booleans()):
        p.om = draw(st.sampled_from([1, 2, 0]))
    if draw(st.booleans()):
        p.alloc = domain + draw(st.sampled_from([0, 0, 1, domain]))
    p.pub = draw(st.booleans())
    p.tick = draw(st.integers(0, 1))
    pkt_vals, set_vals = PKT_VALUES, PKT_VALUES + SET_VALUES
    if draw(st.integers(0, 3)) == 0:
        p.new_skip = _cond(draw, Program(pid), PKT_VALUES)   # packet values only: no set yet

    def ops(kind: str, n: int) -> list[str]:
        out: list[str] = []
        vals = {"new": set_vals, "pkt": set_vals, "exp": SET_VALUES, "orphan": pkt_vals}[kind]
        for _ in range(n):
            op = draw(st.sampled_from(["shared", "shared", "set", "om", "send", "ttl", "emit"]))
            if op == "shared":
                line = _shared_update(draw, p, vals)
            elif op == "set" and kind in ("new", "pkt"):
                v = draw(st.sampled_from(vals))
                line = draw(st.sampled_from(["s.cnt += 1", f"s.acc = (s.acc * 31 + {v}) % 1000003"]))
            elif op == "om" and kind != "orphan" and p.om is not None:
                line = draw(st.sampled_from([f"st.p{pid}_om[s.key] = {draw(st.sampled_from(vals))}",
                                             f"st.p{pid}_om.delete(s.key)",
                                             f"s.acc += (st.p{pid}_om.get(s.key) or 0) % 7"]))
            elif op == "send" and kind != "exp":
                c = _cond(draw, p, vals)
                line = draw(st.sampled_from([f"pkt.send('a' if {c} else 'b')",
                                             f"if {c}: pkt.drop()"]))
            elif op == "ttl" and kind in ("new", "pkt"):
                line = "pkt.ip.ttl = 1 + s.cnt % 200"
            elif op == "emit":
                vs = ", ".join(draw(st.lists(st.sampled_from(vals), min_size=1, max_size=3)))
                line = f"nf.emit(dump({kind!r}, {pid}, {vs}), 'dump')"
            else:
                line = None
            if line:
                out.append(line)
        return out

    p.new_ops = ops("new", draw(st.integers(0, 4)))
    p.pkt_ops = ops("pkt", draw(st.integers(0, 6)))
    p.exp_ops = ops("exp", draw(st.integers(0, 3)))
    p.orphan_ops = ops("orphan", draw(st.integers(0, 3)))
    tick: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        tick.append(draw(st.sampled_from(_tick_ops(p, domain))))
    p.tick_ops = tick
    return p


def _tick_ops(p: Program, domain: int) -> list[str]:
    """A periodic handler runs alone at its barrier: it may read and reset anything."""
    P = f"st.p{p.pid}"
    ops = ["acc = acc * 7 + 1"]
    if p.ctr:
        ops += [f"acc += {P}_ctr.value()", f"{P}_ctr.add(-({P}_ctr.value() // 2))"]
    if p.dobj_staleness == 0:
        ops += [f"acc += {P}_dobj.read().a - {P}_dobj.read().b"]
    if p.vec:
        ops += [f"acc += sum({P}_vec[i] for i in range({p.vec}))", f"{P}_vec[acc % {p.vec}] = 0"]
    if p.hm:
        ops += [f"acc += sum({P}_hm.get(k) or 0 for k in range({p.hm[0]}))",
                f"{P}_hm[acc % {p.hm[0]}] = 0", f"acc += len({P}_hm)"]
    if p.om is not None:
        ops += [f"acc += sum({P}_om.get(k) or 0 for k in range({domain}))"]
    if p.alloc:
        ops += [f"acc += {P}_alloc.counts()[0]", f"acc += sum({P}_avec[i] for i in range({p.alloc}))"]
    if p.pub:
        ops += [f"{P}_pub[acc % 2] = acc % 1000", f"acc += {P}_pub[0]"]
    ops += [f"nf.emit(dump('tick', {p.pid}, nfos.now(), acc), 'dump')"]
    return ops


def specs(programs: int) -> st.SearchStrategy[Spec]:
    """NF files of ``programs`` random programs each."""

    @st.composite
    def build(draw: st.DrawFn) -> Spec:
        set_def = draw(st.sampled_from(sorted(SET_DEFS)))
        domain = SET_DEFS[set_def][3]
        return Spec(set_def, draw(st.booleans()), draw(st.sampled_from([2_000, 10_000, 40_000])),
                    (draw(st.sampled_from([5_000, 20_000])), draw(st.sampled_from([7_000, 50_000]))),
                    [draw(_program(i, domain)) for i in range(programs)])

    return build()


# ---------------------------------------------------------------------- source
def render(spec: Spec) -> str:
    """The NF source of ``spec``."""
    ipv4, l4, key, domain = SET_DEFS[spec.set_def]
    on = f"ipv4={ipv4!r}" + (f", l4={l4!r}" if l4 else "")
    devs = ["a", "b"] if spec.both_devices else ["a"]
    L = ['"""A random NF (tests/conformance/rnf_gen.py): program P handles packets to 10.1.0.P."""',
         "", "import nfos", "", 'nf = nfos.NF("rnf", devices=["a", "b", "dump"])', "", "",
         "class S(nfos.Record):", "    prog: nfos.u16", "    key: nfos.u16", "    idx: nfos.i32",
         "    cnt: nfos.u32", "    acc: nfos.i64", "", "",
         "class Agg(nfos.Record):", "    a: nfos.i64", "    b: nfos.i64", "", "",
         "def dump(*values):",
         '    return b"\\x02\\0\\0\\0\\0\\xdd\\x02\\0\\0\\0\\0\\xee\\x88\\xb5" + repr(values).encode()',
         "", "", "@nf.init", "def setup(p):",
         "    nf.packet_sets(" + ", ".join(f"nfos.on({d!r}, {on})" for d in devs)
         + f", protocols=('tcp', 'udp'), state=S, expiry={spec.expiry_us * 1000})",
         "    st = nf.state"]
    for p in spec.programs:
        P = f"st.p{p.pid}"
        if p.ctr:
            L.append(f"    {P}_ctr = nfos.Counter()")
        if p.dobj_staleness is not None:
            L.append(f"    {P}_dobj = nfos.DistributedObj(Agg, merge='sum', max_staleness={p.dobj_staleness})")
        if p.vec:
            L.append(f"    {P}_vec = nfos.Vector(nfos.i64, {p.vec})")
        if p.hm:
            L.append(f"    {P}_hm = nfos.Map(nfos.u32, nfos.i64, {p.hm[0]}, buckets={p.hm[1]})")
        if p.om is not None:
            L.append(f"    {P}_om = nfos.Map(nfos.u32, nfos.i64, {domain}, buckets={p.om or None})")
        if p.alloc:
            L.append(f"    {P}_alloc = nfos.Allocator({p.alloc})")
            L.append(f"    {P}_avec = nfos.Vector(nfos.i64, {p.alloc})")
        if p.pub:
            L.append(f"    {P}_pub = nfos.Vector(nfos.i64, 2)")
    L.append("")
    for p in spec.programs:
        L += _render_program(p, key, domain)
    n = len(spec.programs)
    names = ("new", "pkt", "exp", "orphan", "dump")
    for name in names:
        L.append(f"{name.upper()} = ({', '.join(f'p{i}_{name}' for i in range(n))},)")
    for t in (0, 1):
        members = [f"p{p.pid}_tick" for p in spec.programs if p.tick == t]
        L.append(f"TICK{t} = ({''.join(m + ', ' for m in members)})")
    L += ["", "",
          "@nf.new_packet_set", "def new_set(pkt):", "    NEW[pkt.ip.dst & 0xff](pkt)", "", "",
          "@nf.packet", "def on_packet(pkt, s):", "    PKT[s.prog](pkt, s)", "", "",
          "@nf.expired", "def on_expired(s):", "    EXP[s.prog](s)", "", "",
          "@nf.orphan", "def on_orphan(pkt):", "    if pkt.ip is None:", "        pkt.send('b')",
          "    else:", "        ORPHAN[pkt.ip.dst & 0xff](pkt)", ""]
    for t in (0, 1):
        L += ["", f"@nf.periodic({spec.intervals_us[t] * 1000})", f"def tick{t}():",
              f"    for fn in TICK{t}:", "        fn()", ""]
    L += ["", "@nf.exit", "def at_exit():", "    for fn in DUMP:", "        nf.emit(fn(), 'dump')", ""]
    return "\n".join(L)


def _render_program(p: Program, key: str, domain: int) -> list[str]:
    P, i = f"st.p{p.pid}", p.pid

    def body(lines: list[str]) -> list[str]:
        return ["    " + x for x in lines] or []

    L = ["", f"def p{i}_new(pkt):", "    st = nf.state"]
    if p.new_skip:
        L.append(f"    if {p.new_skip}:")
        L.append("        return")
    L += ["    s = nf.register(pkt)", f"    s.prog = {i}", f"    s.key = {key}", "    s.idx = -1"]
    if p.alloc:
        L += [f"    ix = {P}_alloc.allocate()",
              "    if ix is None:", f"        raise AssertionError('allocator of program {i} is full')",
              f"    if {P}_avec[ix] != 0:", "        raise AssertionError('index handed out twice')",
              "    s.idx = ix", f"    {P}_avec[ix] = (s.key + 1) * 1000000"]
    L += body(p.new_ops)
    L += ["", f"def p{i}_pkt(pkt, s):", "    st = nf.state", "    s.cnt += 1"]
    if p.alloc:
        L.append(f"    {P}_avec[s.idx] += pkt.len")
    L += body(p.pkt_ops) + ["", f"def p{i}_exp(s):", "    st = nf.state"]
    if p.alloc:
        L += [f"    nf.emit(dump('freed', {i}, s.key, {P}_avec[s.idx]), 'dump')",
              f"    {P}_avec[s.idx] = 0", f"    {P}_alloc.free(s.idx)"]
    L += body(p.exp_ops) + ["    return None", "", f"def p{i}_orphan(pkt):", "    st = nf.state",
                            "    pkt.send('a')"] + body(p.orphan_ops)
    L += ["", f"def p{i}_tick():", "    st = nf.state", "    acc = 0"] + body(p.tick_ops)
    dump = [f"'exit', {i}"]
    if p.ctr:
        dump.append(f"{P}_ctr.value()")
    if p.dobj_staleness == 0:   # with max_staleness > 0 even the exit handler's read may be stale
        dump.append(f"({P}_dobj.read().a, {P}_dobj.read().b)")
    if p.vec:
        dump.append(f"[{P}_vec[j] for j in range({p.vec})]")
    if p.hm:
        dump.append(f"[{P}_hm.get(k) for k in range({p.hm[0]})], len({P}_hm)")
    if p.om is not None:
        dump.append(f"[{P}_om.get(k) for k in range({domain})], len({P}_om)")
    if p.alloc:
        dump.append(f"{P}_alloc.counts(), sorted({P}_avec[j] for j in range({p.alloc}))")
    if p.pub:
        dump.append(f"[{P}_pub[0], {P}_pub[1]]")
    L += ["", f"def p{i}_dump():", "    st = nf.state", f"    return dump({', '.join(dump)})", ""]
    return L


# ----------------------------------------------------------------------- trace
def _frame(src: int, dst: int, sport: int, dport: int, proto: int, size: int, ttl: int) -> bytes:
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 512, 0, 0)
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + size, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4) + size, 0, 0, ttl, proto, 0,
                     src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    ip = ip[:10] + struct.pack("!H", checksum16(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + l4 + bytes(size)


def trace(seed: int, programs: int, packets: int) -> Trace:
    """A random trace (from ``seed``) over the programs' destinations, hosts and ports."""
    r = random.Random(seed)
    hot = r.sample(range(programs), k=min(programs, r.choice([1, 3, programs])))
    frames, times, devs = [], [], []
    t = 1_000_000_000
    for _ in range(packets):
        t += r.choice(GAPS_NS)
        if r.random() < 0.03:
            frames.append(b"\xff" * 6 + b"\x02\0\0\0\0\x03\x08\x06" + bytes(28))
        else:
            prog = r.choice(hot) if r.random() < 0.5 else r.randrange(programs)
            frames.append(_frame(r.choice(SRCS), 0x0A010000 + prog, r.choice(SPORTS), r.choice(DPORTS),
                                 r.choice((6, 17)), r.randrange(0, 200), r.randrange(1, 255)))
        times.append(t)
        devs.append(r.randrange(2))
    return Trace(["a", "b"], frames, times, devs, [])


# ----------------------------------------------------------------------- check
def run(path: str, tr: Trace, workers: int, batch: int) -> tuple[dict[str, list[bytes]], dict]:
    r = replay(path, tr, workers=workers, batch=batch, keep_output=True)
    return {d: sorted(v) for d, v in r.outputs.items()}, r.stats


def check(spec: Spec, seed: int, packets: int, workers: int, batch: int, tmp: str) -> str:
    """Run the spec's NF sequentially and with ``workers``: "" if they agree, else what differs
    and a reproducer."""
    src = render(spec)
    path = os.path.join(tmp, f"rnf_{seed}_{workers}_{batch}.py")
    with open(path, "w") as f:
        f.write(src)
    tr = trace(seed, len(spec.programs), packets)
    seq, seq_stats = run(path, tr, 0, batch)
    par, par_stats = run(path, tr, workers, batch)
    repro = (f"\nreproduce: rnf_gen.compare({path!r}, seed={seed}, programs={len(spec.programs)}, "
             f"packets={packets}, workers={workers}, batch={batch})  (the NF source is that file)")
    if seq_stats["handler_errors"]:
        return "the sequential run raised (a generator bug)" + repro
    if seq != par:
        return describe(seq, par, src) + repro
    if par_stats["handler_errors"]:
        return f"{par_stats['handler_errors']} handler error(s) with workers" + repro
    return ""


def check_recorded(spec: Spec, seed: int, packets: int, workers: int, batch: int, tmp: str) -> str:
    """Run the spec's NF with ``workers``, recording its commits, and re-execute the record
    sequentially in that order (nfos verify): "" without a violation, else the violations and a
    reproducer."""
    from nfos.runtime.verify import verify

    path = os.path.join(tmp, f"rnf_{seed}_{workers}_{batch}.py")
    with open(path, "w") as f:
        f.write(render(spec))
    tr = trace(seed, len(spec.programs), packets)
    rec = path + ".commits"
    replay(path, tr, workers=workers, batch=batch, record_commits=rec)
    problems = verify(rec, lambda devices, header: tr)
    if not problems:
        return ""
    return "\n".join(problems[:20]) + (
        f"\nreproduce: nfos verify {rec} (trace: rnf_gen.trace({seed}, {len(spec.programs)}, {packets}))")


def describe(seq: dict[str, list[bytes]], par: dict[str, list[bytes]], src: str) -> str:
    """Which frames differ per device, and the source of the programs the dump frames name."""
    lines, progs = [], set()
    for dev in sorted(set(seq) | set(par)):
        a, b = Multiset(seq.get(dev, [])), Multiset(par.get(dev, []))
        only_seq, only_par = sorted((a - b).elements()), sorted((b - a).elements())
        if not (only_seq or only_par):
            continue
        lines.append(f"device {dev}: {len(only_seq)} frame(s) only sequential, {len(only_par)} only parallel")
        for tag, frames in (("seq", only_seq), ("par", only_par)):
            for fr in frames[:8]:
                text = fr[14:].decode(errors="replace") if dev == "dump" else fr.hex()
                lines.append(f"  {tag}: {text}")
                if dev != "dump" and fr[12:14] == b"\x08\x00" and len(fr) > 33:
                    progs.add(fr[33])   # the program is the destination's last byte
                elif dev == "dump":
                    try:
                        progs.add(int(text.split(",")[1]))
                    except (IndexError, ValueError):
                        pass
    for pid in sorted(progs)[:3]:
        start = src.find(f"\ndef p{pid}_new(")
        end = src.find(f"\ndef p{pid}_dump(")
        lines.append(f"--- program {pid} ---" + src[start:end])
    return "\n".join(lines)


def compare(path: str, seed: int, programs: int, packets: int, workers: int, batch: int) -> None:
    """Reproduce a reported violation from the saved NF file."""
    tr = trace(seed, programs, packets)
    seq, _ = run(path, tr, 0, batch)
    par, _ = run(path, tr, workers, batch)
    with open(path) as f:
        src = f.read()
    assert seq == par, describe(seq, par, src)
