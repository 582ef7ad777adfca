"""A real ``tcpdump -s 96`` capture replayed (issue 12 point 5): tcpdump cuts every frame longer
than 96 bytes; ``nfos run`` processes them all (their headers are in the first 96 bytes), prints one
warning line with their number, and writes them out cut, as they came in.

Real tools: ``ip`` (namespaces, a veth pair), ``tcpdump -s 96 -w`` (the capture), ``python3 -m
http.server`` and ``curl`` (the traffic), ``nfos run`` (the replay)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from live.conftest import REPO, wait_until
from nfos.io.capture import read_capture


def test_a_tcpdump_snaplen_capture_replays_whole(lab, tmp_path):
    for tool in ("tcpdump", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install -y tcpdump curl)")
    a, b = lab.ns("A"), lab.ns("B")
    lab.veth(a, "h0", b, "h0")   # offloads off: whole frames, as a NIC's capture shows them
    lab.addr(a, "h0", "192.0.2.1/24")
    lab.addr(b, "h0", "192.0.2.2/24")
    (tmp_path / "page.bin").write_bytes(bytes(range(256)) * 400)
    lab.spawn(b, sys.executable, "-m", "http.server", "8080", "--bind", "192.0.2.2", "--directory", str(tmp_path),
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: lab.run(a, "curl", "-s", "-o", "/dev/null", "http://192.0.2.2:8080/",
                                      check=False).returncode == 0, timeout=10)
    cap = tmp_path / "cut.pcap"
    dump = lab.spawn(a, "tcpdump", "-i", "h0", "-n", "-U", "--immediate-mode", "-s", "96", "-w", str(cap),
                     "tcp port 8080",
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert "listening on" in dump.stderr.readline()
    r = lab.run(a, "curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "http://192.0.2.2:8080/page.bin")
    assert r.stdout == str(256 * 400)
    time.sleep(0.3)
    dump.send_signal(signal.SIGTERM)
    dump.wait(timeout=10)

    trace = read_capture(cap)
    assert trace.cut > 0 and all(len(f) <= 96 for f in trace.frames)
    out = tmp_path / "out"
    stats_path = tmp_path / "s.json"
    firewall = str(REPO / "examples" / "firewall.py")
    r = subprocess.run([sys.executable, "-m", "nfos", "run", firewall, "--in", str(cap), "--workers", "0",
                        "--out", str(out), "--stats-json", str(stats_path), "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("nfos: warning:")]
    assert len(warnings) == 1 and f"{trace.cut:,} frame(s) were cut" in warnings[0], r.stderr
    stats = json.loads(stats_path.read_text())
    assert (stats["packets_in"], stats["cut"], stats["malformed"]) == (len(trace), trace.cut, 0)
    # the pcap has everything on the first device (lan): each frame goes to wan, cut as it came
    sent = read_capture(out / "wan.pcap")
    assert sorted(zip(sent.frames, sent.wire_lens, strict=True)) == sorted(
        zip(trace.frames, (trace.wire_len(i) for i in range(len(trace))), strict=True))
