"""Fuzz target: the capture readers (`read_capture` on pcap and pcapng bytes, mutated from the
seeds in tests/fuzz/seeds/): a damaged capture is one CaptureError line or a warning, never
another exception, and what it gives back stays within the file's size.  (The file's bytes
are served from memory: read_capture's `open` is replaced, opening files is most of the
time otherwise.)

    python tests/fuzz/fuzz_captures.py [libFuzzer flags] tests/fuzz/seeds
"""

import io
import sys

import atheris
from common import run

PATH = "fuzzed.pcapng"
current = [b""]


def fake_open(path, mode="r", *args, **kw):
    assert path == PATH and mode == "rb", (path, mode)
    return io.BytesIO(current[0])


@atheris.instrument_func
def one_input(data: bytes) -> None:
    from nfos.io import capture
    from nfos.io.capture import CaptureError, read_capture

    capture.open = fake_open   # type: ignore[attr-defined]
    current[0] = data
    try:
        trace = read_capture(PATH, default_devices=["lan", "wan"])
    except CaptureError as e:
        assert "\n" not in str(e) and str(e).startswith(PATH), str(e)
        return
    assert len(trace.frames) == len(trace.times_ns) == len(trace.devs)
    assert sum(map(len, trace.frames)) <= len(data) and len(trace.frames) <= len(data) // 12
    assert all(0 <= d < len(trace.dev_names) for d in trace.devs)
    assert all(0 <= t < 2**64 for t in trace.times_ns)
    assert all("\n" not in w for w in trace.warnings)


if __name__ == "__main__":
    run(one_input, sys.argv, instrument=("nfos.io.capture",))
