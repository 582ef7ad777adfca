"""Typed NF parameters: parsing, inference, errors, the read-only namespace."""

import pickle

import pytest

from nfos.params import (
    Duration,
    IPv4,
    Param,
    ParamError,
    Params,
    describe_params,
    ip,
    ip_str,
    mac,
    mac_str,
    micros,
    millis,
    param,
    resolve_params,
    seconds,
    type_name,
)

# --------------------------------------------------------------------------- Duration


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("100us", 100_000),
        ("100µs", 100_000),  # micro sign
        ("100μs", 100_000),  # greek mu
        ("0.1ms", 100_000),
        ("2s", 2_000_000_000),
        ("1.5m", 90_000_000_000),
        ("1h", 3_600_000_000_000),
        ("250ns", 250),
        ("3", 3_000_000_000),  # bare number is seconds
        ("0.5", 500_000_000),
        ("1e-3s", 1_000_000),
        ("1_000us", 1_000_000),
        (" 5 ms ", 5_000_000),
        ("0", 0),
    ],
)
def test_duration_parsing(text, ns):
    p = resolve_params("nf", {"d": seconds(1)}, {"d": text})
    assert p.d == ns
    assert type(p.d) is Duration


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (100_000, "100us"),
        (2_000_000_000, "2s"),
        (90_000_000_000, "90s"),
        (120_000_000_000, "2m"),
        (7_200_000_000_000, "2h"),
        (1_500, "1500ns"),
        (1_500_000, "1500us"),
        (0, "0s"),
    ],
)
def test_duration_str(ns, text):
    assert str(Duration(ns)) == text
    assert repr(Duration(ns)) == f"Duration('{text}')"


def test_duration_constructors():
    assert Duration("0.1ms") == 100_000
    assert repr(Duration("0.1ms")) == "Duration('100us')"
    assert eval(repr(Duration(123_456)), {"Duration": Duration}) == 123_456
    assert seconds(0.1) == 100_000_000
    assert seconds(60) == 60_000_000_000
    assert millis(0.1) == 100_000
    assert micros(250) == 250_000
    assert micros(0.5) == 500
    for d in (seconds(1), millis(1), micros(1)):
        assert type(d) is Duration
    assert Duration(5).ns == 5
    assert Duration("2s").seconds == 2.0
    assert f"{Duration('2s')}" == "2s"
    assert f"{Duration('2s'):d}" == "2000000000"
    assert pickle.loads(pickle.dumps(Duration("3ms"))) == Duration("3ms")


def test_duration_rejects_bad_values():
    with pytest.raises(ValueError, match="must be >= 0"):
        Duration(-1)
    with pytest.raises(ValueError, match="negative"):
        Duration("-5s")
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        seconds(-1)
    with pytest.raises(TypeError):
        Duration(1.5)


# --------------------------------------------------------------------------- addresses


def test_ip():
    a = ip("10.0.0.1")
    assert a == 0x0A000001
    assert type(a) is IPv4
    assert str(a) == "10.0.0.1"
    assert repr(a) == "IPv4('10.0.0.1')"
    assert ip_str(0xC0A80101) == "192.168.1.1"
    assert ip("255.255.255.255") == 0xFFFFFFFF
    assert IPv4(0x7F000001) == ip("127.0.0.1")
    assert f"{a}" == "10.0.0.1"
    assert pickle.loads(pickle.dumps(a)) == a


@pytest.mark.parametrize(
    "bad", ["10.0.0", "10.0.0.256", "a.b.c.d", "10.0.0.1.2", "", "01.2.3.4", " 1 .2.3.4"]
)
def test_ip_rejects(bad):
    with pytest.raises(ValueError, match="is not an IPv4 address"):
        ip(bad)


def test_ip_str_range():
    with pytest.raises(ValueError, match="not a 32-bit IPv4 address"):
        ip_str(1 << 32)


def test_mac():
    assert mac("02:00:00:00:00:01") == 0x020000000001
    assert mac("02-00-00-00-00-01") == 0x020000000001
    assert mac("FF:ff:00:00:00:0a") == 0xFFFF0000000A
    assert mac_str(0x020000000001) == "02:00:00:00:00:01"
    assert mac_str(mac("aa:bb:cc:dd:ee:ff")) == "aa:bb:cc:dd:ee:ff"
    for bad in ("02:00:00:00:00", "02:00-00:00:00:01", "zz:00:00:00:00:01", "02:00:00:00:00:01:02"):
        with pytest.raises(ValueError, match="is not a MAC address"):
            mac(bad)
    with pytest.raises(ValueError, match="48-bit"):
        mac_str(1 << 48)


