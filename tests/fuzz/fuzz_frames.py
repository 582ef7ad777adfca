"""Fuzz target: the frame parser, the packet-set key extraction and the software RSS
(`_core.probe(frame, dev, None)` under fuzz_nf.py's definition).

Checked beyond "no crash, no sanitizer report": the frame is not changed; a frame in a
packet set has the definition's key; and its reply (MACs, addresses and ports swapped)
arriving on the other device has the same key and goes to the same worker — the property
that puts both directions of a session on one worker.

    python tests/fuzz/fuzz_frames.py [libFuzzer flags: -atheris_runs=N -rss_limit_mb=M ...]
"""

import sys

import atheris

with atheris.instrument_imports(include=["common"]):   # coverage of the frame builder guides the mutations
    from common import DEVICES, gen_frame, load_session, run

PF_TCP, PF_UDP, PF_MALFORMED = 4, 8, 64
KEY_LEN = 6 + 6 + 4 + 4 + 2 + 2 + 1   # fuzz_nf.py's fields


def swapped(frame: bytes, l3: int, l4: int) -> bytes:
    f = bytearray(frame)
    f[0:6], f[6:12] = frame[6:12], frame[0:6]
    f[l3 + 12:l3 + 16], f[l3 + 16:l3 + 20] = frame[l3 + 16:l3 + 20], frame[l3 + 12:l3 + 16]
    f[l4:l4 + 2], f[l4 + 2:l4 + 4] = frame[l4 + 2:l4 + 4], frame[l4:l4 + 2]
    return bytes(f)


@atheris.instrument_func
def one_input(data: bytes) -> None:
    from nfos import _core

    fdp = atheris.FuzzedDataProvider(data)
    dev = fdp.ConsumeIntInRange(0, len(DEVICES) - 1)
    frame = gen_frame(fdp)
    _, after, out, flags, in_set, key, worker, (l3, l4, _payload) = _core.probe(frame, dev, None)
    assert after == frame and out == -1 and 0 <= worker < 2
    assert _core.steer_frame(frame, dev) == (worker, in_set, _core.steer_frame(frame, dev)[2])
    if not in_set:
        return
    assert dev in (0, 1) and not flags & PF_MALFORMED and len(key) in (KEY_LEN, KEY_LEN + 1), (dev, flags, key)
    if flags & (PF_TCP | PF_UDP):
        reply = swapped(frame, l3, l4)
        _, _, _, rflags, rset, rkey, rworker, _ = _core.probe(reply, 1 - dev, None)
        assert (rset, rkey, rworker) == (1, key, worker), (frame.hex(), key.hex(), rkey.hex())


if __name__ == "__main__":
    session = load_session()
    run(one_input, sys.argv)
