"""nfos check --rss: ethtool output parsing and the per-device verdicts (canned NIC outputs)."""

from conftest import EXAMPLES
from nfos.check.rss import (
    analyse,
    check_rss,
    parse_flow_hash,
    parse_rxfh,
    symmetric_key,
)
from nfos.io.bpf import DEFAULT_RSS_KEY, SYMMETRIC_RSS_KEY

FIREWALL = str(EXAMPLES / "firewall.py")

TCP4_4TUPLE = """TCP over IPV4 flows use these fields for computing Hash flow key:
IP SA
IP DA
L4 bytes 0 & 1 [TCP/UDP src port]
L4 bytes 2 & 3 [TCP/UDP dst port]
"""
UDP4_2TUPLE = """UDP over IPV4 flows use these fields for computing Hash flow key:
IP SA
IP DA
"""


def rxfh(key: bytes, xfrm: str = "off", rings: int = 4) -> str:
    rows = "\n".join(f"{i:5}: " + " ".join(f"{(i + j) % rings:5}" for j in range(8)) for i in range(0, 128, 8))
    return (f"RX flow hash indirection table for eth1 with {rings} RX ring(s):\n{rows}\n"
            f"RSS hash key:\n{':'.join(f'{b:02x}' for b in key)}\n"
            "RSS hash function:\n    toeplitz: on\n    xor: off\n    crc32: off\n"
            f"RSS input transformation:\n    symmetric-xor: {xfrm}\n")


def fake_ethtool(key=DEFAULT_RSS_KEY, xfrm="off", udp=UDP4_2TUPLE, tcp=TCP4_4TUPLE, supported=True):
    def run(args):
        if not supported:
            return 1, "Cannot get RX ring count: Operation not supported\n"
        if args[0] == "-x":
            return 0, rxfh(key, xfrm)
        return 0, {"tcp4": tcp, "udp4": udp}.get(args[-1], "")
    return run


def test_parsers():
    assert parse_flow_hash(TCP4_4TUPLE) == {"ip.src", "ip.dst", "l4.sport", "l4.dport"}
    assert parse_flow_hash(UDP4_2TUPLE) == {"ip.src", "ip.dst"}
    assert parse_flow_hash("UDP over IPV4 flows use these fields for computing Hash flow key:\nNone\n") == set()
    rings, table, key, hfunc, xfrm = parse_rxfh(rxfh(SYMMETRIC_RSS_KEY, "on"))
    assert (rings, len(table), key, hfunc, xfrm) == (4, 128, SYMMETRIC_RSS_KEY, "toeplitz", True)
    assert symmetric_key(SYMMETRIC_RSS_KEY) and not symmetric_key(DEFAULT_RSS_KEY)


def test_firewall_needs_a_symmetric_hash():
    reports = check_rss(FIREWALL, ["eth1"], ethtool=fake_ethtool())
    assert [r.device for r in reports] == ["lan", "wan"]
    assert not any(r.nic_ok for r in reports) and all(r.fanout_ok for r in reports)
    text = "\n".join(reports[0].lines)
    assert "needs a symmetric hash" in text and "xfrm symmetric-xor" in text
    assert "udp4: hashes ip.dst, ip.src: all in the key (fewer fields" in text
    for fixed in (fake_ethtool(xfrm="on"), fake_ethtool(key=SYMMETRIC_RSS_KEY)):
        assert all(r.nic_ok for r in check_rss(FIREWALL, ["eth1"], ethtool=fixed))


def test_hashed_field_outside_the_key_and_unhashable_fields():
    # per-host sets (source address only) on a NIC hashing the 4-tuple: a host's flows spread
    reports = analyse(["lan"], [[2]], 2, {"lan": _nic(fake_ethtool(udp=TCP4_4TUPLE.replace("TCP over", "UDP over")))})
    assert not reports[0].nic_ok
    assert "hashes ip.dst, l4.dport, l4.sport, not in the key" in "\n".join(reports[0].lines)
    assert "rx-flow-hash udp4 s)" in "\n".join(reports[0].lines)
    # a MAC-keyed set: eth.src is named as unhashable
    reports = analyse(["p0"], [[0]], 0, {"p0": _nic(fake_ethtool())})
    assert "eth.src: no NIC hashes it" in "\n".join(reports[0].lines)


def test_no_rss_on_veth():
    reports = check_rss(FIREWALL, ["lan=veth0", "wan=veth1"], ethtool=fake_ethtool(supported=False))
    for r in reports:
        assert not r.nic_ok and r.fanout_ok
        assert "has no RSS (Cannot get RX ring count: Operation not supported)" in r.lines[1]


def _nic(ethtool):
    from nfos.check.rss import read_nic

    return read_nic("eth1", ["tcp4", "udp4"], ethtool)


def test_icmp_is_named_as_beyond_nic_rss():
    """With "icmp" in its protocols the firewall keys errors by the header they quote: the report
    says NIC RSS cannot do that (the verdict covers TCP/UDP); kernel fanout can."""
    for r in check_rss(FIREWALL, ["eth1"], ethtool=fake_ethtool(xfrm="on")):
        assert r.nic_ok and r.fanout_ok and r.icmp
        assert "icmp: echo is keyed by its identifier and an error by the header it quotes" in "\n".join(r.lines)
