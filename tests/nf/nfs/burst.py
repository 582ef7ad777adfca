"""Test NF: the first frame longer than 100 bytes makes its handler emit ``frames`` frames of
1 kB on wan (one batch, one transaction); the exit handler emits ``exit_kib`` KiB on lan.
Every frame is also forwarded lan -> wan."""

import nfos

nf = nfos.NF("burst", devices=["lan", "wan"],
             params={"frames": nfos.param(int, 8000, "1 kB frames emitted by the first long frame"),
                     "exit_kib": nfos.param(int, 0, "KiB of 1 kB frames the exit handler emits")})

FRAME = bytes(range(256)) * 4   # 1 kB


@nf.orphan
def burst(pkt):
    if pkt.len > 100:
        for _ in range(nf.params.frames):
            nf.emit(FRAME, "wan")
    pkt.send("wan")


@nf.exit
def flood():
    for _ in range(nf.params.exit_kib):
        nf.emit(FRAME, "lan")
