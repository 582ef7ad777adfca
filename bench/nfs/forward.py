"""Empty NF for the runtime benchmark: every packet is sent out of the other device.

No packet sets and no state: it measures the runtime's own per-packet cost
(ring, parse, transaction per batch, one Python handler call, output).
"""

import nfos

nf = nfos.NF("forward", devices=["lan", "wan"])


@nf.orphan
def forward(pkt):
    pkt.send("wan" if pkt.dev == "lan" else "lan")
