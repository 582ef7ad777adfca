"""Records (layout, field ranges), Vector and DistributedObj, inside handlers and h.transact."""

import ast
import struct

import pytest

import frames as F
import nfos
from conftest import nf_path
from nfos.testing import Harness

STRUCTURES_NF = nf_path("structures.py")
DISTRIBUTED_NF = nf_path("distributed.py")
COMMAND = struct.Struct("!cbQ")   # the structures NF's command: op, index, value


def command(op: bytes, index: int, value: int = 0) -> bytes:
    return F.udp_frame(payload=COMMAND.pack(op, index, value))


def emitted(out):
    """The reports a handler emitted (a repr: they start with "(" or "{"), decoded."""
    return [ast.literal_eval(f.decode()) for _, f in out if f[:1] in (b"(", b"{")]


# --------------------------------------------------------------- record layout

class Layout(nfos.Record):
    a: nfos.u8
    b: nfos.u32
    c: nfos.u64
    d: nfos.Bytes(6)
    e: nfos.boolean


class Child(Layout):
    f: nfos.u16


class Tiny(nfos.Record):
    x: nfos.u8


class PyTypes(nfos.Record):
    flag: bool
    n: int
    x: float


def layout(cls):
    return [(f.name, f.offset, f.type.size) for f in cls.__nfos_fields__]


def test_record_layout_natural_alignment():
    assert layout(Layout) == [("a", 0, 1), ("b", 4, 4), ("c", 8, 8), ("d", 16, 6), ("e", 22, 1)]
    assert Layout.__nfos_size__ == 24


def test_record_layout_inherited_fields_come_first():
    assert layout(Child) == layout(Layout) + [("f", 24, 2)]
    assert Child.__nfos_size__ == 32
    assert layout(Tiny) == [("x", 0, 1)] and Tiny.__nfos_size__ == 8


def test_python_types_map_to_record_types():
    assert [f.type for f in PyTypes.__nfos_fields__] == [nfos.boolean, nfos.i64, nfos.f64]
    assert layout(PyTypes) == [("flag", 0, 1), ("n", 8, 8), ("x", 16, 8)]
    assert PyTypes.__nfos_size__ == 24


def test_bad_field_types():
    with pytest.raises(TypeError, match=r"^Bad\.s: <class 'str'> is not a record field type"):
        class Bad(nfos.Record):
            s: str
    with pytest.raises(ValueError, match=r"^Bytes\(n\) needs 1 <= n <= 4096, got 0$"):
        nfos.Bytes(0)
    with pytest.raises(ValueError, match=r"^Vector size must be a positive int, got 0$"):
        nfos.Vector(nfos.u8, 0)


def test_record_bytes_in_the_arena():
    with Harness(STRUCTURES_NF) as h:
        assert h.send("lan", command(b"r", 2, 0x01234567)) == [("wan", command(b"r", 2, 0x01234567))]
        recs = h.nf.state.recs
        raw = h.transact(lambda: [recs[i]._raw() for i in range(3)])
    assert raw == [bytes(24),
                   struct.pack("<B3xIQ6s?x", 0, 7, 0, b"", False),   # set by @nf.init
                   struct.pack("<B3xIQ6s?x", 0x67, 0x01234567, 0x01234567 * 3, b"mac\x02", True)]


# --------------------------------------------------------------- field ranges

def test_u8_overflow_in_a_handler_drops_only_that_packet(capfd):
    with Harness(STRUCTURES_NF) as h:
        assert h.send("lan", command(b"o", 0, 255)) == [("wan", command(b"o", 0, 255))]
        assert h.send("lan", command(b"o", 0, 256)) == []
        stats = h.stats()
        recs = h.nf.state.recs
        assert h.transact(lambda: recs[0].a) == 255   # the failed write left the field alone
    assert (stats["packets_in"], stats["handler_errors"], stats["dropped"], stats["packets_out"]["wan"]) == (
        2, 1, 1, 1)
    assert "OverflowError: value 256 does not fit field 'a'\n" in capfd.readouterr().err


