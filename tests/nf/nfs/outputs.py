"""Test NF: output decisions.  Devices lan, wan, dmz.

The first payload byte of a UDP packet selects the action (a UDP packet's
payload is the script): each byte in order is one call,
``s`` send(wan), ``l`` send(lan), ``d`` send(dmz), ``f`` flood(), ``x`` drop(),
``e`` nf.emit(b"emitted:" + frame, "wan"), ``a`` nf.emit(frame, None) (all devices),
``i`` send(2) (by index), ``?`` send("nowhere") (an unknown device: raises).
Other packets (not UDP) are flooded.
"""

import nfos

nf = nfos.NF("outputs", devices=["lan", "wan", "dmz"])


@nf.orphan
def act(pkt):
    if pkt.udp is None:
        pkt.flood()
        return
    for c in pkt.payload.rstrip(b"\0").decode():
        if c == "s":
            pkt.send("wan")
        elif c == "l":
            pkt.send("lan")
        elif c == "d":
            pkt.send("dmz")
        elif c == "f":
            pkt.flood()
        elif c == "x":
            pkt.drop()
        elif c == "e":
            nf.emit(b"emitted:" + pkt.frame, "wan")
        elif c == "a":
            nf.emit(pkt.frame, None)
        elif c == "i":
            pkt.send(2)
        elif c == "?":
            pkt.send("nowhere")
