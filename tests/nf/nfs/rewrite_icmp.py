"""Test NF: rewrites ICMP fields and sends the packet out on ``wan``.

Parameter ``set`` lists ``field=value`` pairs (comma-separated): ``id`` (pkt.icmp.id), ``qsrc``,
``qdst`` (the quoted IPv4 addresses, ints), ``qsport``, ``qdport`` (the quoted ports), ``qid`` (the
quoted ICMP identifier), ``qinc`` (add 1 to the quoted source address and port: applied twice, it
would show).  A field the packet lacks is left alone.  With ``raise_udp`` a UDP packet makes the
handler raise (its batch is rolled back and re-run one packet at a time).
"""

import nfos

nf = nfos.NF("rewrite_icmp", devices=["lan", "wan"], params={"set": "", "raise_udp": False})


@nf.orphan
def rewrite(pkt):
    if nf.params.raise_udp and pkt.udp is not None:
        raise ValueError("a UDP packet")
    want = dict((k, int(v)) for k, v in (item.split("=") for item in nf.params.set.split(",") if item))
    icmp = pkt.icmp
    if icmp is not None:
        if "id" in want:
            icmp.id = want["id"]
        q = icmp.inner
        if q is not None:
            if "qsrc" in want:
                q.ip.src = want["qsrc"]
            if "qdst" in want:
                q.ip.dst = want["qdst"]
            if q.l4 is not None and "qsport" in want:
                q.l4.sport = want["qsport"]
            if q.l4 is not None and "qdport" in want:
                q.l4.dport = want["qdport"]
            if q.icmp is not None and "qid" in want:
                q.icmp.id = want["qid"]
            if "qinc" in want:
                q.ip.src += 1
                q.l4.sport += 1
    pkt.send("wan")
