"""Frames that carry one Map operation each, and their replies."""

import struct

OPCODES = {"set": 1, "get": 2, "delete": 3}


def op_frame(op: str, key: int, value: int) -> bytes:
    # the source IP varies with the key so ops spread over the workers
    src = bytes([10, 1, key // 256, key % 256])
    payload = struct.pack("!BIq", OPCODES[op], key, value)
    udp = struct.pack("!HHHH", 5000, 6000, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, bytes([10, 2, 0, 1]))
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + udp


def parse_reply(out):
    """None (no reply), 'missing', a value, or a bool for delete."""
    if not out:
        return None
    assert len(out) == 1
    dev, frame = out[0]
    kind, value = struct.unpack("!Bq", frame[-9:])
    return {0: "missing", 1: value, 2: False, 3: True}[kind]
