"""Write the capture fuzzer's seeds (tests/fuzz/seeds/): small pcap and pcapng files with the
features the readers handle — both pcap byte orders and resolutions, pcapng with two
interfaces, if_tsresol / if_tsoffset options, enhanced, simple and obsolete packet blocks.

    python tests/fuzz/make_seeds.py
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # tests/: frames.py

import frames as F  # noqa: E402

FRAMES = [F.udp_frame(), F.tcp_frame(vlan=7) if hasattr(F, "tcp_frame") else F.udp_frame(vlan=7),
          F.udp_frame(ip_options=b"\x01\x01\x01\x00", payload=b"hello")]


def pcap(order: str, nano: bool) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, 1)
    for i, f in enumerate(FRAMES):
        out += struct.pack(order + "IIII", 1_700_000_000 + i, 1000 * i, len(f), len(f)) + f
    return out


def block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def pcapng() -> bytes:
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 0) + option(2, b"lan") + option(9, b"\x09") + option(0, b""))
    out += block(1, struct.pack("<HHI", 1, 0, 65535) + option(2, b"wan") + option(9, b"\x09")
                 + option(14, struct.pack("<q", 10))
                 + option(0, b""))
    t = 1_700_000_000 * 10**9
    for i, f in enumerate(FRAMES):
        ts = t + i * 1000
        out += block(6, struct.pack("<IIIII", i % 2, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f)
    out += block(3, struct.pack("<I", len(FRAMES[0])) + FRAMES[0])
    out += block(2, struct.pack("<HHIIII", 1, 0, 0, 5, len(FRAMES[1]), len(FRAMES[1])) + FRAMES[1])
    return out


if __name__ == "__main__":
    seeds = os.path.join(HERE, "seeds")
    os.makedirs(seeds, exist_ok=True)
    files = {"le-usec.pcap": pcap("<", False), "be-nsec.pcap": pcap(">", True), "two-ifaces.pcapng": pcapng()}
    for name, data in files.items():
        with open(os.path.join(seeds, name), "wb") as f:
            f.write(data)
    print(f"{len(files)} seeds in {seeds}")
