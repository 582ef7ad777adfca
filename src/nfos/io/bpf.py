"""Compile a packet-set definition into a classic-BPF PACKET_FANOUT program (kernel RSS).

The program computes exactly what the replay path computes in software
(`_core/steer.c`): the Toeplitz hash of the packet-set key (the declared
fields' bytes in the declared order, plus the IP protocol when ports are
used) with the same RSS key, then ``(hash & 127) % workers`` through the
round-robin indirection table.  So a packet set lands on the same worker
live as in a replay, and the two directions of a session — declared with
reversed fields on the two devices — land on the same worker although they
arrive on different interfaces.

Handled: one 802.1Q tag in the frame, IPv4 options (variable IHL), and
fragments (a later fragment has no ports: it is an orphan).  With "icmp" in
the protocols, ICMP is keyed as steer.c keys it: an echo by its identifier,
an error by the IPv4 header (options too) and 8 L4 bytes it quotes, swapped,
with every offset checked against the end of the IP packet (a truncated
quote makes an orphan, never a load past the frame).  The gather code stores
the key's sources in scratch cells and one hash code reads them.  IPv4 orphans
are hashed on the address pair (smaller first) and protocol, as in software;
non-IPv4 orphans use the kernel's flow hash (so their placement differs from
a replay; they have no packet-set state, so this is harmless).  What cannot
be steered: IPv6, more than one VLAN tag, tunnels (the inner header is not
looked at).

Offsets: the kernel runs a fanout program on the skb at its *network*
header, so every packet load is made relative to the link layer
(``SKF_LL_OFF + offset``): the program reads the frame from its Ethernet
header whatever the skb's data pointer is (checked on veth: a plain
``ldb [0]`` reads the IPv4 version byte there).

Toeplitz in classic BPF: every key bit that is set XORs a 32-bit constant
(the key window at that bit) into the hash; the constants are computed here,
so the program is a straight line of ``jset`` tests, about 5 instructions per
key bit (a 13-byte 5-tuple key: ~550 instructions, under the 4096 limit).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nfos import _core

# classic BPF opcodes (linux/filter.h)
LD, LDX, ST, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, MSH = 0x00, 0x20, 0x40, 0x60, 0xA0
ADD, AND, RSH, MOD, XOR = 0x00, 0x50, 0x70, 0x90, 0xA0
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X_SRC, A_RET = 0x00, 0x08, 0x10
TAX = MISC | 0x00
SKF_AD_OFF, SKF_AD_RXHASH = -0x1000, 32
SKF_LL_OFF = -0x200000   # loads at SKF_LL_OFF + k read the frame at k from its link-layer header

DEFAULT_RSS_KEY = bytes([
    0x6D, 0x5A, 0x56, 0xDA, 0x25, 0x5B, 0x0E, 0xC2, 0x41, 0x67, 0x25, 0x3D, 0x43, 0xA3,
    0x8F, 0xB0, 0xD0, 0xCA, 0x2B, 0xCB, 0xAE, 0x7B, 0x30, 0xB4, 0x77, 0xCB, 0x2D, 0xA3,
    0x80, 0x30, 0xF2, 0x0C, 0x6A, 0x42, 0xB7, 0x3B, 0xBE, 0xAC, 0x01, 0xFA])
SYMMETRIC_RSS_KEY = bytes([0x6D, 0x5A] * 20)

# scratch memory cells: the layer offsets, the protocol, the hash, temporaries, the IP end, an ICMP
# error's quoted headers, then the key's sources (filled by the gather code, read by the hash code)
M_L3, M_L4, M_PROTO, M_HASH, M_TMP, M_TMP2, M_PAIR, M_END, M_Q3, M_Q4 = range(10)
M_SRC, M_DST, M_SPORT, M_DPORT, M_KPROTO = range(10, 15)
M_SCRATCH = 15   # cells used

def key_window(rss_key: bytes, bit: int) -> int:
    """The 32 key bits starting at `bit` (the key repeats cyclically), as in steer.c."""
    n = len(rss_key) * 8
    v = 0
    for k in range(32):
        b = (bit + k) % n
        v = v << 1 | (rss_key[b // 8] >> (7 - b % 8)) & 1
    return v


def toeplitz(data: bytes, rss_key: bytes = DEFAULT_RSS_KEY) -> int:
    """Reference Toeplitz hash (for tests; the hot paths are in C and BPF)."""
    h = 0
    for i, byte in enumerate(data):
        for j in range(8):
            if byte & (0x80 >> j):
                h ^= key_window(rss_key, i * 8 + j)
    return h


@dataclass
class Insn:
    code: int
    k: int = 0
    jt: str | int = 0
    jf: str | int = 0
    label: str | None = None   # this instruction's label


class Program:
    """A tiny assembler: instructions with symbolic forward jumps."""

    def __init__(self) -> None:
        self.insns: list[Insn] = []
        self._pending: str | None = None

    def label(self, name: str) -> None:
        self._pending = name

    def emit(self, code: int, k: int = 0, jt: str | int = 0, jf: str | int = 0) -> None:
        self.insns.append(Insn(code, k & 0xFFFFFFFF, jt, jf, self._pending))
        self._pending = None

    def assemble(self) -> bytes:
        where = {i.label: n for n, i in enumerate(self.insns) if i.label}
        out = []
        for n, i in enumerate(self.insns):
            jt = where[i.jt] - n - 1 if isinstance(i.jt, str) else i.jt
            jf = where[i.jf] - n - 1 if isinstance(i.jf, str) else i.jf
            k = where[i.k] - n - 1 if i.code == JMP | JA and isinstance(i.k, str) else i.k
            if i.code & 0x07 == LD and i.code & 0xE0 in (ABS, IND) and k < 0x80000000:
                k = (k + SKF_LL_OFF) & 0xFFFFFFFF   # a packet load: from the link-layer header
            if not (0 <= jt <= 255 and 0 <= jf <= 255):
                raise ValueError(f"BPF jump out of range at instruction {n}")
            out.append(struct.pack("=HBBI", i.code, jt, jf, k))
        if len(out) > 4096:
            raise ValueError(f"the steering program has {len(out)} instructions (limit 4096)")
        return b"".join(out)

    def ja(self, label: str) -> None:
        self.insns.append(Insn(JMP | JA, 0, 0, 0, self._pending))
        self.insns[-1].k = label  # type: ignore[assignment]
        self._pending = None


def _hash_value(p: Program, nbits: int, bit_offset: int, rss_key: bytes) -> None:
    """A holds an `nbits`-bit value (MSB first) at key bit `bit_offset`: XOR its windows into M_HASH."""
    p.emit(ST, M_TMP)
    for j in range(nbits):
        nxt = f"b{len(p.insns)}"   # unique: the index of the next test
        p.emit(LD | MEM, M_TMP)
        p.emit(JMP | JSET | K, 1 << (nbits - 1 - j), 0, nxt)
        p.emit(LD | MEM, M_HASH)
        p.emit(ALU | XOR | K, key_window(rss_key, bit_offset + j))
        p.emit(ST, M_HASH)
        p.label(nxt)


def _finish(p: Program, workers: int) -> None:
    p.emit(LD | MEM, M_HASH)
    p.emit(ALU | AND | K, 127)          # indirection table of 128 entries,
    p.emit(ALU | MOD | K, workers)      # filled round-robin: entry i -> worker i % N
    p.emit(RET | A_RET)


_ETH_LOADS: dict[int, list[tuple[int, int]]] = {   # an Ethernet key field -> [(absolute offset, bits)]
    _core.KF_ETH_SRC: [(6, 32), (10, 16)],
    _core.KF_ETH_DST: [(0, 32), (4, 16)],
}
_KEY_CELLS: dict[int, tuple[int, int]] = {   # any other key field -> (the cell the gather code fills, bits)
    _core.KF_IP_SRC: (M_SRC, 32),
    _core.KF_IP_DST: (M_DST, 32),
    _core.KF_SPORT: (M_SPORT, 16),
    _core.KF_DPORT: (M_DPORT, 16),
    _core.KF_PROTO: (M_KPROTO, 8),
}
_CLASSES = ((1, 6), (2, 17), (4, 1))   # protocol class bit -> IP protocol ("other" is bit 8)


def _proto_check(p: Program, proto_mask: int, ok: str, fail: str) -> None:
    """A holds an IP protocol: go to `ok` if its class is in `proto_mask` (nonzero), else to `fail`."""
    listed = [proto for bit, proto in _CLASSES if proto_mask & bit]
    for proto in listed:
        p.emit(JMP | JEQ | K, proto, ok, 0)
    if proto_mask & 8:   # "other": anything but TCP/UDP/ICMP
        for _bit, proto in _CLASSES:
            if proto not in listed:
                p.emit(JMP | JEQ | K, proto, fail, 0)
        p.ja(ok)
    else:
        p.ja(fail)


def _icmp_gather(p: Program, proto_mask: int, ports: bool) -> None:
    """ICMP of a definition whose protocols list "icmp" (label "icmp"; the outer addresses are gathered).

    As steer.c: an echo request or reply (8-byte header) uses its identifier as both ports; an error
    (type 3, 11, 12) takes the key from the IPv4 packet it quotes, addresses and ports swapped, protocol
    the quoted one, if the quote holds a whole IPv4 header (and, for a key with ports, 8 bytes of TCP,
    UDP or ICMP echo of a packet that is not a later fragment) and the quoted protocol is in the mask.
    Other ICMP: keyed by the outer addresses without ports, an orphan with ports.
    """
    p.label("icmp")
    p.emit(LDX | MEM, M_L3)
    p.emit(LD | H | IND, 6)
    p.emit(JMP | JSET | K, 0x1FFF, "icmp_other", 0)   # a later fragment: no ICMP header
    p.emit(LD | H | IND, 2)
    p.emit(ALU | ADD | X_SRC)
    p.emit(ST, M_END)                                 # end = l3 + total length
    p.emit(TAX)
    p.emit(LD | MEM, M_L4)
    p.emit(ALU | ADD | K, 8)
    p.emit(JMP | JGT | X_SRC, 0, "icmp_other", 0)        # no full 8-byte header
    p.emit(LDX | MEM, M_L4)
    p.emit(LD | B | IND, 0)                           # the type
    p.emit(JMP | JEQ | K, 0, "echo", 0)
    p.emit(JMP | JEQ | K, 8, "echo", 0)
    p.emit(JMP | JEQ | K, 3, "error", 0)
    p.emit(JMP | JEQ | K, 11, "error", 0)
    p.emit(JMP | JEQ | K, 12, "error", "icmp_other")
    p.label("echo")
    if ports:
        p.emit(LD | H | IND, 4)                       # X = l4
        p.emit(ST, M_SPORT)
        p.emit(ST, M_DPORT)
    p.ja("set")
    p.label("icmp_other")
    p.ja("ip_orphan" if ports else "set")
    # --- an error: the quoted IPv4 header at q3 = l4 + 8, complete before the end
    p.label("error")
    p.emit(LD | MEM, M_L4)
    p.emit(ALU | ADD | K, 8)
    p.emit(ST, M_Q3)
    p.emit(ALU | ADD | K, 20)
    p.emit(LDX | MEM, M_END)
    p.emit(JMP | JGT | X_SRC, 0, "q_orphan", 0)
    p.emit(LDX | MEM, M_Q3)
    p.emit(LD | B | IND, 0)
    p.emit(ST, M_TMP)
    p.emit(ALU | RSH | K, 4)
    p.emit(JMP | JEQ | K, 4, 0, "q_orphan")           # IPv4
    p.emit(LD | MEM, M_TMP)
    p.emit(ALU | AND | K, 0x0F)
    p.emit(ALU | 0x60 | K, 2)                         # the quoted IHL in bytes
    p.emit(JMP | JGE | K, 20, 0, "q_orphan")
    p.emit(ALU | ADD | X_SRC)
    p.emit(ST, M_Q4)                                  # q4 = q3 + IHL
    p.emit(LDX | MEM, M_END)
    p.emit(JMP | JGT | X_SRC, 0, "q_orphan", 0)
    p.emit(LDX | MEM, M_Q3)
    p.emit(LD | B | IND, 9)
    p.emit(ST, M_KPROTO)                              # the key's protocol: the quoted one
    _proto_check(p, proto_mask, "q_class_ok", "q_orphan")
    p.label("q_class_ok")
    p.emit(LDX | MEM, M_Q3)
    p.emit(LD | W | IND, 16)
    p.emit(ST, M_SRC)                                 # swapped: the quoted packet went the other way
    p.emit(LD | W | IND, 12)
    p.emit(ST, M_DST)
    if ports:
        p.emit(LD | H | IND, 6)
        p.emit(JMP | JSET | K, 0x1FFF, "q_orphan", 0)   # a later fragment quoted: no ports
        p.emit(LD | MEM, M_Q4)
        p.emit(ALU | ADD | K, 8)
        p.emit(LDX | MEM, M_END)
        p.emit(JMP | JGT | X_SRC, 0, "q_orphan", 0)       # fewer than 8 bytes of L4 quoted
        p.emit(LDX | MEM, M_Q4)
        p.emit(LD | MEM, M_KPROTO)
        p.emit(JMP | JEQ | K, 6, "q_ports", 0)
        p.emit(JMP | JEQ | K, 17, "q_ports", 0)
        p.emit(JMP | JEQ | K, 1, 0, "q_orphan")
        p.emit(LD | B | IND, 0)
        p.emit(JMP | JEQ | K, 0, "q_echo", 0)
        p.emit(JMP | JEQ | K, 8, "q_echo", "q_orphan")
        p.label("q_echo")
        p.emit(LD | H | IND, 4)
        p.emit(ST, M_SPORT)
        p.emit(ST, M_DPORT)
        p.ja("set")
        p.label("q_ports")
        p.emit(LD | H | IND, 2)
        p.emit(ST, M_SPORT)
        p.emit(LD | H | IND, 0)
        p.emit(ST, M_DPORT)
    p.ja("set")
    p.label("q_orphan")
    p.ja("ip_orphan")


def compile_steering(fields: list[int] | None, proto_mask: int, workers: int,
                     rss_key: bytes = DEFAULT_RSS_KEY) -> bytes:
    """The sock_filter array (bytes) steering one device's packets to `workers` sockets.

    `fields` is the device's packet-set key (None: every packet is an orphan),
    `proto_mask` the packet sets' protocol classes (1 tcp, 2 udp, 4 icmp, 8 other; 0 any).
    With "icmp" in the mask, ICMP echo and errors are keyed as steer.c keys them (`_icmp_gather`).
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    p = Program()
    needs_ip = fields is not None and any(f not in (_core.KF_ETH_SRC, _core.KF_ETH_DST) for f in fields)
    ports = fields is not None and any(f in (_core.KF_SPORT, _core.KF_DPORT) for f in fields)
    icmp = bool(proto_mask & 4)
    # The kernel's checker (bpf_check_classic) rejects a load of a scratch cell
    # that some path may not have stored, and it follows code after a `ret` as if
    # it fell through: so store every cell first.
    p.emit(LD | IMM, 0)
    for cell in range(M_SCRATCH):
        p.emit(ST, cell)
    # --- L2: one optional 802.1Q tag
    p.emit(LD | IMM, 14)
    p.emit(ST, M_L3)
    p.emit(LD | H | ABS, 12)
    p.emit(JMP | JEQ | K, 0x8100, 0, "etype")
    p.emit(LD | IMM, 18)
    p.emit(ST, M_L3)
    p.emit(LD | H | ABS, 16)
    p.label("etype")
    p.emit(JMP | JEQ | K, 0x0800, "ipv4", 0)
    # not IPv4: a set only if the key is L2-only and no protocol filter applies
    if fields is not None and not needs_ip and not proto_mask:
        p.ja("set")
    else:
        p.ja("non_ip")
    # --- IPv4: protocol, L4 offset, fragments
    p.label("ipv4")
    p.emit(LDX | MEM, M_L3)
    p.emit(LD | B | IND, 9)
    p.emit(ST, M_PROTO)
    p.emit(ST, M_KPROTO)
    p.emit(LD | B | IND, 0)
    p.emit(ALU | AND | K, 0x0F)
    p.emit(ALU | 0x60 | K, 2)                   # lsh #2: IHL in bytes
    p.emit(ALU | ADD | X_SRC)                   # + l3 offset
    p.emit(ST, M_L4)
    if fields is None:
        p.ja("ip_orphan")
    else:
        if proto_mask:
            p.emit(LD | MEM, M_PROTO)
            _proto_check(p, proto_mask, "proto_ok", "ip_orphan_near")
            p.label("proto_ok")
        # --- gather the key's sources: the packet's own addresses, ports and protocol
        p.emit(LD | W | IND, 12)                # X = l3
        p.emit(ST, M_SRC)
        p.emit(LD | W | IND, 16)
        p.emit(ST, M_DST)
        if icmp:
            p.emit(LD | MEM, M_PROTO)
            p.emit(JMP | JEQ | K, 1, "icmp_near", 0)
        if ports:   # ports need a TCP/UDP header: not ICMP, not a later fragment
            p.emit(LD | MEM, M_PROTO)
            p.emit(JMP | JEQ | K, 6, "l4_ok", 0)
            p.emit(JMP | JEQ | K, 17, "l4_ok", "ip_orphan_near")
            p.label("l4_ok")
            p.emit(LD | H | IND, 6)
            p.emit(JMP | JSET | K, 0x1FFF, "ip_orphan_near", 0)
            p.emit(LDX | MEM, M_L4)
            p.emit(LD | H | IND, 0)
            p.emit(ST, M_SPORT)
            p.emit(LD | H | IND, 2)
            p.emit(ST, M_DPORT)
        p.ja("set")
        if icmp:
            p.label("icmp_near")
            p.ja("icmp")
        p.label("ip_orphan_near")
        p.ja("ip_orphan")
        if icmp:
            _icmp_gather(p, proto_mask, ports)
    # --- IPv4 orphan: Toeplitz of (min addr, max addr, proto), as steer.c
    p.label("ip_orphan")
    p.emit(LD | IMM, 0)
    p.emit(ST, M_HASH)
    p.emit(LDX | MEM, M_L3)
    p.emit(LD | W | IND, 12)
    p.emit(ST, M_TMP2)
    p.emit(LD | W | IND, 16)
    p.emit(TAX)                                 # X = dst
    p.emit(LD | MEM, M_TMP2)                    # A = src
    p.emit(JMP | JGT | X_SRC, 0, "swap", 0)     # src > dst: hash dst first
    p.emit(ST, M_TMP2)                          # first = src
    p.emit(LD | MEM, M_TMP2)
    p.ja("pair")
    p.label("swap")
    p.emit(ST, M_PAIR)                          # M_PAIR = src (second)
    p.emit(MISC | 0x80)                         # txa: A = dst
    p.emit(ST, M_TMP2)                          # first = dst
    p.emit(LD | MEM, M_PAIR)
    p.emit(TAX)                                 # X = second
    p.emit(LD | MEM, M_TMP2)
    p.label("pair")                             # A = first, X = second
    _hash_value(p, 32, 0, rss_key)
    p.emit(MISC | 0x80)                         # txa
    _hash_value(p, 32, 32, rss_key)
    p.emit(LD | MEM, M_PROTO)
    _hash_value(p, 8, 64, rss_key)
    _finish(p, workers)
    # --- non-IPv4 orphan: the kernel's flow hash
    p.label("non_ip")
    p.emit(LD | W | ABS, SKF_AD_OFF + SKF_AD_RXHASH)
    p.emit(ALU | MOD | K, workers)
    p.emit(RET | A_RET)
    # --- packet set: Toeplitz of the key fields in order
    p.label("set")
    if fields is not None:
        p.emit(LD | IMM, 0)
        p.emit(ST, M_HASH)
        bit = 0
        for f in fields:
            if f in _ETH_LOADS:
                for off, nbits in _ETH_LOADS[f]:
                    p.emit(LD | (W if nbits == 32 else H) | ABS, off)
                    _hash_value(p, nbits, bit, rss_key)
                    bit += nbits
                continue
            cell, nbits = _KEY_CELLS[f]
            p.emit(LD | MEM, cell)
            _hash_value(p, nbits, bit, rss_key)
            bit += nbits
        if ports and _core.KF_PROTO not in fields:
            p.emit(LD | MEM, M_KPROTO)
            _hash_value(p, 8, bit, rss_key)
        _finish(p, workers)
    else:
        p.emit(RET | K, 0)
    return p.assemble()


