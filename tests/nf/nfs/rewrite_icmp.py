"""Test NF: rewrites ICMP fields and sends the packet out on ``wan``.

Parameter ``set`` lists ``field=value`` pairs (comma-separated): ``id`` (pkt.icmp.id), ``qsrc``,
``qdst`` (the quoted IPv4 addresses, ints), ``qsport``, ``qdport`` (the quoted ports), ``qid`` (the
quoted ICMP identifier).  A field the packet lacks is left alone.
"""

import nfos

nf = nfos.NF("rewrite_icmp", devices=["lan", "wan"], params={"set": ""})


@nf.orphan
def rewrite(pkt):
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
    pkt.send("wan")