# --------------------------------------------------------------------------- scalar parsing


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1000", 1000),
        ("1_000", 1000),
        ("0x10", 16),
        ("10k", 10_000),
        ("2M", 2_000_000),
        ("1G", 1_000_000_000),
        ("1.5k", 1500),
        ("-5", -5),
        ("1e6", 1_000_000),
        (" 7 ", 7),
    ],
)
def test_int_parsing(text, value):
    p = resolve_params("nf", {"n": 1}, {"n": text})
    assert p.n == value
    assert type(p.n) is int


@pytest.mark.parametrize(
    ("text", "value"), [("1e6", 1e6), ("0.5", 0.5), ("3", 3.0), ("2.5k", 2500.0)]
)
def test_float_parsing(text, value):
    p = resolve_params("nf", {"x": 1.0}, {"x": text})
    assert p.x == value
    assert type(p.x) is float


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("False", False),
        ("1", True),
        ("0", False),
        ("YES", True),
        ("no", False),
        ("on", True),
        ("Off", False),
    ],
)
def test_bool_parsing(text, value):
    assert resolve_params("nf", {"b": False}, {"b": text}).b is value


def test_str_and_ipv4_parsing():
    p = resolve_params("nf", {"name": "x", "gw": ip("1.1.1.1")}, ["name=a=b", "gw=10.0.0.254"])
    assert p.name == "a=b"  # split on the first '=' only
    assert p.gw == ip("10.0.0.254")
    assert type(p.gw) is IPv4


def test_list_parsing():
    declared = {
        "servers": [ip("1.1.1.1")],
        "ports": [80],
        "tags": [],
        "ws": [0.5],
        "ts": [millis(1)],
    }
    p = resolve_params(
        "lb",
        declared,
        ["servers=118.0.0.1,118.0.0.2", "ports= 1, 2 ,0x10", "tags=a,b", "ws=1,2.5", "ts=1ms,2us"],
    )
    assert p.servers == [0x76000001, 0x76000002]
    assert all(type(s) is IPv4 for s in p.servers)
    assert p.ports == [1, 2, 16]
    assert p.tags == ["a", "b"]
    assert p.ws == [1.0, 2.5]
    assert p.ts == [1_000_000, 2_000]
    empty = resolve_params("lb", declared, {"servers": "", "ports": ""})
    assert empty.servers == []
    assert empty.ports == []


# --------------------------------------------------------------------------- inference and declarations


def test_defaults_and_inference():
    declared = {
        "flag": True,
        "rate": 1000,
        "ratio": 0.5,
        "name": "fw",
        "gw": ip("10.0.0.1"),
        "expiry": seconds(60),
        "servers": [ip("1.1.1.1")],
        "tags": [],
        "burst": param(int, 10, "burst size"),
    }
    p = resolve_params("nf", declared, [])
    assert dict(p) == {
        "flag": True,
        "rate": 1000,
        "ratio": 0.5,
        "name": "fw",
        "gw": 0x0A000001,
        "expiry": 60_000_000_000,
        "servers": [0x01010101],
        "tags": [],
        "burst": 10,
    }
    assert describe_params("nf", declared) == [
        ("burst", "int", 10, "burst size"),
        ("expiry", "Duration", Duration("60s"), ""),
        ("flag", "bool", True, ""),
        ("gw", "IPv4", ip("10.0.0.1"), ""),
        ("name", "str", "fw", ""),
        ("rate", "int", 1000, ""),
        ("ratio", "float", 0.5, ""),
        ("servers", "list[IPv4]", [ip("1.1.1.1")], ""),
        ("tags", "list[str]", [], ""),
    ]
    # bool is inferred as bool, not int: "2" is rejected
    with pytest.raises(ParamError, match="is not a bool"):
        resolve_params("nf", {"flag": True}, {"flag": "2"})
    # Duration is inferred as Duration, not int
    assert resolve_params("nf", {"d": seconds(1)}, {"d": "5ms"}).d == 5_000_000