def test_field_ranges_in_a_transaction():
    with Harness(STRUCTURES_NF) as h:
        recs, counts = h.nf.state.recs, h.nf.state.counts

        def set_field(name, value):
            setattr(recs[0], name, value)
            return getattr(recs[0], name)

        assert h.transact(set_field, "c", 2**64 - 1) == 2**64 - 1
        assert h.transact(set_field, "b", 2**32 - 1) == 2**32 - 1
        assert h.transact(set_field, "d", b"ab") == b"ab\0\0\0\0"
        assert h.transact(set_field, "e", 2) is True
        for name, value, msg in [("a", -1, "value -1 does not fit field 'a'"),
                                 ("b", 2**32, "value 4294967296 does not fit field 'b'"),
                                 ("c", 2**64, "value 18446744073709551616 does not fit field 'c'"),
                                 ("c", -1, "value -1 does not fit field 'c'")]:
            with pytest.raises(OverflowError, match=f"^{msg}$"):
                h.transact(set_field, name, value)
        with pytest.raises(ValueError, match="^field 'd' holds 6 bytes, got 7$"):
            h.transact(set_field, "d", b"1234567")
        with pytest.raises(TypeError, match="^field 'a' takes an int, got str$"):
            h.transact(set_field, "a", "1")
        with pytest.raises(OverflowError, match="^value 4294967296 does not fit field 'value'$"):
            h.transact(counts.__setitem__, 0, 2**32)
        assert h.transact(lambda: recs[0].as_dict()) == {"a": 0, "b": 2**32 - 1, "c": 2**64 - 1,
                                                         "d": b"ab\0\0\0\0", "e": True}
        assert h.transact(lambda: counts[0]) == 0


# --------------------------------------------------------------- Vector

def test_vector_of_scalars_in_handlers_and_transactions():
    with Harness(STRUCTURES_NF) as h:
        counts = h.nf.state.counts
        h.send("lan", command(b"i", 1, 5))
        h.send("lan", command(b"i", 1, 6))
        h.send("lan", command(b"i", -1, 2))      # negative indexes count from the end
        h.send("lan", command(b"s", 0, 4_000_000_000))
        assert h.transact(lambda: [counts[i] for i in range(4)]) == [4_000_000_000, 11, 0, 2]
        h.transact(counts.__setitem__, 2, 77)
        assert emitted(h.send("lan", command(b"g", 2)))[0][0] == 77
        assert len(counts) == 4
        assert h.stats()["handler_errors"] == 0


def test_vector_of_records_in_handlers_and_transactions():
    with Harness(STRUCTURES_NF) as h:
        recs = h.nf.state.recs
        h.send("lan", command(b"r", 0, 0x1FF))
        assert emitted(h.send("lan", command(b"g", 0))) == [
            (0, {"a": 0xFF, "b": 0x1FF, "c": 0x5FD, "d": b"mac\0\0\0", "e": True})]

        def bump():
            r = recs[2]
            r.b += 40
            r.d = b"xy"
        h.transact(bump)
        h.transact(bump)
        assert emitted(h.send("lan", command(b"g", 2))) == [
            (0, {"a": 0, "b": 80, "c": 0, "d": b"xy\0\0\0\0", "e": False})]
        h.send("lan", command(b"c", 1))          # recs[1] = recs[2]
        assert h.transact(lambda: recs[1].as_dict()) == {"a": 0, "b": 80, "c": 0, "d": b"xy\0\0\0\0", "e": False}
        with pytest.raises(TypeError, match="^this Vector holds .*Rec records$"):
            h.transact(recs.__setitem__, 0, 5)


