"""Bad input and bad NF code: counted or reported in one line, never a crashed run."""

import os

import pytest

import frames as F
import nfos
from conftest import EXAMPLES, nf_path
from nfos.io.capture import Trace
from nfos.nf import NFError
from nfos.params import ParamError
from nfos.runtime.replay import replay
from nfos.runtime.session import LoadError
from nfos.testing import Harness

FIELDS_NF = nf_path("fields.py")
RAISER_NF = nf_path("raiser.py")
TABLEFULL_NF = nf_path("tablefull.py")
FIREWALL = str(EXAMPLES / "firewall.py")


def line_of(path: str, text: str) -> int:
    """1-based number of the line of ``path`` that contains ``text`` (exactly one)."""
    with open(path) as f:
        hits = [i for i, line in enumerate(f, 1) if text in line]
    assert len(hits) == 1, hits
    return hits[0]


# --------------------------------------------------------------- malformed frames

MALFORMED = {
    "empty": b"",
    "13 bytes": bytes(13),
    "VLAN tag cut": F.ether(vlan=5)[:16],
    "IPv4 header cut": F.ether() + bytes([0x45]) + bytes(9),
    "IHL 3": F.udp_frame(ihl=3),
    "IHL 15 beyond the frame": F.udp_frame(ihl=15, do_pad=False),
    "IP version 6 with IPv4 ethertype": F.udp_frame(version=6),
    "total length > frame": F.udp_frame(total_length=200),
    "total length < IHL": F.udp_frame(total_length=19),
    "TCP header cut": F.ipv4_frame(proto=F.PROTO_TCP, l4=bytes(12), do_pad=False),
    "TCP header cut, padded frame": F.ipv4_frame(proto=F.PROTO_TCP, l4=bytes(12)),
    "TCP data offset 4": F.ipv4_frame(proto=F.PROTO_TCP, l4=bytes(12) + b"\x40" + bytes(7)),
    "TCP data offset past the IP end": F.ipv4_frame(proto=F.PROTO_TCP, l4=bytes(12) + b"\xf0" + bytes(7)),
    "UDP header cut": F.ipv4_frame(proto=F.PROTO_UDP, l4=bytes(7)),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_frames_are_counted_and_dropped(name):
    with Harness(FIELDS_NF) as h:   # its handler reports every packet it sees
        assert h.send("lan", MALFORMED[name]) == []
        s = h.stats()
    assert (s["packets_in"], s["malformed"], s["dropped"], s["handler_errors"]) == (1, 1, 1, 0)
    assert sum(s["packets_out"].values()) == 0


def test_malformed_frames_with_workers():
    good = F.udp_frame()
    with Harness(FIELDS_NF, workers=2) as h:
        out = h.send_many([("lan", f) for f in MALFORMED.values()] + [("wan", good)])
        s = h.stats()
    assert len(out) == 1 and out[0][0] == "wan" and b"'dev': 'wan'" in out[0][1]
    assert (s["packets_in"], s["malformed"], s["dropped"], s["handler_errors"]) == (
        len(MALFORMED) + 1, len(MALFORMED), len(MALFORMED) + 1, 0)


@pytest.mark.parametrize("frame", [
    F.ipv4_frame(proto=F.PROTO_ICMP, l4=bytes(3)),                        # too short for ICMP: no view
    F.ipv4_frame(proto=F.PROTO_TCP, l4=bytes(8), mf=True),                # a first fragment may cut TCP
    F.ipv4_frame(proto=99, l4=b""),                                       # unknown protocol, no payload
    F.ether(ethertype=0x86DD) + bytes(40),                                # IPv6: not parsed, an orphan
], ids=["short ICMP", "cut first fragment", "protocol 99", "IPv6"])
def test_odd_but_valid_frames_reach_the_handler(frame):
    with Harness(FIELDS_NF) as h:
        out = h.send("lan", frame)
        s = h.stats()
    assert len(out) == 1 and out[0][0] == "wan"
    assert (s["malformed"], s["handler_errors"]) == (0, 0)


def test_non_ip_frames_reach_the_orphan_handler():
    # a timestamp request: ICMP of no session (an echo would open one); IPv6: not parsed
    arp, icmp, ipv6 = F.arp_frame(), F.icmp_frame(icmp_type=13), F.ether(ethertype=0x86DD) + bytes(40)
    with Harness(FIREWALL) as h:
        assert h.send("lan", arp) == [("wan", arp)]     # the firewall's orphans: LAN->WAN forwarded
        assert h.send("lan", icmp) == [("wan", icmp)]
        assert h.send("wan", ipv6) == []                # WAN->LAN dropped
        assert h.send("wan", arp) == [("lan", arp)]     # but ARP, which passes both ways
        s = h.stats()
    assert (s["packets_in"], s["dropped"], s["malformed"], s["packet_sets_created"]) == (4, 1, 0, 0)


# --------------------------------------------------------------- handler exceptions

def _five(bad_index=2, ttl=64):
    return [F.udp_frame(sport=100 + i, payload=b"!" if i == bad_index else b".", ttl=ttl) for i in range(5)]


def _after(frame):
    """What the raiser NF sends: the frame with its TTL decremented once."""
    off = 14
    hdr = bytearray(frame[off:off + 20])
    hdr[8] -= 1
    hdr[10:12] = b"\0\0"
    c = F.checksum(bytes(hdr))
    hdr[10:12] = c.to_bytes(2, "big")
    return frame[:off] + bytes(hdr) + frame[off + 20:]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_raising_handler_drops_only_its_packet(workers, capfd):
    frames = _five()
    with Harness(RAISER_NF, workers=workers) as h:
        out = h.send_many([("lan", f) for f in frames])
        assert sorted(out) == sorted(("wan", _after(f)) for i, f in enumerate(frames) if i != 2)
        s = h.stats()
        seen = h.nf.state.seen
        assert h.transact(lambda: seen[0]) == 4          # the failed packet's write was rolled back
    assert (s["packets_in"], s["handler_errors"], s["dropped"], s["packets_out"]["wan"]) == (5, 1, 1, 4)
    line = line_of(RAISER_NF, "raise ValueError")
    err = capfd.readouterr().err
    assert f"nfos: handler error at raiser.py:{line}: ValueError: bad packet from port 102\n" in err
    assert "nfos: the packet was dropped; later errors at this line are only counted\n" in err


def test_a_raising_handler_in_a_batch():
    """One transaction holds the 5 packets: the batch is rolled back and re-run one packet each."""
    frames = _five()
    trace = Trace(["lan", "wan"], frames, [1_000 * i for i in range(5)], [0] * 5)
    result = replay(RAISER_NF, trace, workers=0, keep_output=True)
    s = result.stats
    # packets 0 and 1 ran twice (in the batch, then alone): still one TTL decrement and one count each
    assert result.outputs == {"lan": [b"seen=4"], "wan": [_after(f) for i, f in enumerate(frames) if i != 2]}
    assert (s["packets_in"], s["handler_errors"], s["dropped"], s["packets_out"]) == (
        5, 1, 1, {"lan": 1, "wan": 4})
    assert s["aborts_by_cause"]["handler_error"] == 2   # the batch, then the faulty packet alone


def test_errors_at_one_line_are_logged_once(capfd):
    bad = [F.udp_frame(sport=7, payload=b"!")] * 3
    with Harness(RAISER_NF) as h:
        assert h.send_many([("lan", f) for f in bad]) == []
        assert h.stats()["handler_errors"] == 3
    err = capfd.readouterr().err
    line = line_of(RAISER_NF, "raise ValueError")
    assert err.count("nfos: handler error at ") == 1
    assert err.count(f"nfos: handler error at raiser.py:{line}: ValueError: bad packet from port 7\n") == 1
    assert err.count("Traceback (most recent call last):\n") == 1
    assert f'File "{RAISER_NF}", line {line}, in handle\n' in err


def test_errors_at_one_line_are_logged_once_across_workers(capfd):
    bad = [F.udp_frame(f"10.0.{i}.1", sport=7, payload=b"!") for i in range(12)]
    with Harness(RAISER_NF, workers=2) as h:
        assert h.send_many([("lan", f) for f in bad]) == []
        s = h.stats()
    assert s["handler_errors"] == 12
    assert min(w["packets"] for w in s["per_worker"]) > 0   # both workers raised
    assert capfd.readouterr().err.count("nfos: handler error at ") == 1


# --------------------------------------------------------------- NF files that cannot load

def load_error(path, params=None, check=True):
    with pytest.raises((LoadError, ParamError, NFError)) as info:
        with Harness(path, params=params, check=check):
            pass
    msg = str(info.value)
    assert "\n" not in msg
    return type(info.value), msg


def test_syntax_error(write_nf):
    path = write_nf("""
        import nfos
        nf = nfos.NF("x")

        def f(:
            pass
    """)
    assert load_error(path) == (LoadError, f"{path}:4:7: syntax error: invalid syntax")
    assert load_error(path, check=False) == (LoadError, f"{path}:4: syntax error: invalid syntax")


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.py")
    assert load_error(path) == (LoadError, f"{path}: no such NF file")


def test_module_level_exception(write_nf):
    path = write_nf("""
        import nfos

        nf = nfos.NF("x")
        {}["missing"]
    """)
    assert load_error(path) == (LoadError, "nf.py:4: KeyError: 'missing'")


PARAMS_NF = """
    import nfos

    nf = nfos.NF("withparams", params={"n": nfos.param(int, 1, "a number"),
                                       "idle": nfos.param(nfos.Duration, nfos.seconds(1), "a time")})
"""


def test_unknown_parameter(write_nf):
    path = write_nf(PARAMS_NF)
    assert load_error(path, {"m": 1}) == (
        LoadError, f"{path}: unknown parameter 'm' for NF 'withparams' (known: idle, n)")


def test_bad_parameter_value(write_nf):
    path = write_nf(PARAMS_NF)
    kind, msg = load_error(path, {"n": "abc"})
    assert (kind, msg) == (LoadError, f"{path}: parameter 'n': 'abc' is not an int (e.g. 1000, 1_000, 0x10, 10k, 2M)")
    kind, msg = load_error(path, ["idle"])
    assert (kind, msg) == (LoadError, f"{path}: parameter 'idle' must be written name=value")


@pytest.mark.parametrize("params", [{"m": 1}, {"n": "abc"}])
def test_parameter_errors_name_the_file(write_nf, params):
    path = write_nf(PARAMS_NF)
    assert os.path.basename(path) in load_error(path, params)[1]


def test_mutated_module_global(write_nf):
    path = write_nf("""
        import nfos

        nf = nfos.NF("x")
        SEEN = {}


        @nf.orphan
        def h(pkt):
            SEEN[pkt.len] = 1
    """)
    assert load_error(path) == (
        LoadError, f"{path}:9:5: handler mutates module-level 'SEEN' (assignment); module-level objects are "
                   "per process and not rolled back; keep state in an nfos structure or packet-set state")


def test_several_findings_are_summarised(write_nf):
    path = write_nf("""
        import threading

        import nfos

        nf = nfos.NF("x")
        SEEN = []


        @nf.orphan
        def h(pkt):
            SEEN.append(1)
    """)
    kind, msg = load_error(path)
    assert kind is LoadError
    assert msg.startswith(f"{path}:1:8: NF code must not use threading")
    assert msg.endswith(f" (and 1 more; run 'nfos check {path}')")


@pytest.mark.parametrize("count", [0, 2])
def test_not_exactly_one_nf(write_nf, count):
    path = write_nf("import nfos\n" + "".join(f"nf{i} = nfos.NF('n{i}')\n" for i in range(count)))
    assert load_error(path) == (LoadError, f"{path}: an NF file defines exactly one nfos.NF(...); found {count}")


def test_packet_set_on_unknown_device(write_nf):
    path = write_nf("""
        import nfos

        nf = nfos.NF("x", devices=["lan", "wan"])


        @nf.init
        def setup(p):
            nf.packet_sets(nfos.on("dmz", ipv4=("src",)))
    """)
    assert load_error(path) == (
        LoadError, "nf.py:8: @nf.init failed: NFError: packet set on unknown device 'dmz' (devices: lan, wan)")


def test_nf_declaration_errors():
    with pytest.raises(NFError, match=r"^NF 'x': devices must be distinct names, got \['a', 'a'\]$"):
        nfos.NF("x", devices=["a", "a"])
    with pytest.raises(NFError, match=r"^on\('lan'\): unknown field ipv4\.ttl "):
        nfos.on("lan", ipv4=("ttl",))
    with pytest.raises(NFError, match=r"^on\('lan'\) names no header field$"):
        nfos.on("lan")
    nf = nfos.NF("x")
    nf.packet_sets(nfos.on("lan", ipv4="src"))
    with pytest.raises(NFError, match="^NF 'x' declares its packet sets twice$"):
        nf.packet_sets(nfos.on("wan", ipv4="dst"))


# --------------------------------------------------------------- full packet-set tables

def _flow(i, payload=b""):
    return F.udp_frame(f"10.0.0.{i}", "192.0.2.1", 1000 + i, 53, payload)


def test_table_full_uncaught(capfd):
    with Harness(TABLEFULL_NF, params={"capacity": 2}) as h:
        assert h.send("lan", _flow(1)) == [("wan", _flow(1))]
        assert h.send("lan", _flow(2)) == [("wan", _flow(2))]
        assert h.send("lan", _flow(3)) == []            # no room: TableFull escapes the handler
        assert h.send("lan", _flow(1, b"again")) == [("wan", _flow(1, b"again"))]   # a known set
        s = h.stats()
    assert (s["packets_in"], s["table_full"], s["handler_errors"], s["dropped"]) == (4, 1, 1, 1)
    assert (s["packet_sets_created"], s["per_worker"][0]["packet_sets_live"]) == (2, 2)
    assert ("TableFull: the packet-set table of worker 0 is full (capacity 2 per worker)\n"
            in capfd.readouterr().err)


def test_table_full_caught_forwards_statelessly():
    with Harness(TABLEFULL_NF, params={"capacity": 2, "catch": "true"}) as h:
        for i in (1, 2, 3, 3):
            assert h.send("lan", _flow(i)) == [("wan", _flow(i))]
        s = h.stats()
    assert (s["packets_in"], s["table_full"], s["handler_errors"], s["dropped"]) == (4, 0, 0, 0)
    assert (s["packet_sets_created"], s["per_worker"][0]["packet_sets_live"]) == (2, 2)


def test_table_full_in_a_batch():
    frames = [_flow(i) for i in range(1, 6)]
    trace = Trace(["lan", "wan"], frames, [1_000 * i for i in range(5)], [0] * 5)
    result = replay(TABLEFULL_NF, trace, workers=0, params=["capacity=2"], keep_output=True)
    s = result.stats
    assert result.outputs == {"lan": [], "wan": frames[:2]}
    assert (s["packets_in"], s["table_full"], s["handler_errors"], s["dropped"]) == (5, 3, 3, 3)
    assert (s["packet_sets_created"], s["per_worker"][0]["packet_sets_live"]) == (2, 2)