def test_explicit_param_types():
    declared = {
        "a": Param(float, 1),
        "b": param("list[IPv4]", "1.2.3.4,5.6.7.8"),
        "c": param(list[int], []),
        "d": param(Duration, "100us"),
        "e": param("duration", 0),
        "f": param(IPv4, None),
    }
    p = resolve_params("nf", declared, ["c=1,2"])
    assert p.a == 1.0 and type(p.a) is float
    assert p.b == [ip("1.2.3.4"), ip("5.6.7.8")]
    assert p.c == [1, 2]
    assert p.d == 100_000 and type(p.d) is Duration
    assert p.e == 0 and type(p.e) is Duration
    assert p.f is None
    assert resolve_params("nf", declared, {"f": "9.9.9.9"}).f == ip("9.9.9.9")
    assert type_name(list[Duration]) == "list[Duration]"
    assert type_name("ipv4") == "IPv4"


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"x": None}, "NF 'nf': parameter 'x': cannot infer a parameter type from default None"),
        ({"x": object()}, "cannot infer a parameter type"),
        ({"x": param("complex", 1)}, "parameter 'x': unknown parameter type 'complex'"),
        ({"x": param(list, [])}, "needs an element type, e.g. list[int]"),
        ({"x": param(Duration, 0.5)}, "parameter 'x': default 0.5 is not a duration"),
        ({"x": param(int, "fast")}, "parameter 'x': default 'fast' is not an int"),
        ({"keys": 1}, "parameter name 'keys' is reserved"),
        ({"_x": 1}, "must be a Python identifier not starting with '_'"),
    ],
)
def test_bad_declarations(declared, message):
    with pytest.raises(ParamError) as exc:
        resolve_params("nf", declared, [])
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["rat=5"], "unknown parameter 'rat' for NF 'policer' (known: burst, rate, staleness)"),
        ({"rate": "fast"}, "parameter 'rate': 'fast' is not an int"),
        (["rate=0.5"], "parameter 'rate': '0.5' is not an int"),
        (["rate"], "parameter 'rate' must be written name=value"),
        (["=5"], "parameter '=5' must be written name=value"),
        (["staleness=-5s"], "parameter 'staleness': '-5s' is negative; durations must be >= 0"),
        (["staleness=5x"], "parameter 'staleness': '5x' has unknown unit 'x'"),
        (["staleness=fast"], "parameter 'staleness': 'fast' is not a duration"),
        (["staleness=0.5ns"], "'0.5ns' is not a whole number of nanoseconds"),
        (["burst=maybe"], "parameter 'burst': 'maybe' is not a bool"),
    ],
)
def test_value_errors(given, message):
    declared = {"rate": 1000, "burst": True, "staleness": millis(1)}
    with pytest.raises(ParamError) as exc:
        resolve_params("policer", declared, given)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_list_and_address_errors():
    declared = {"servers": [ip("1.1.1.1")], "ratio": 0.5}
    with pytest.raises(
        ParamError, match=r"parameter 'servers': .*item 2 '118\.0\.0' is not an IPv4 address"
    ):
        resolve_params("lb", declared, ["servers=118.0.0.1,118.0.0"])
    with pytest.raises(ParamError, match="has an empty item 2"):
        resolve_params("lb", declared, ["servers=1.1.1.1,,2.2.2.2"])
    with pytest.raises(ParamError, match="parameter 'ratio': 'abc' is not a float"):
        resolve_params("lb", declared, ["ratio=abc"])
    with pytest.raises(
        ParamError, match=r"unknown parameter 'x' for NF 'empty' \(it declares no parameters\)"
    ):
        resolve_params("empty", {}, ["x=1"])


def test_param_error_is_value_error():
    assert issubclass(ParamError, ValueError)


def test_given_names_and_overrides():
    declared = {"max_flows": 10}
    assert resolve_params("nf", declared, ["max-flows=5"]).max_flows == 5
    assert resolve_params("nf", declared, ["max_flows=5", "max_flows=7"]).max_flows == 7
    assert resolve_params("nf", declared, {"max_flows": 3}).max_flows == 3  # non-string dict value


# --------------------------------------------------------------------------- Params namespace


def test_params_namespace():
    p = resolve_params("nf", {"rate": 1000, "expiry": seconds(2)}, ["rate=5"])
    assert p.rate == 5
    assert p["rate"] == 5
    assert "rate" in p and "nope" not in p
    assert list(p) == ["rate", "expiry"]
    assert len(p) == 2
    assert dict(p) == {"rate": 5, "expiry": 2_000_000_000}
    assert p.get("nope", 1) == 1
    assert repr(p) == "Params(rate=5, expiry=Duration('2s'))"
    with pytest.raises(AttributeError, match="parameters are read-only"):
        p.rate = 1
    with pytest.raises(AttributeError, match="parameters are read-only"):
        p.new = 1
    with pytest.raises(AttributeError, match="parameters are read-only"):
        del p.rate
    with pytest.raises(
        AttributeError, match=r"no parameter 'rat' for NF 'nf' \(known: expiry, rate\)"
    ):
        _ = p.rat
    with pytest.raises(KeyError):
        _ = p["rat"]
    assert p == {"rate": 5, "expiry": 2_000_000_000}
    q = pickle.loads(pickle.dumps(p))
    assert q == p and q.expiry == Duration("2s")
    assert Params() == {}