def test_vector_index_errors(capfd):
    with Harness(STRUCTURES_NF) as h:
        counts = h.nf.state.counts
        assert h.send("lan", command(b"g", 4)) == []
        assert h.send("lan", command(b"g", -5)) == []
        assert h.stats()["handler_errors"] == 2

        def write_then_fail():
            counts[0] = 9
            return counts[7]
        with pytest.raises(IndexError, match=r"^Vector index 7 out of range 0\.\.3$"):
            h.transact(write_then_fail)
        assert h.transact(lambda: counts[0]) == 0   # the failed transaction was rolled back
        with pytest.raises(IndexError, match=r"^Vector index -5 out of range 0\.\.3$"):
            h.transact(lambda: counts[-5])
    err = capfd.readouterr().err
    # both bad reads are on the same NF line: logged once, counted twice
    assert err.count("nfos: handler error at structures.py:") == 1
    assert "IndexError: Vector index 4 out of range 0..3\n" in err


def test_structures_only_inside_transactions():
    with Harness(STRUCTURES_NF) as h:
        counts, recs = h.nf.state.counts, h.nf.state.recs
        with pytest.raises(RuntimeError, match="^nfos structures can only be used inside a handler or @nf.init$"):
            counts[0]
        with pytest.raises(RuntimeError, match="^nfos structures can only be used inside a handler or @nf.init$"):
            counts[0] = 1
        kept = h.transact(lambda: recs[1])
        with pytest.raises(RuntimeError, match="^this record belongs to a finished transaction"):
            _ = kept.b
        assert repr(kept) == "<Rec (transaction finished)>"
        with pytest.raises(AttributeError, match="^nf.state is set in @nf.init"):
            h.nf.state.other = 1


# --------------------------------------------------------------- DistributedObj

def test_distributed_obj_arguments():
    class Mixed(nfos.Record):
        n: nfos.u32
        tag: nfos.Bytes(4)

    with pytest.raises(ValueError, match="^merge names unknown fields: nope$"):
        nfos.DistributedObj(Tiny, merge={"nope": "max"})
    with pytest.raises(ValueError, match="^merge for 'x' must be sum, max or min, got 'avg'$"):
        nfos.DistributedObj(Tiny, merge="avg")
    with pytest.raises(TypeError, match="^field 'tag': byte fields cannot be merged$"):
        nfos.DistributedObj(Mixed)
    with pytest.raises(TypeError, match="^DistributedObj takes a Record type"):
        nfos.DistributedObj(int)


def _traffic():
    """16 UDP frames from 16 hosts (so RSS spreads them) of 72..87 bytes."""
    return [F.udp_frame(f"10.0.{i}.1", "192.0.2.1", 1000 + i, 53, bytes(30 + i)) for i in range(16)]


def test_distributed_obj_sequential_merge():
    frames = _traffic()
    with Harness(DISTRIBUTED_NF) as h:
        assert h.send_many([("lan", f) for f in frames]) == [("wan", f) for f in frames]
        tot = h.nf.state.tot
        assert h.transact(lambda: tot.read().as_dict()) == {"packets": 16, "bytes": 1272, "biggest": 87,
                                                            "smallest": 72}
        assert emitted(h.send("lan", F.udp_frame(payload=b"read\0"))) == [
            {"packets": 16, "bytes": 1272, "biggest": 87, "smallest": 72}]


def test_distributed_obj_sum_and_max_across_workers():
    frames = _traffic()
    with Harness(DISTRIBUTED_NF, workers=2) as h:
        assert sorted(h.send_many([("lan", f) for f in frames])) == sorted(("wan", f) for f in frames)
        per_worker = [w["packets"] for w in h.stats()["per_worker"]]
        assert sum(per_worker) == 16 and min(per_worker) > 0, per_worker   # both replicas were updated
        tot = h.nf.state.tot
        assert h.transact(lambda: tot.read().packets) == 16
        assert h.transact(lambda: tot.read().bytes) == sum(len(f) for f in frames) == 1272
        assert h.transact(lambda: tot.read().biggest) == 87
        # a worker merges the same replicas
        assert emitted(h.send("lan", F.udp_frame(payload=b"read\0")))[0]["packets"] == 16


