"""Test NF: rewrites header fields and sends the packet out on ``wan``.

Parameter ``fields`` names what to set (comma-separated, default all):
eth_src, ip_src, ip_dst, ttl, tos, sport, dport, flags.  The new values are
the module constants below; a field the packet lacks is left alone.
"""

import nfos

nf = nfos.NF("rewrite", devices=["lan", "wan"],
             params={"fields": nfos.param(str, "eth_src,ip_src,ip_dst,ttl,tos,sport,dport,flags",
                                          "fields to rewrite")})

NEW_ETH_SRC = 0x02AABBCCDDEE
NEW_IP_SRC = 0xC6336401      # 198.51.100.1
NEW_IP_DST = 0xCB00710A      # 203.0.113.10
NEW_TOS = 0xB8
NEW_SPORT = 1111
NEW_DPORT = 2222
NEW_FLAGS = 0x12              # SYN|ACK


@nf.orphan
def rewrite(pkt):
    want = nf.params.fields.split(",")
    if "eth_src" in want:
        pkt.eth.src = NEW_ETH_SRC
    ip = pkt.ip
    if ip is not None:
        if "ip_src" in want:
            ip.src = NEW_IP_SRC
        if "ip_dst" in want:
            ip.dst = NEW_IP_DST
        if "ttl" in want:
            ip.ttl = ip.ttl - 1
        if "tos" in want:
            ip.tos = NEW_TOS
    l4 = pkt.l4
    if l4 is not None:
        if "sport" in want:
            l4.sport = NEW_SPORT
        if "dport" in want:
            l4.dport = NEW_DPORT
    if pkt.tcp is not None and "flags" in want:
        pkt.tcp.flags = NEW_FLAGS
    pkt.send("wan")
