"""No hang ignores a stop, and no process waits on itself (issue 13).

- A process that is both producer and consumer of a TX ring (the sequential
  mode; the control process's slot, where exit handlers publish) spills what
  does not fit instead of waiting on itself: 8,000 frames of 1 kB out of one
  batch, or 10 MiB out of an exit handler, all reach the pcap.
- Ctrl-C / SIGTERM during a sequential run stop it within a second or two: the
  batch being processed is rolled back (neither dropped nor a handler error),
  the summary says what was processed and what was not.
- Every long C loop looks for a stop request: the paced feeder, the trace
  loader, a wait for room in a worker's RX ring.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import frames as F
from conftest import nf_path
from nfos.io import PcapWriter, read_capture

BURST = nf_path("burst.py")
SLOW = nf_path("slow.py")
STUCK = nf_path("stuck.py")
INTERRUPTED = "nfos: error: interrupted; workers stopped, nothing left behind\n"


def write_trace(path, n, long_at=None):
    """n UDP frames from 64 hosts, 1 us apart; frame `long_at` has a 200-byte payload."""
    with PcapWriter(path) as w:
        for i in range(n):
            payload = b"x" * 200 if i == long_at else b""
            w.write(F.udp_frame(f"10.0.{i % 64}.1", "192.0.2.1", 1000 + i % 64, 53, payload),
                    1_000_000_000 + 1000 * i)
    return str(path)


def nfos_run(*args, timeout=120):
    env = dict(os.environ, COLUMNS="1000")
    return subprocess.run([sys.executable, "-m", "nfos", "run", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def start(*args):
    env = dict(os.environ, COLUMNS="1000")
    return subprocess.Popen([sys.executable, "-m", "nfos", "run", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --------------------------------------------------------------- TX overflow
def test_8000_frames_of_1kb_from_one_batch_sequential(tmp_path):
    """8,000 x 1 kB (more than the TX ring's 8 MiB) out of one transaction of the sequential
    mode, which is also the ring's consumer: it hung before (733 s); now every frame is there."""
    trace = write_trace(tmp_path / "t.pcap", 40, long_at=0)
    t0 = time.monotonic()
    r = nfos_run(BURST, "--in", trace, "--workers", "0", "--out", tmp_path / "out", "-q", timeout=120)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 60
    wan = read_capture(tmp_path / "out" / "wan.pcap").frames
    assert len(wan) == 8000 + 40
    # at commit: the batch's 32 packets, then what its handlers emitted; then the last 8 packets
    assert [i for i, f in enumerate(wan) if f == bytes(range(256)) * 4] == list(range(32, 8032))
    assert len(wan[0]) > 200


@pytest.mark.parametrize("workers", [0, 2])
def test_exit_handler_emitting_10_mib(tmp_path, workers):
    """The exit handler publishes in the control process's own slot (sequential: slot 0),
    drained by the same process: 10 MiB of output hung in both modes before."""
    trace = write_trace(tmp_path / "t.pcap", 100)
    t0 = time.monotonic()
    r = nfos_run(BURST, "--in", trace, "--workers", workers, "--out", tmp_path / "out", "-q",
                 "--param", "exit_kib=10240", "--stats-json", tmp_path / "s.json", timeout=120)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 60
    lan = read_capture(tmp_path / "out" / "lan.pcap").frames
    assert len(lan) == 10240 and set(lan) == {bytes(range(256)) * 4}
    assert len(read_capture(tmp_path / "out" / "wan.pcap").frames) == 100
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["packets_out"] == {"lan": 10240, "wan": 100}


def test_spilled_output_keeps_its_order():
    """Sequential, one transaction per packet: the first one's burst overflows the ring, the
    next two transactions' output follows it (into the spill), drained in commit order."""
    from nfos.io.capture import Trace
    from nfos.runtime.replay import replay

    big = F.udp_frame(payload=b"x" * 200)
    frames = [big, F.udp_frame(sport=1), F.udp_frame(sport=2)]
    r = replay(BURST, Trace(["lan", "wan"], frames, [1000, 2000, 3000], [0, 0, 0]), workers=0, batch=1,
               params={"frames": "9000"}, keep_output=True)
    wan = r.outputs["wan"]
    assert len(wan) == 9003
    assert wan[0] == big and set(wan[1:9001]) == {bytes(range(256)) * 4} and wan[9001:] == frames[1:]


# ------------------------------------------------------------ Ctrl-C, SIGTERM
@pytest.mark.parametrize("batch", [32, 1])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_a_sequential_run(tmp_path, sig, batch):
    """--workers 0: the signal used to become a handler error of the current packet and the run
    went on (5 of 5 ignored; with --batch 1 a valid packet was dropped as a KeyboardInterrupt)."""
    n = 4000   # 5 ms each: 20 s of work
    trace = write_trace(tmp_path / "t.pcap", n)
    stats_path = tmp_path / "s.json"
    p = start(SLOW, "--in", trace, "--workers", "0", "--param", "delay=5ms", "--batch", batch,
              "--out", tmp_path / "out", "--stats-json", stats_path, "-q")
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "out" / "wan.pcap").exists():   # the output opens just before processing
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.5)
        p.send_signal(sig)
        t0 = time.monotonic()
        out, err = p.communicate(timeout=10)
        assert time.monotonic() - t0 < 2.0
        assert (p.returncode, err, out) == (2, INTERRUPTED, "")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    stats = json.loads(stats_path.read_text())
    assert stats["interrupted"] is True and stats["stopped_by"] == sig.name
    assert stats["handler_errors"] == 0 and stats["dropped"] == 0
    assert 0 < stats["packets_in"] < n
    assert stats["packets_in"] + stats["unprocessed"] == n
    assert stats["packets_out"]["wan"] == stats["packets_in"]
    if batch == 1:
        assert stats["commits"] == stats["packets_in"]   # the interrupted attempt is not counted
    assert len(read_capture(tmp_path / "out" / "wan.pcap").frames) == stats["packets_in"]