def test_distributed_obj_min_across_workers():
    frames = _traffic()
    with Harness(DISTRIBUTED_NF, workers=2) as h:
        h.send_many([("lan", f) for f in frames])
        tot = h.nf.state.tot
        assert h.transact(lambda: tot.read().smallest) == 72


def test_distributed_obj_staleness_uses_the_virtual_clock():
    update = F.udp_frame(payload=bytes(40))           # 82-byte frames
    with Harness(DISTRIBUTED_NF, params={"staleness": "1s"}) as h:
        tot = h.nf.state.tot

        def read_in_handler(t):
            return emitted(h.send("lan", F.udp_frame(payload=b"read\0"), time=t))[0]["packets"]

        assert read_in_handler(0.0) == 0                      # merged and cached at t=0
        h.send("lan", update, time=0.1)
        h.send("lan", update, time=0.2)
        assert read_in_handler(0.5) == 0                      # cached value, 0.5 s old
        assert h.transact(lambda: tot.read().packets) == 0    # the same cache (one process)
        assert read_in_handler(0.999999999) == 0
        assert read_in_handler(1.0) == 2                      # 1 s old: merged again
        h.send("lan", update, time=1.5)
        assert read_in_handler(1.9) == 2
        h.advance(0.1)                                        # clock at 2.0 s
        assert h.now == 2.0
        assert h.transact(lambda: tot.read().as_dict()) == {"packets": 3, "bytes": 246, "biggest": 82,
                                                            "smallest": 82}


def test_distributed_obj_staleness_zero_always_merges():
    update = F.udp_frame(payload=bytes(40))
    with Harness(DISTRIBUTED_NF) as h:
        tot = h.nf.state.tot
        assert h.transact(lambda: tot.read().packets) == 0
        h.send("lan", update)
        assert h.transact(lambda: tot.read().packets) == 1


def test_merged_view_is_read_only(capfd):
    with Harness(DISTRIBUTED_NF) as h:
        h.send("lan", F.udp_frame(payload=bytes(40)))
        assert h.send("lan", F.udp_frame(payload=b"write")) == []
        stats = h.stats()
        tot = h.nf.state.tot
        assert h.transact(lambda: tot.read().packets) == 1
        with pytest.raises(AttributeError, match=r"^this record is read-only \(a merged DistributedObj view"):
            h.transact(lambda: setattr(tot.read(), "bytes", 1))
    assert (stats["handler_errors"], stats["dropped"], stats["packets_out"]["wan"]) == (1, 1, 1)
    assert ("AttributeError: this record is read-only (a merged DistributedObj view: use .update())\n"
            in capfd.readouterr().err)


# ------------------------------------------------- attribute lookups (the descriptor cache)

def test_field_reads_follow_changes_to_the_record_class():
    """Record and header views look fields up through a (type, name) cache that a change to
    the class invalidates: every read is what the generic lookup would give."""

    class Host(nfos.Record):
        port: nfos.u8

        def double(self):
            return 2 * self.port

    h = Host(port=7)
    assert (h.port, getattr(h, "".join(["po", "rt"])), h.double()) == (7, 7, 14)   # a non-interned name too
    Host.label = property(lambda self: "first")
    assert h.label == "first"
    first = Host.label
    Host.label = property(lambda self: "second")   # a new version of the class ...
    assert h.double() == 14                        # ... made valid again by another lookup
    assert h.label == "second"
    del first
    del Host.label
    with pytest.raises(AttributeError, match="label"):
        _ = h.label
    Host.port = property(lambda self: 99)           # a field shadowed by the class: as the generic lookup
    assert h.port == 99
    with pytest.raises(AttributeError, match="nothing"):
        _ = h.nothing
