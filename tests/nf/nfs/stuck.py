"""Test NF: forwards every frame, but a frame longer than 100 bytes sends its handler into an
endless loop (the watchdog's case)."""

import nfos

nf = nfos.NF("stuck", devices=["lan", "wan"])


@nf.orphan
def forward(pkt):
    if pkt.len > 100:
        spin()
    pkt.send("wan" if pkt.dev == "lan" else "lan")


def spin():
    n = 0
    while n >= 0:
        n += 1
