"""Expiry with workers is the sequential run's (found by tests/conformance/test_random_nfs.py):

- the trace's last packet moves every worker's clock, not only its own worker's: a set on
  another worker that expired by then is swept (and its @nf.expired runs) as in the
  sequential run, where one clock reaches the last packet's time (the end tick);
- a periodic handler due at T sees every set expired by T swept, also on a worker whose
  progress had already reached T at the barrier before (it waits for each worker to have
  swept to T, not for its progress).
"""

import struct

import pytest

from nfos.io.capture import Trace
from nfos.io.gen import checksum16
from nfos.runtime.replay import replay

EXPIRING = """
import nfos

nf = nfos.NF("expiring", devices=["a", "b", "dump"])


class S(nfos.Record):
    key: nfos.u64


@nf.init
def setup(p):
    nf.packet_sets(nfos.on("a", ipv4=("src", "dst")), nfos.on("b", ipv4=("src", "dst")),
                   protocols=("tcp", "udp"), state=S, expiry=nfos.millis(40))


@nf.new_packet_set
def new(pkt):
    nf.register(pkt).key = pkt.ip.src * 2**32 + pkt.ip.dst


@nf.expired
def gone(s):
    nf.emit(b"\\x02" * 12 + b"\\x88\\xb5" + repr(("expired", s.key, nfos.now())).encode(), "dump")
"""

REPORTING = """
import nfos

nf = nfos.NF("reporting", devices=["a", "b", "dump"])


class S(nfos.Record):
    born: nfos.u64


@nf.init
def setup(p):
    nf.packet_sets(nfos.on("a", ipv4=("dst",)), protocols=("tcp", "udp"), state=S, expiry=nfos.millis(40))
    nf.state.expired = nfos.Vector(nfos.i64, 1)


@nf.new_packet_set
def new(pkt):
    nf.register(pkt).born = nfos.now()


@nf.expired
def gone(s):
    nf.state.expired[0] += 1


@nf.periodic(nfos.millis(5))
def report():
    nf.emit(b"\\x02" * 12 + b"\\x88\\xb5" + repr((nfos.now(), nf.state.expired[0])).encode(), "dump")


@nf.periodic(nfos.millis(7))
def other():
    pass
"""


def tcp(src_last: int, dst_last: int) -> bytes:
    l4 = struct.pack("!HHIIBBHHH", 1000, 2000, 1, 0, 0x50, 0x18, 512, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes([10, 0, 0, src_last]),
                     bytes([10, 1, 0, dst_last]))
    ip = ip[:10] + struct.pack("!H", checksum16(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + l4


def dump(nf: str, trace: Trace, workers: int) -> list[bytes]:
    return replay(nf, trace, workers=workers, batch=12, keep_output=True).outputs.get("dump", [])


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_the_last_packet_moves_every_workers_clock(write_nf, workers):
    nf = write_nf(EXPIRING)
    # the set of the first packet expires 40 ms later, just before the last packet (on another worker)
    trace = Trace(["a", "b"], [tcp(1, 10), tcp(0, 2), tcp(0, 1)], [2842170000, 2845170000, 2885200000], [0, 1, 1], [])
    seq = dump(nf, trace, 0)
    assert len(seq) == 2   # two sets expired by the last packet's time, the third one not
    assert sorted(dump(nf, trace, workers)) == sorted(seq)


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_a_periodic_handler_sees_every_set_expired_by_its_time(write_nf, workers):
    nf = write_nf(REPORTING)
    t0 = 1_000_000_000   # the set born at +166.56 ms expires at +206.56 ms: a 5 ms report is due then
    trace = Trace(["a", "b"], [tcp(1, 26), tcp(1, 0), tcp(1, 24)],
                  [t0 + 36_560_000, t0 + 166_560_000, t0 + 226_570_000], [1, 0, 1], [])
    seq = dump(nf, trace, 0)
    assert b"(1206560000, 1)" in [f[14:] for f in seq]
    assert dump(nf, trace, workers) == seq   # one worker emits the reports, in time order
