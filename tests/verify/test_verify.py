"""Serializability checked (issue 13, point 4): `nfos run --record-commits FILE` records every
committed transaction; `nfos verify FILE` re-executes them sequentially in the recorded order and
compares the output and every structure's final state with the run's.  A tampered record (two
transactions swapped where the order matters) is a violation."""

import os

import pytest

from conftest import EXAMPLES
from nfos import _core
from nfos.io.capture import write_pcapng
from nfos.io.gen import gen_caida
from nfos.runtime.replay import replay
from nfos.runtime.session import Session
from nfos.runtime.verify import (
    COMMIT_REC,
    HANDLER_NAMES,
    read_record,
    serial_order,
    verify,
    write_record,
)
from test_cli import nfos_cmd

FIREWALL = str(EXAMPLES / "firewall.py")
CONTENDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "contended_nf.py")


@pytest.fixture(scope="module")
def trace():
    return gen_caida(4000, 300, reverse=0.5, seed=3)


def rewrite(src, dst, edit):
    header, recs, end = read_record(src)
    recs = edit(recs) or recs
    write_record(dst, {k: v for k, v in header.items() if k not in ("format", "version")}, recs,
                 {k: v for k, v in end.items() if k != "end"})


def test_the_record_layout_is_the_c_one():
    assert COMMIT_REC.size == _core.COMMIT_REC_SIZE == 160   # CommitRec in worker_loop.h
    assert HANDLER_NAMES[:3] == ["packet", "new_packet_set", "expired"]


def test_firewall_with_two_workers_recorded_and_verified_by_the_cli(tmp_path, trace):
    pcap = tmp_path / "in.pcapng"
    write_pcapng(pcap, ["lan", "wan"], trace.frames, trace.times_ns, list(trace.devs))
    rec = tmp_path / "fw.commits"
    r = nfos_cmd("run", FIREWALL, "--in", pcap, "-w", 2, "-q", "--param", "expiry=2ms", "--record-commits", rec)
    assert r.returncode == 0, r.stderr
    header, recs, end = read_record(rec)
    assert header["workers"] == 2 and header["trace"] == [str(pcap)] and header["params"] == ["expiry=2ms"]
    assert {x["k"] for x in recs} == {0, 1}
    assert {x["h"] for x in recs} >= {"packet", "expired"}   # sweeps are transactions too
    assert sum(len(x["x"]) for x in recs if x["h"] == "packet") == len(trace)   # every packet once
    assert sum(map(len, end["outputs"].values())) > 0
    v = nfos_cmd("verify", rec)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "OK" in v.stdout
    # swapped: the first packet transaction of worker 0 after the last one (a session's first
    # packets after its later ones: its output and state differ)
    bad = tmp_path / "bad.commits"

    def late_first(recs):
        w0 = [x for x in serial_order(recs) if x["k"] == 0 and x["h"] == "packet"]
        for field in ("o", "w", "s"):   # (the firewall writes no shared state: its order is (rv, seq))
            w0[0][field], w0[-1][field] = w0[-1][field], w0[0][field]

    rewrite(rec, bad, late_first)
    v = nfos_cmd("verify", bad)
    assert v.returncode == 1, v.stdout + v.stderr
    assert v.stdout.count("violation: ") >= 1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_contended_nf_with_forced_aborts_is_serializable(tmp_path, trace, workers):
    """Every packet updates one shared chain (all conflict), one session in 5 is aborted 9 times
    per packet (retries, splits, irrevocable runs), sets expire, a periodic handler runs."""
    rec = str(tmp_path / "c.commits")
    r = replay(CONTENDED, trace, workers=workers, params=["force=5"], record_commits=rec)
    if workers:
        assert r.stats["aborts"] > 0 and r.stats["irrevocable"] > 0
    header, recs, end = read_record(rec)
    kinds = {x["h"] for x in recs}
    assert kinds >= {"packet", "expired", "periodic"}
    assert end["lost"] == 0
    assert verify(rec, lambda devices, header: trace) == []


def test_a_tampered_record_is_a_violation(tmp_path, trace):
    rec = str(tmp_path / "c.commits")
    replay(CONTENDED, trace, workers=2, record_commits=rec)

    def swap(recs):   # two writers of different workers next to each other in the serial order
        order = [x for x in serial_order(recs) if x["w"] and x["h"] == "packet"]
        a, b = next((a, b) for a, b in zip(order, order[1:], strict=False) if a["k"] != b["k"])
        a["o"], b["o"] = b["o"], a["o"]

    bad = str(tmp_path / "bad.commits")
    rewrite(rec, bad, swap)
    problems = verify(bad, lambda devices, header: trace)
    assert any("final state of Vector 'chain' differs" in p for p in problems), problems
    assert any(p.startswith("output on ") for p in problems)   # the TTLs carry the chain

    def truncated(recs):
        return recs[:-1]

    rewrite(rec, bad, truncated)
    assert verify(bad, lambda devices, header: trace) != []


def test_a_record_that_did_not_fit_is_reported(tmp_path, trace):
    rec = str(tmp_path / "c.commits")
    replay(FIREWALL, trace, workers=2, record_commits=rec)
    header, recs, end = read_record(rec)
    write_record(rec, {k: v for k, v in header.items() if k not in ("format", "version")}, recs,
                 dict({k: v for k, v in end.items() if k != "end"}, lost=3))
    assert verify(rec, lambda devices, header: trace)[0].startswith("the record is incomplete")


def test_recording_is_off_by_default():
    s = Session(FIREWALL, 2)
    try:
        s.init()
        assert _core.commit_records(0) is None
        _core.record_commits(16)
        assert _core.commit_records(0) == (b"", 0)
    finally:
        s.close()


def test_record_commits_is_for_replays():
    r = nfos_cmd("run", FIREWALL, "--iface", "lan=lo", "--record-commits", "x")
    assert r.returncode != 0 and "--record-commits is for replays" in r.stderr


def test_each_workers_output_order_is_compared(tmp_path, trace):
    """Output of one worker leaves in its commit order: the re-execution must send it in that
    order too (a record whose worker 1 sent its frames in reverse is a violation)."""
    rec = str(tmp_path / "c.commits")
    replay(FIREWALL, trace, workers=2, record_commits=rec)
    header, recs, end = read_record(rec)
    assert set(end["slot_outputs"]) == {"0", "1"}
    assert verify(rec, lambda devices, header: trace) == []
    end["slot_outputs"]["1"]["wan"].reverse()
    write_record(rec, {k: v for k, v in header.items() if k not in ("format", "version")}, recs,
                 {k: v for k, v in end.items() if k != "end"})
    problems = verify(rec, lambda devices, header: trace)
    assert problems == ["output of slot 1 on wan: the same frames in another order (first difference at its "
                        "frame 0)"]