def test_keyboard_interrupt_raised_by_a_handler_rolls_back_its_batch(write_nf):
    """A KeyboardInterrupt (or SystemExit) out of a handler is a stop, not a handler error: the
    transaction is rolled back (the packet neither dropped nor counted) and the run ends."""
    from nfos.io.capture import Trace
    from nfos.runtime.replay import Interrupted, replay

    path = write_nf("""
        import nfos
        nf = nfos.NF("ki", devices=["lan", "wan"])
        @nf.orphan
        def forward(pkt):
            if pkt.ip.id == 77:
                raise KeyboardInterrupt
            pkt.send("wan")
    """)
    frames = [F.udp_frame(sport=i, ident=i) for i in range(200)]
    trace = Trace(["lan", "wan"], frames, [1000 * i for i in range(200)], [0] * 200)
    for batch, done in ((32, 64), (1, 77)):
        with pytest.raises(Interrupted) as e:
            replay(path, trace, workers=0, batch=batch, keep_output=True)
        s = e.value.stats
        assert (s["packets_in"], s["unprocessed"], s["handler_errors"], s["dropped"]) == (done, 200 - done, 0, 0)
        assert s["packets_out"]["wan"] == done and s["aborts"] == 0


# ------------------------------------------------------------ long C loops
def interrupt_after(seconds: float) -> subprocess.Popen:
    """SIGINT to this process in `seconds`, from another process (a thread of this one could not
    run while a C loop holds the GIL)."""
    return subprocess.Popen(["sh", "-c", f"sleep {seconds}; kill -INT {os.getpid()}"])


def test_paced_feeder_stops_on_ctrl_c():
    from nfos.runtime.session import Session

    s = Session(nf_path("slow.py"), 1, ["delay=0"], collect_output=False)
    try:
        s.init()
        s.open_rings(1 << 12, 64)
        s.load_pool([F.udp_frame()] * 16, [0] * 16)
        s.start()
        timer = interrupt_after(0.3)
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            s.feed_paced(1000.0, 60.0)
        assert time.monotonic() - t0 < 1.5
        timer.wait()
    finally:
        s.close()


def test_trace_loader_stops_on_ctrl_c():
    from nfos.runtime.session import Session

    n = 8_000_000   # about a second to load
    frames, times, devs = [F.udp_frame()] * n, [0] * n, [0] * n
    s = Session(nf_path("slow.py"), 0, ["delay=0"], collect_output=False)
    try:
        s.init()
        timer = interrupt_after(0.3)
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            s.load_trace(frames, times, devs)
        assert time.monotonic() - t0 < 1.5
        timer.wait()
    finally:
        s.close()


def test_waiting_for_room_in_a_stuck_workers_ring_stops_on_ctrl_c():
    """The control process waits for room in a worker's RX ring; the worker is stuck in a
    handler: Ctrl-C ends the wait, and closing the session kills the stuck worker."""
    from nfos.runtime.session import Session

    s = Session(STUCK, 1, collect_output=False)
    try:
        s.init()
        s.open_rings(8, 64)
        s.start()
        s.inject(F.udp_frame(payload=b"x" * 200), 0, 1)   # the worker is stuck on this one
        timer = interrupt_after(0.3)
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            for i in range(100):
                s.inject(F.udp_frame(sport=i), 0, 2 + i)
        assert time.monotonic() - t0 < 1.5
        timer.wait()
    finally:
        t0 = time.monotonic()
        s.close()
        assert time.monotonic() - t0 < 2.0


def test_sequential_mode_never_waits_on_its_own_rx_ring():
    from nfos.runtime.session import Session

    s = Session(SLOW, 0, ["delay=0"], collect_output=False)
    try:
        s.init()
        s.open_rings(4, 64)
        s.start()
        with pytest.raises(RuntimeError, match="its consumer is this process"):
            for i in range(100):
                s.inject(F.udp_frame(sport=i), 0, 1 + i)
    finally:
        s.close()
