"""Test NF: shows what a packet (and a header view) kept past its handler does.

The handler raises ``Kept(pkt, pkt.ip)``.  The runtime logs the error after the
handler has returned, and formatting the exception uses the kept objects, so the
log line says what using them did; nothing is stored in the NF.
"""

import nfos

nf = nfos.NF("stale", devices=["lan", "wan"])


def attempt(fn):
    try:
        return f"ok {fn()!r}"
    except RuntimeError as e:
        return f"RuntimeError({e})"


class Kept(Exception):
    def __str__(self):
        pkt, ip = self.args
        return (f"pkt.len -> {attempt(lambda: pkt.len)}; ip.src -> {attempt(lambda: ip.src)}; "
                f"pkt.send -> {attempt(lambda: pkt.send('wan'))}; repr -> {pkt!r}")


@nf.orphan
def keep(pkt):
    assert pkt.len == 60 and pkt.ip.src == 0x0A000001   # valid while the handler runs
    raise Kept(pkt, pkt.ip)
