"""Test NF: forwards every packet lan <-> wan after busy-waiting ``delay`` per packet.

It keeps a run going long enough to interrupt or kill it, whatever the machine's
speed (the wait is measured on the wall clock; it does not sleep).
"""

import time

import nfos

nf = nfos.NF("slow", devices=["lan", "wan"],
             params={"delay": nfos.param(nfos.Duration, nfos.millis(1), "busy wait per packet")})


@nf.orphan
def forward(pkt):
    end = time.perf_counter_ns() + nf.params.delay
    while time.perf_counter_ns() < end:
        pass
    pkt.send("wan" if pkt.dev == "lan" else "lan")
