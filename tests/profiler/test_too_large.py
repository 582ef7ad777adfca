"""Issue 10.4: an oversized transaction is named by the handler that ran it, with its line and a
recipe that fits the cause — never the bucket-collision recipe of a Map."""

from __future__ import annotations

import textwrap

import jsonschema
import pytest

from frames import udp_frame
from nfos import _core
from nfos.io.capture import Trace
from nfos.profiler import analyze, schema, to_json
from nfos.runtime.replay import replay
from nfos.runtime.session import Session

SCANNER = """
import nfos

nf = nfos.NF("scanner", devices=["lan", "wan"])


@nf.init
def setup(p):
    nf.state.m = nfos.Map(nfos.u32, nfos.u32, 65536)
    nf.state.m[1] = 1


@nf.orphan
def scan_per_packet(pkt):
    if len(nf.state.m.items()) == 1:
        pkt.send("wan")


@nf.periodic(nfos.seconds(1))
def report():
    nf.emit(len(nf.state.m.items()).to_bytes(4, "big"), "wan")
"""
REPORT_LINE = SCANNER.lstrip("\n").splitlines().index("@nf.periodic(nfos.seconds(1))") + 1
ORPHAN_LINE = SCANNER.lstrip("\n").splitlines().index("@nf.orphan") + 1


def only_cause(p):
    assert len(p.causes) == 1, [(c.structure, c.ops, c.cause) for c in p.causes]
    return p.causes[0]


def profile_of(session: Session):
    stats = session.summarize(1.0, 0)
    p = session.profile_report(stats)
    jsonschema.validate(to_json(p), schema())
    return p


def test_a_periodic_handler_too_large_is_named_with_its_line(write_nf):
    # live mode: the control process runs periodic handlers as transactions, beside the workers
    s = Session(write_nf(SCANNER), workers=1, profile=True, sync=False, collect_output=False)
    try:
        s.init(start_time_ns=0)
        s.run_periodics(1_000_000_000)
        c = only_cause(profile_of(s))
        ctl = s.control_counters()
    finally:
        s.close()
    assert ctl is not None and (ctl["aborts"], ctl["irrevocable"]) == (1, 1)
    assert c.cause == (f"the transaction of @nf.periodic report (nf.py:{REPORT_LINE}) touched more objects than "
                       "one transaction holds; it ran irrevocably (workers paused meanwhile)")
    assert c.structure == "-" and c.parameter == ""
    assert "scan fewer" in c.recipe and "none needed if rare" in c.recipe
    assert "bucket" not in c.recipe.replace("buckets each period", "") and "--batch" not in c.recipe


def test_a_control_process_transaction_too_large_is_named_so(write_nf):
    s = Session(write_nf(SCANNER), workers=1, profile=True, collect_output=False)
    try:
        s.init(start_time_ns=0)
        assert s.run_in_tx(lambda: len(s.nf.state.m.items())) == 1
        c = only_cause(profile_of(s))
    finally:
        s.close()
    assert c.cause == ("a control-process transaction touched more objects than one transaction holds; "
                       "it ran irrevocably (workers paused meanwhile)")
    assert c.recipe.startswith("none needed if rare")


def test_a_packet_handler_too_large_keeps_the_batch_recipe(write_nf):
    path = write_nf(SCANNER.replace("@nf.periodic(nfos.seconds(1))", "@nf.periodic(nfos.seconds(100))"))
    frames = [udp_frame(src=f"10.5.{i}.1", dst="192.0.2.9", sport=9, dport=9) for i in range(40)]
    trace = Trace(["lan", "wan"], frames, [i * 1000 for i in range(40)], [0] * 40)
    r = replay(path, trace, workers=2, profile=True, keep_output=True)
    assert sorted(r.outputs["wan"]) == sorted(frames)
    c = only_cause(r.profile)
    assert c.cause.startswith(f"the transaction of a batch (@nf.orphan scan_per_packet (nf.py:{ORPHAN_LINE})) "
                              "outgrew its descriptor")
    assert c.recipe == "use a smaller --batch, or touch fewer structure elements per packet"
    assert c.parameter == "batch"
    assert r.stats["irrevocable"] == 40   # each packet, alone, after its split


@pytest.mark.parametrize("handler,index,words", [
    ("exit", 0, "the transaction of @nf.exit bye (nf.py:"),
    ("periodic", 1, "the transaction of @nf.periodic second (nf.py:"),
    ("expired", 0, "the transaction of a batch (@nf.expired gone (nf.py:"),
])
def test_forced_records_name_every_handler(write_nf, handler, index, words):
    src = textwrap.dedent("""
    import nfos

    nf = nfos.NF("named", devices=["lan", "wan"])

    @nf.periodic(nfos.seconds(1))
    def first():
        pass

    @nf.periodic(nfos.seconds(2))
    def second():
        pass

    @nf.expired
    def gone(state):
        pass

    @nf.exit
    def bye():
        pass
    """)
    s = Session(write_nf(src), workers=1, collect_output=False)
    try:
        s.init()
        handlers = s.handler_functions()
    finally:
        s.close()
    # (cause, struct, element, own op, other op, other slot, own site, other site, handler, index, details)
    rec = ("too_large", 0, 0, "get", "none", -1, 0, 0, handler, index, 0, 0)
    assert [h for h, _doc in _core.HANDLERS] == ["packet", "new_packet_set", "expired", "orphan", "malformed",
                                                  "periodic", "exit", "init", "transact"]
    stats = {"nf": "named", "workers": 1, "transactions": 2, "commits": 1, "aborts": 1, "abort_rate": 0.5,
             "imbalance": 1.0, "per_worker": [{"packets": 0, "transactions": 2, "aborts": 1}]}
    p = analyze(stats, [rec], 0, {}, "nf.py", {}, handlers=handlers)
    c = only_cause(p)
    assert words in c.cause
    assert ("--batch" in c.recipe) == (handler == "expired")
