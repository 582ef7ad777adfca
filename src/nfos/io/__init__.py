"""Trace input/output: pcap/pcapng reading and writing, synthetic trace generators."""

from nfos.io.capture import (
    CaptureError,
    PcapWriter,
    Trace,
    open_capture_writer,
    read_capture,
    read_captures,
    write_pcapng,
)
from nfos.io.gen import checksum16, gen_antiddos, gen_caida

__all__ = [
    "CaptureError",
    "PcapWriter",
    "Trace",
    "checksum16",
    "gen_antiddos",
    "gen_caida",
    "open_capture_writer",
    "read_capture",
    "read_captures",
    "write_pcapng",
]
