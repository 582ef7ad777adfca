"""Fuzz target: the packet view (`_core.probe(frame, dev, fn)`: fn runs on the packet in a
direct transaction): every getter, every setter with any value, output decisions, and views
kept after the handler returned.

Checked beyond "no crash, no sanitizer report": a user error is ValueError, TypeError,
OverflowError or AttributeError (a header the packet has not), never anything else; a view
used after its handler returned raises RuntimeError; setting addresses, ports, TTL or TOS
keeps a correct IPv4 header checksum correct, and a correct TCP/UDP checksum correct.

    python tests/fuzz/fuzz_setters.py [libFuzzer flags]
"""

import struct
import sys

import atheris

with atheris.instrument_imports(include=["common"]):   # coverage of the frame builder guides the mutations
    from common import DEVICES, csum, gen_frame, load_session, run

PF_IP, PF_TCP, PF_UDP, PF_FRAG = 2, 4, 8, 32
USER_ERRORS = (ValueError, TypeError, OverflowError, AttributeError)
VIEW_ATTRS = {
    "eth": ("src", "dst", "type", "vlan"),
    "ip": ("src", "dst", "proto", "ttl", "tos", "len", "id", "ihl", "checksum", "fragment", "df", "mf",
           "frag_offset", "options"),
    "l4": ("sport", "dport", "flags", "seq", "ack", "window", "checksum", "len"),
    "tcp": ("sport", "dport", "flags"),
    "udp": ("sport", "dport", "len"),
    "icmp": ("type", "code", "checksum", "id", "seq"),
}
SETTERS = (("eth", "src", 48), ("eth", "dst", 48), ("ip", "src", 32), ("ip", "dst", 32), ("ip", "ttl", 8),
           ("ip", "tos", 8), ("l4", "sport", 16), ("l4", "dport", 16), ("l4", "flags", 8), ("tcp", "sport", 16),
           ("udp", "dport", 16))


def any_value(fdp, bits: int):
    kind = fdp.ConsumeIntInRange(0, 9)
    if kind <= 6:
        return fdp.ConsumeIntInRange(0, (1 << bits) - 1)
    return fdp.PickValueInList([-1, 1 << bits, 1 << 64, 2**200, "1", None, 1.5, True])


def read_all(pkt) -> None:
    for name in ("dev", "dev_index", "time", "len", "payload", "frame", "out"):
        getattr(pkt, name)
    for view, attrs in VIEW_ATTRS.items():
        v = getattr(pkt, view)
        if v is not None:
            for a in attrs:
                getattr(v, a)
    repr(pkt)


def handler(fdp):
    kept = []

    def fn(pkt):
        for _ in range(fdp.ConsumeIntInRange(0, 10)):
            op = fdp.ConsumeIntInRange(0, 5)
            try:
                if op == 0:
                    read_all(pkt)
                elif op <= 2:
                    view, attr, bits = fdp.PickValueInList(list(SETTERS))
                    setattr(getattr(pkt, view), attr, any_value(fdp, bits))
                elif op == 3:
                    dev = fdp.PickValueInList([*DEVICES, 0, 1, 2, 3, -1, "nope", None, 2**70])
                    pkt.send(dev)
                elif op == 4:
                    fdp.PickValueInList([pkt.flood, pkt.drop])()
                else:
                    kept.append(pkt)
                    kept.extend(v for v in (pkt.eth, pkt.ip, pkt.l4, pkt.icmp) if v is not None)
            except USER_ERRORS:
                pass
        return kept

    return fn


def ip_checksum_ok(frame: bytes, l3: int) -> bool:
    ihl = (frame[l3] & 15) * 4
    return csum(frame[l3:l3 + ihl]) == 0


def l4_checksum_ok(frame: bytes, l3: int, l4: int, flags: int) -> bool | None:
    """None: not checkable (a fragment, UDP without a checksum)."""
    if flags & PF_FRAG:
        return None
    total = struct.unpack_from("!H", frame, l3 + 2)[0]
    seg = frame[l4:l3 + total]
    if flags & PF_UDP and struct.unpack_from("!H", seg, 6)[0] == 0:
        return None
    proto = 6 if flags & PF_TCP else 17
    return csum(frame[l3 + 12:l3 + 20] + struct.pack("!BBH", 0, proto, len(seg)) + seg) == 0


@atheris.instrument_func
def one_input(data: bytes) -> None:
    from nfos import _core

    fdp = atheris.FuzzedDataProvider(data)
    dev = fdp.ConsumeIntInRange(0, len(DEVICES) - 1)
    frame = gen_frame(fdp)
    _, _, _, flags, _, _, _, (l3, l4, _) = _core.probe(frame, dev, None)
    ip_ok = bool(flags & PF_IP) and ip_checksum_ok(frame, l3)
    l4_ok = bool(flags & (PF_TCP | PF_UDP)) and l4_checksum_ok(frame, l3, l4, flags)
    kept, after, out, *_ = _core.probe(frame, dev, handler(fdp))
    assert len(after) == len(frame) and -2 <= out < len(DEVICES)
    if ip_ok:
        assert ip_checksum_ok(after, l3), (frame.hex(), after.hex())
    if l4_ok:
        assert l4_checksum_ok(after, l3, l4, flags) is not False, (frame.hex(), after.hex())
    for v in kept or ():   # views outlive their handler: refused, not a crash
        try:
            repr(v)
            for name in ("src", "sport", "type", "len", "frame"):
                getattr(v, name, None)
            v.send(0) if hasattr(v, "send") else None
        except RuntimeError:
            pass


if __name__ == "__main__":
    session = load_session()
    run(one_input, sys.argv)