def run_program(prog: bytes, frame: bytes, rxhash: int = 0) -> int:
    """A classic-BPF interpreter for the subset above (tests compare it with the C steering)."""
    insns = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0

    def load(off: int, size: int) -> int:
        if off == (SKF_AD_OFF + SKF_AD_RXHASH) & 0xFFFFFFFF:
            return rxhash
        if off >= SKF_LL_OFF & 0xFFFFFFFF:   # link-layer relative (the frame starts there)
            off -= SKF_LL_OFF & 0xFFFFFFFF
        if off + size > len(frame):
            raise IndexError("load past the packet: the kernel would drop it (return 0)")
        return int.from_bytes(frame[off:off + size], "big")

    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == LD:
            mode, size = code & 0xE0, {W: 4, H: 2, B: 1}[code & 0x18]
            if mode == IMM:
                a = k
            elif mode == ABS:
                a = load(k, size)
            elif mode == IND:
                a = load((x + k) & 0xFFFFFFFF, size)
            elif mode == MEM:
                a = mem[k]
        elif cls == LDX:
            x = mem[k]
        elif cls == ST:
            mem[k] = a
        elif cls == ALU:
            op, src = code & 0xF0, (x if code & X_SRC else k)
            if op == ADD:
                a = a + src
            elif op == AND:
                a = a & src
            elif op == XOR:
                a = a ^ src
            elif op == MOD:
                a = a % src if src else 0
            elif op == 0x60:
                a = a << src if src < 32 else 0
            elif op == RSH:
                a = a >> src
            a &= 0xFFFFFFFF
        elif cls == JMP:
            op, src = code & 0xF0, (x if code & X_SRC else k)
            if op == JA:
                pc += k
            else:
                cond = {JEQ: a == src, JGT: a > src, JGE: a >= src, JSET: bool(a & src)}[op]
                pc += jt if cond else jf
        elif cls == RET:
            return a if code & A_RET else k
        elif cls == MISC:
            if code == TAX:
                x = a
            else:
                a = x
