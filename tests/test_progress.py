"""What a user meets first (issue 12 point 6): without a terminal, ``nfos run`` prints one line per
phase — reading, steering into the workers, processing, writing output, done — with its counts
and MB/s; on a terminal a live line shows the same (tests/test_cli.py runs are not terminals)."""

from __future__ import annotations

import json
import re

import pytest

from nfos.io.capture import write_pcapng
from nfos.io.gen import gen_caida
from nfos.runtime.progress import Phases, PlainPhases
from test_cli import FIREWALL, nfos_cmd, stderr_lines

LINE = re.compile(r"^nfos: (?P<label>[^:]+): (?P<n>[\d,]+) (?P<unit>packets|frames)"
                  r"(?:, (?P<mb>[\d,.]+) MB in [\d.]+ s \((?:[\d,.]+|-) MB/s\)(?P<tail>.*)| in [\d.]+ s)$")


@pytest.mark.parametrize("workers", [0, 2])
def test_one_line_per_phase_in_order_with_counts(tmp_path, workers):
    trace = gen_caida(2000, 200, reverse=0.5, seed=11)
    path = tmp_path / "t.pcapng"
    write_pcapng(path, trace.dev_names, trace.frames, trace.times_ns, trace.devs)
    r = nfos_cmd("run", FIREWALL, "--in", path, "--workers", workers, "--out", tmp_path / "out",
                 "--stats-json", tmp_path / "s.json")
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    lines = [m.groupdict() for m in map(LINE.match, stderr_lines(r))]
    assert None not in lines, stderr_lines(r)
    into = "the sequential worker" if workers == 0 else "2 workers"
    assert [line["label"] for line in lines] == [f"reading {path}", f"steering into {into}", "processing",
                                                 "writing output", "done"]
    counts = [int(line["n"].replace(",", "")) for line in lines]
    sent = sum(stats["packets_out"].values())
    assert counts == [len(trace), len(trace), len(trace), sent, len(trace)]
    assert lines[3]["unit"] == "frames" and str(tmp_path / "out" / "wan.pcap") in lines[3]["tail"]
    assert float(lines[1]["mb"]) == pytest.approx(sum(map(len, trace.frames)) / 1e6, abs=0.06)
    assert "packets_in" in r.stdout   # the summary table, as before


def test_quiet_prints_no_phase(tmp_path):
    trace = gen_caida(300, 30, seed=12)
    path = tmp_path / "t.pcapng"
    write_pcapng(path, trace.dev_names, trace.frames, trace.times_ns, trace.devs)
    r = nfos_cmd("run", FIREWALL, "--in", path, "--workers", 0, "-q")
    assert (r.returncode, stderr_lines(r), r.stdout) == (0, [], "")


def test_without_output_there_is_no_writing_phase(tmp_path):
    trace = gen_caida(300, 30, seed=13)
    path = tmp_path / "t.pcapng"
    write_pcapng(path, trace.dev_names, trace.frames, trace.times_ns, trace.devs)
    r = nfos_cmd("run", FIREWALL, "--in", path, "--workers", 0)
    labels = [line.split(":")[1].strip() for line in stderr_lines(r)]
    assert labels == [f"reading {path}", "steering into the sequential worker", "processing", "done"]


def test_phases_record_what_they_show(capsys):
    p = PlainPhases()
    p.start("steering", "steering into 1 worker", total=10, total_bytes=1000)
    p.update(5)
    assert p.current is not None and p.current.nbytes == 500
    p.finish(10)
    p.done(10)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("nfos: steering into 1 worker: 10 packets, 0.0 MB in ")
    assert err[1].startswith("nfos: done: 10 packets in ")
    silent = Phases()
    silent.start("reading", "reading x", None, 10)
    silent.finish(3)
    assert [(ph.name, ph.done, ph.nbytes) for ph in silent.finished] == [("reading", 3, 10)]
    assert capsys.readouterr().err == ""
