"""Endpoint-independent NAT (NAPT) for TCP, UDP and ICMP echo, with the ICMP errors of its
mappings translated back (the NFOS paper's "nat", Table 6, grown to RFC 5508), and the IP router
around it when it runs on real links (``lan_ip``).

Contract
--------
Devices ``lan`` (inside) and ``wan`` (outside).  Public addresses:
``public_ips`` (default 57) consecutive IPv4 addresses from ``public_base``
(default 198.51.100.1); each has ``ports_per_ip`` external ports (default
64512: 1024-65535; a smaller value only exists to test pool exhaustion).
An index ``i`` in ``0 .. public_ips * ports_per_ip - 1`` names the external
endpoint (public_base + i // ports_per_ip, 1024 + i % ports_per_ip); TCP,
UDP and ICMP echo have separate index spaces (an echo's identifier plays
the part of the port, RFC 5508 REQ-1).

* LAN->WAN TCP/UDP (outbound).  The mapping of the internal endpoint
  (source address, source port, protocol) is the same whatever the
  destination: Endpoint-Independent Mapping (RFC 4787 REQ-1; RFC 5382
  REQ-1 for TCP).  An endpoint without a live mapping gets the index the
  allocator hands out; an existing mapping is refreshed (outbound refresh,
  RFC 4787 REQ-6).  Distinct internal endpoints never share an external
  endpoint (no port overloading, RFC 4787 REQ-3).  The source address and
  port are rewritten to the external endpoint (IPv4 and TCP/UDP checksums
  updated, RFC 1624; a zero UDP checksum stays zero) and the frame goes to
  ``wan``; nothing else changes (MACs, TTL, payload).
* No index left (the pool of the protocol is exhausted): the packet is
  dropped and counted in the DistributedObj ``exhausted`` (field ``ports``).
* Hairpinning (RFC 4787 REQ-9): an outbound packet whose destination is one
  of the public addresses is translated as above, then handled as an
  inbound packet (so its source is the sender's external endpoint, REQ-9a)
  and goes back to ``lan``, or is dropped.
* WAN->LAN TCP/UDP (inbound).  The destination (address, port, protocol)
  gives the index arithmetically.  Dropped if the address is not one of
  ours, the port is outside 1024 .. 1023 + ports_per_ip, or the index holds
  no live mapping.  Filtering (RFC 4787 §5, REQ-8; RFC 5382 REQ-3):
  ``filtering=endpoint`` (default, Endpoint-Independent Filtering) lets any
  remote host and port reach a live mapping; ``filtering=address``
  (Address-Dependent Filtering) only a remote address the internal endpoint
  has sent to from this mapping within the protocol's timeout (any port of
  it).  Otherwise the destination is rewritten to the internal endpoint
  (checksums updated) and the frame goes to ``lan``.  Unsolicited inbound
  SYNs are dropped silently (RFC 5382 REQ-4a: no ICMP is sent).
* Inbound packets do not refresh a mapping (nor a filter permit).  RFC 4787
  REQ-6 makes outbound refresh mandatory and inbound refresh optional
  (REQ-6a "MAY"), and §4.3 warns that inbound refresh lets an external host
  keep a mapping alive indefinitely.  For TCP the internal endpoint of a
  live connection acknowledges what it receives, so outbound refresh keeps
  every active connection's mapping.  (It also keeps inbound packets
  read-only, see below.)
* Timeouts: a UDP mapping expires ``udp_timeout`` (default 300 s: RFC 4787
  REQ-5 "MUST NOT expire in less than two minutes", REQ-5c "five minutes or
  more ... RECOMMENDED"; configurable, REQ-5b) after its last refresh; a TCP
  mapping ``tcp_timeout`` (default 7440 s = 2 h 4 min, RFC 5382 REQ-5's
  established-connection minimum; the NAT does not track TCP state, so the
  one timer also satisfies the 4-minute transitory minimum).  Refreshes are
  coalesced: a refresh less than ``refresh_interval`` (default 1 s) after
  the previous one changes nothing, so a lease may end up to that much
  early.  An expired mapping is gone at once (inbound dropped); the
  internal endpoint's next outbound packet gets a new index, maybe another
  port.  A filter permit has the timeout of its protocol, counted from the
  last outbound packet to that remote address.
* ARP: an ARP request (Ethernet/IPv4, op 1) arriving on ``wan`` for one of
  the public addresses is answered on ``wan`` with an ARP reply from ``mac``
  (default 02:00:00:00:00:aa) to the requester's hardware address, keeping
  an 802.1Q tag, padded to 60 bytes.  Other ARP frames and other non-IP
  frames are dropped.
* ICMP echo (RFC 5508 REQ-1).  An echo request from LAN is an outbound
  packet of the internal endpoint (source address, identifier, ICMP): it
  gets or refreshes a mapping, independent of the destination (REQ-1a),
  and leaves from the external endpoint (source address and identifier
  rewritten, ICMP checksum updated).  An echo reply from WAN is inbound:
  the destination and identifier name the mapping, filtered as TCP/UDP
  are, and are rewritten to the internal endpoint.  A mapping expires
  ``icmp_timeout`` (default 60 s, REQ-2's minimum; configurable, REQ-2a)
  after its last outbound refresh.  Echo requests from WAN and pings to a
  public address are dropped (the NAT answers none).
* ICMP errors (destination unreachable — including fragmentation needed,
  RFC 1191 —, time exceeded, parameter problem).  One whose ICMP checksum
  or quoted IPv4 header checksum does not verify is dropped (REQ-3,
  REQ-3a); the quoted transport checksum is not checked (REQ-3c), IP
  options in both headers are walked (REQ-3b).  An error is kept only if
  it quotes a TCP/UDP header or an ICMP echo (8 bytes of it) of a live
  mapping (REQ-4, REQ-5: "SHOULD silently drop" otherwise), whatever its
  own source address (RFC 4787 REQ-12a), and it never refreshes the
  mapping (REQ-6; for outbound errors RFC 7857's "Outbound Mapping Refresh
  and Error Packets").  From WAN (REQ-4): the quoted packet is one the NAT
  sent; its source address and port (or identifier) go back to the
  internal endpoint (REQ-4a: the embedded headers reverted), and the
  error's destination becomes that endpoint's address (REQ-4c); type and
  code are unchanged (REQ-4b).  From LAN (REQ-5): the quoted packet is one
  the NAT let in; its destination goes back to the external endpoint
  (REQ-5a) and the error's source becomes the mapping's public address
  (REQ-5c); an error sent so to one of our public addresses is
  hairpinned: translated once more as from WAN (REQ-7, REQ-7a).  The
  quoted IPv4 header checksum and the ICMP checksum are updated
  incrementally (RFC 1624), and so is the quoted TCP/UDP checksum where it
  lies inside the quote (UDP: always, unless 0; TCP: when 18 bytes are
  quoted), so it is the one the internal endpoint sent or received: RFC
  3022 §4.3's "checksum of the embedded packet" is fixed wherever it is
  quoted.
* Dropped as well: other ICMP (timestamps and other queries, redirects,
  source quench, errors quoting other protocols or less than 8 bytes of
  data), other IP protocols, IP fragments (no reassembly: RFC 4787 REQ-14
  is not met) and malformed frames.
* Not met, about ICMP: the NAT sends no ICMP of its own — no destination
  unreachable code 13 when a mapping cannot be made (RFC 5508 REQ-8, a
  SHOULD: the packet is dropped and counted), no fragmentation needed for
  a DF packet too large for the WAN link (RFC 4787 REQ-13), and none of
  the messages RFC 5508 REQ-10 lists; queries other than echo (timestamps)
  are dropped, so REQ-1 holds for echo only.  Met: RFC 4787 REQ-12 (no
  ICMP ends a mapping), REQ-12a, REQ-12b; RFC 5382 REQ-9 and REQ-10.

Router mode (``lan_ip`` set; for real links)
--------------------------------------------
Without ``lan_ip`` (the default) the NAT is a bump in the wire: the rules
above are all, and frames keep their MACs and TTL (replayed traces, the
plain peer).  With ``lan_ip`` it is the IP router between the LAN and the
WAN link (RFC 1812), one MAC, ``mac``, on both devices (they are separate
broadcast domains):

* ARP (RFC 826, Ethernet/IPv4 only, on both devices): a request for
  ``lan_ip`` arriving on ``lan``, or for a public address arriving on
  ``wan``, is answered as above on the device it came from (not for the
  other side's addresses).  RFC 826's reception algorithm fills the ARP
  cache: a request or reply whose sender is cached on that device updates
  its MAC and renews its entry ("merge"); one whose target is ours also
  creates an entry for the sender.  A broadcast or multicast sender MAC is
  never believed (RFC 1812 3.3.2), nor a sender address 0.0.0.0.
* Forwarding: only the TCP/UDP and ICMP frames above sent to ``mac`` are routed (others are
  addressed to another host of the segment, or are link broadcasts, RFC
  1812 5.3.4), and not those for ``lan_ip`` itself (the NAT runs no
  services).  TTL <= 1: dropped and counted (``routed.ttl_exceeded``; no
  ICMP Time Exceeded, RFC 1812 5.3.1 is not met); otherwise the TTL is
  decremented (checksum updated) and the packet translated as above.
  The next hop of a packet leaving on ``wan`` is its destination when the
  destination lies in ``wan_prefix`` (a CIDR subnet, the WAN link) or no
  ``wan_gateway`` is given, else ``wan_gateway``; on ``lan`` it is the
  destination itself (LAN hosts are on-link).  The frame leaves with
  source MAC ``mac`` and the next hop's cached MAC as destination.
* A next hop not in the cache (or expired): the packet is dropped and
  counted (``routed.unresolved``; RFC 1122 2.3.2.2's SHOULD-queue is not
  met) and an ARP request is broadcast on that device, from ``lan_ip`` on
  ``lan``, from ``public_base`` on ``wan``; at most one per second per
  next hop (RFC 1122 2.3.2.1's flood limit), counted in
  ``routed.arp_requests``.
* ARP cache lifetime: an entry lives ``arp_timeout`` (default 60 s, RFC
  1122 2.3.2.1: "on the order of a minute") from its creation or last
  renewal; a renewal closer than min(1 s, arp_timeout / 4) to the previous
  one changes nothing, so an entry may end that much early.  A packet using an entry in the second half
  of its life is forwarded and triggers a unicast poll (a request sent to
  the cached MAC, RFC 1122 2.3.2.1), at most one per second, so a live
  neighbour's answer renews it before it expires and steady traffic sees
  no drops.  An entry not renewed is gone at ``arp_timeout`` (the next
  packet asks by broadcast again); an unanswered request's entry too.
  ``neighbors`` (default 4096) entries in all, on both devices; when full,
  packets to new next hops are dropped (as unresolved) and no request goes
  out.  ``wan_gateway`` and ``wan_prefix`` need ``lan_ip``.
* Not supported in router mode: 802.1Q-tagged links (requests are sent
  untagged), LAN hosts behind another router (no LAN routes), answering
  ICMP or anything else addressed to the NAT itself.

Other deviations from RECOMMENDED behaviour: IP address pooling is
"arbitrary", not "paired" (RFC 4787 REQ-2: an internal host's endpoints may
use several public addresses); ports are neither parity-preserving (REQ-4)
nor kept below 1024 for sources below 1024 (REQ-3a); external ports are
handed out in allocator order, not randomized (RFC 6056).

Theory of operation
-------------------
No packet sets: every packet is an orphan, steered by its address pair (an
ICMP error by its own, not the quoted packet's: the mappings it needs are
shared state anyway).
Both directions of a mapping cannot be pinned to one worker: the outbound
key is the internal endpoint, the inbound key the external endpoint the NAT
chose when it allocated it, and with EIM one mapping serves flows to any
number of remote hosts, whose packets RSS spreads over all workers.  So the
mappings are shared state:

* ``tcp_ports`` / ``udp_ports`` / ``icmp_ids``: one ``nfos.Allocator``
  per protocol (capacity public_ips * ports_per_ip, lease = the protocol's
  timeout, ``refresh_interval``); its ``on_expire`` removes the mapping
  from ``mappings`` in the same transaction.  ``is_allocated`` is the
  liveness test: an expired lease counts as gone even before it is
  reclaimed.
* ``mappings``: Map (internal address << 24 | port or identifier << 8 |
  protocol) -> index; ``endpoints``: Vector, per index (TCP first, then
  UDP, then ICMP), the internal endpoint and a generation counter bumped
  at each allocation.  A stale entry (its lease expired, not yet
  reclaimed) is simply replaced: ``on_expire`` deletes an entry only if it
  still names the expired index.  An ICMP error reads them as an inbound
  (from WAN) or outbound (from LAN) packet of the quoted mapping would.
* ``filtering=address`` adds ``tcp_permits`` / ``udp_permits`` /
  ``icmp_permits`` (Allocators of ``permits`` entries each, lease = the
  protocol's timeout), ``permits``: Map (index << 32 | remote address) ->
  permit index << 32 | generation of the mapping, and ``permit_keys``
  (Vector, permit -> its key, for ``on_expire``).  The generation makes a
  permit left over from an earlier holder of the index worthless (a permit
  may outlive its mapping by less than ``refresh_interval``).  Permits are
  bounded and expire like mappings; none left: the outbound packet is
  dropped and counted (``exhausted.permits``), since its replies could not
  pass the filter.
* ``exhausted``: DistributedObj counters; updates never conflict.

Which accesses conflict (paper §4.5 recipes):

* Allocation works on the worker's own pool; only when a pool runs dry does
  it reclaim expired leases and then steal from the richest pool, reading
  every pool head: conflicts with every allocating worker.  Recipe:
  over-provision ``public_ips`` (the paper's NAT case study).
* Refreshing writes the index's lease cell (and, once per sweep period of
  the allocator, moves it in its owner pool's expiry list): refreshes of
  one index on several workers conflict on the cell.  Recipe:
  ``refresh_interval`` (a refresh within it is a read-only no-op; at the
  default 1 s an index is written at most once a second).
* A new mapping writes one ``mappings`` bucket (conflicting with lookups of
  keys in that bucket: buckets ~ capacity, so rare) and its ``endpoints``
  element.  Inbound packets only read (no inbound refresh), so they
  conflict only with the allocation or refresh of their own index (and,
  while it is its pool's newest lease, with the pool's next allocation,
  which links the lease list through its cell).
* With ``filtering=address`` each outbound packet also refreshes its
  permit: the same two recipes apply to the permit allocators.

Router mode adds an ARP cache shaped like the bridge's MAC table:
``neighbors`` (Map (device << 32 | IPv4 address) -> {lease index, MAC,
time of the last request}, two buckets per entry), ``neighbor_leases`` (an
Allocator of ``neighbors`` indexes, lease ``arp_timeout``; its on_expire
deletes the Map entry, found through ``neighbor_keys``), ``router`` (a
Vector of one read-only record: MAC, WAN subnet) and ``routed``
(DistributedObj counters).  A forwarded packet only reads its next hop's
entry and lease cell, so in steady state (next hops resolved) it writes
nothing and all workers share one gateway entry without conflicts; writes
come from ARP frames (a reply renews a lease at most once a second), from
the once-a-second poll of an entry in the second half of its life, and
from requests for unresolved next hops.

On ``nfos gen caida`` traces (0.3 s of traffic at 1 Mpps: within one
``refresh_interval``, and the pools far from dry) almost no transaction
aborts (measured: < 0.1 % with 2 workers).
"""

import ipaddress
import struct

import nfos

nf = nfos.NF("nat", devices=["lan", "wan"], params={
    "public_ips": nfos.param(int, 57, "number of public IPv4 addresses"),
    "public_base": nfos.param(nfos.IPv4, nfos.ip("198.51.100.1"), "first public address"),
    "ports_per_ip": nfos.param(int, 64512, "external ports per address, from 1024 (max 64512)"),
    "udp_timeout": nfos.param(nfos.Duration, nfos.seconds(300), "UDP mapping idle timeout (RFC 4787 REQ-5)"),
    "tcp_timeout": nfos.param(nfos.Duration, nfos.seconds(7440), "TCP mapping idle timeout (RFC 5382 REQ-5)"),
    "icmp_timeout": nfos.param(nfos.Duration, nfos.seconds(60), "ICMP echo mapping idle timeout (RFC 5508 REQ-2)"),
    "refresh_interval": nfos.param(nfos.Duration, nfos.seconds(1), "refreshes closer than this are no-ops"),
    "filtering": nfos.param(str, "endpoint", "endpoint (independent) or address (dependent) filtering"),
    "permits": nfos.param(int, 1 << 20, "filtering=address: remote-address permits per protocol (TCP, UDP, ICMP)"),
    "mac": nfos.param(str, "02:00:00:00:00:aa", "the NAT's MAC address (ARP; router mode: both devices)"),
    "lan_ip": nfos.param(nfos.IPv4, nfos.ip("0.0.0.0"),
                         "router mode: the NAT's LAN address (the LAN hosts' default gateway)"),
    "wan_gateway": nfos.param(nfos.IPv4, nfos.ip("0.0.0.0"),
                              "router mode: next hop for WAN destinations outside wan_prefix"),
    "wan_prefix": nfos.param(str, "", "router mode: the WAN link's subnet (CIDR), reached without wan_gateway"),
    "arp_timeout": nfos.param(nfos.Duration, nfos.seconds(60), "router mode: ARP cache entry lifetime"),
    "neighbors": nfos.param(int, 4096, "router mode: ARP cache entries (both devices)"),
})

LAN, WAN = 0, 1
ICMP, TCP, UDP = 1, 6, 17
ECHO_REPLY, ECHO_REQUEST = 0, 8
ERRORS = (3, 11, 12)   # destination unreachable, time exceeded, parameter problem (RFC 792)
FIRST_PORT = 1024
MAX_PORTS = 65536 - FIRST_PORT
ETH_ARP = 0x0806
ARP_REQUEST = struct.Struct("!HHBBH6s4s6s4s")
LOW32 = 0xFFFFFFFF
BROADCAST = b"\xff" * 6
GROUP_BIT = 1 << 40                 # the I/G bit of a 48-bit MAC held as an int
ARP_INTERVAL = 1_000_000_000        # at most one ARP request per second per next hop (RFC 1122 2.3.2.1)
NEIGHBOR_REFRESH = 1_000_000_000    # ARP cache leases are renewed at most this often


class Endpoint(nfos.Record):
    ip: nfos.ip4    # internal address
    port: nfos.u16  # internal port
    gen: nfos.u32   # allocations of this index so far (filter permits name it)


class Exhausted(nfos.Record):
    ports: nfos.u64    # outbound packets dropped: no external port (ICMP: identifier) left
    permits: nfos.u64  # outbound packets dropped: no filter permit left (filtering=address)


class Router(nfos.Record):   # router mode: read-only after init
    mac: nfos.mac
    wan_net: nfos.ip4
    wan_mask: nfos.ip4


class Neighbor(nfos.Record):  # an ARP cache entry
    idx: nfos.u32    # its lease: an index of nf.state.neighbor_leases
    mac: nfos.mac    # 0: not resolved yet
    asked: nfos.u64  # when the last ARP request for it was sent (ns)


class Routed(nfos.Record):
    unresolved: nfos.u64    # packets dropped: their next hop's MAC was not known (yet)
    arp_requests: nfos.u64  # ARP requests sent
    ttl_exceeded: nfos.u64  # packets dropped: TTL <= 1


@nf.init
def setup(p):
    if p.public_ips < 1 or not 1 <= p.ports_per_ip <= MAX_PORTS:
        raise ValueError(f"need public_ips >= 1 and 1 <= ports_per_ip <= {MAX_PORTS}")
    if p.public_base + p.public_ips > 1 << 32:
        raise ValueError("public_base + public_ips runs past 255.255.255.255")
    if p.udp_timeout <= 0 or p.tcp_timeout <= 0 or p.icmp_timeout <= 0:
        raise ValueError("udp_timeout, tcp_timeout and icmp_timeout must be > 0")
    if p.filtering not in ("endpoint", "address"):
        raise ValueError(f"filtering must be 'endpoint' or 'address', got {p.filtering!r}")
    if p.permits < 1:
        raise ValueError("permits must be >= 1")
    nfos.mac(p.mac)   # a bad MAC is an error now, not at the first ARP request
    n = p.public_ips * p.ports_per_ip
    st = nf.state
    st.tcp_ports = nfos.Allocator(n, lease=p.tcp_timeout, refresh_interval=p.refresh_interval,
                                  on_expire=forget_tcp)
    st.udp_ports = nfos.Allocator(n, lease=p.udp_timeout, refresh_interval=p.refresh_interval,
                                  on_expire=forget_udp)
    st.icmp_ids = nfos.Allocator(n, lease=p.icmp_timeout, refresh_interval=p.refresh_interval,
                                 on_expire=forget_icmp)
    st.mappings = nfos.Map(nfos.u64, nfos.u32, 3 * n)
    st.endpoints = nfos.Vector(Endpoint, 3 * n)
    st.exhausted = nfos.DistributedObj(Exhausted)
    if p.filtering == "address":
        st.tcp_permits = nfos.Allocator(p.permits, lease=p.tcp_timeout, refresh_interval=p.refresh_interval,
                                        on_expire=forget_tcp_permit)
        st.udp_permits = nfos.Allocator(p.permits, lease=p.udp_timeout, refresh_interval=p.refresh_interval,
                                        on_expire=forget_udp_permit)
        st.icmp_permits = nfos.Allocator(p.permits, lease=p.icmp_timeout, refresh_interval=p.refresh_interval,
                                         on_expire=forget_icmp_permit)
        st.permits = nfos.Map(nfos.u64, nfos.u64, 3 * p.permits)
        st.permit_keys = nfos.Vector(nfos.u64, 3 * p.permits)
    if p.lan_ip:
        setup_router(p, st)
    elif p.wan_gateway or p.wan_prefix:
        raise ValueError("wan_gateway and wan_prefix need lan_ip (router mode)")


def setup_router(p, st):
    if p.arp_timeout <= 0:
        raise ValueError("arp_timeout must be > 0")
    if p.neighbors < 1:
        raise ValueError("neighbors must be >= 1")
    net, mask = 0, 0
    if p.wan_prefix:
        try:
            network = ipaddress.IPv4Network(p.wan_prefix, strict=False)
        except ValueError:
            raise ValueError(f"wan_prefix must be a subnet like 203.0.113.0/24, got {p.wan_prefix!r}") from None
        net, mask = int(network.network_address), int(network.netmask)
    st.router = nfos.Vector(Router, 1)   # read-only after init: never conflicts
    cfg = st.router[0]
    cfg.mac = nfos.mac(p.mac)
    cfg.wan_net = net
    cfg.wan_mask = mask
    buckets = 2 << max(0, (p.neighbors - 1).bit_length())   # two buckets per entry
    st.neighbors = nfos.Map(nfos.u64, Neighbor, p.neighbors, buckets=buckets)
    st.neighbor_keys = nfos.Vector(nfos.u64, p.neighbors)
    st.neighbor_leases = nfos.Allocator(p.neighbors, lease=p.arp_timeout,
                                        refresh_interval=min(NEIGHBOR_REFRESH, p.arp_timeout // 4),
                                        on_expire=forget_neighbor)
    st.routed = nfos.DistributedObj(Routed)


# ------------------------------------------------------------------ expiry

def forget(slot, index, proto):
    """on_expire: drop the mapping of the endpoint that held ``index`` (if it still names it)."""
    ep = nf.state.endpoints[slot]
    key = ep.ip << 24 | ep.port << 8 | proto
    if nf.state.mappings.get(key) == index:
        nf.state.mappings.delete(key)


def forget_tcp(index):
    forget(index, index, TCP)


def forget_udp(index):
    forget(nf.params.public_ips * nf.params.ports_per_ip + index, index, UDP)


def forget_icmp(index):
    forget(2 * nf.params.public_ips * nf.params.ports_per_ip + index, index, ICMP)


def forget_permit(slot, permit):
    key = nf.state.permit_keys[slot]
    ref = nf.state.permits.get(key)
    if ref is not None and ref >> 32 == permit:
        nf.state.permits.delete(key)


def forget_tcp_permit(permit):
    forget_permit(permit, permit)


def forget_udp_permit(permit):
    forget_permit(nf.params.permits + permit, permit)


def forget_icmp_permit(permit):
    forget_permit(2 * nf.params.permits + permit, permit)


def forget_neighbor(idx):
    """on_expire: the ARP cache lease ``idx`` was reclaimed; drop its entry."""
    key = nf.state.neighbor_keys[idx]
    n = nf.state.neighbors.get(key)
    if n is not None and n.idx == idx:
        nf.state.neighbors.delete(key)


# ------------------------------------------------------------------ packets

@nf.orphan
def translate(pkt):
    ip = pkt.ip
    if ip is None:
        if pkt.eth.type == ETH_ARP:
            if nf.params.lan_ip:
                router_arp(pkt)
            elif pkt.dev_index == WAN:
                answer_arp(pkt)
        return
    l4, icmp = pkt.l4, pkt.icmp
    if ip.fragment:
        return
    lan = pkt.dev_index == LAN
    if l4 is None:   # ICMP: an echo request out, an echo reply in, or an error quoting a header
        if icmp is None:
            return
        t = icmp.type
        if not (t == (ECHO_REQUEST if lan else ECHO_REPLY) and icmp.id is not None
                or t in ERRORS and icmp.inner is not None):
            return
    p = nf.params
    if p.lan_ip:   # router mode: only frames sent to our MAC, one hop less
        if pkt.eth.dst != nf.state.router[0].mac or ip.dst == p.lan_ip:
            return
        if ip.ttl <= 1:
            nf.state.routed.update().ttl_exceeded += 1
            return
        ip.ttl -= 1
    if l4 is not None:
        if lan:
            outbound(pkt, ip, l4)
        else:
            inbound(pkt, ip, l4)
    elif icmp.type in ERRORS:
        if lan:
            outbound_error(pkt, ip, icmp)
        else:
            inbound_error(pkt, ip, icmp)
    elif lan:
        outbound_echo(pkt, ip, icmp)
    else:
        inbound_echo(pkt, ip, icmp)


def space(proto):
    """(the allocator, the first ``endpoints`` slot) of a protocol's index space."""
    st, n = nf.state, nf.params.public_ips * nf.params.ports_per_ip
    if proto == TCP:
        return st.tcp_ports, 0
    if proto == UDP:
        return st.udp_ports, n
    return st.icmp_ids, 2 * n


def is_public(addr):
    return 0 <= addr - nf.params.public_base < nf.params.public_ips


def external(index):
    """The external endpoint (public address, port or identifier) of ``index``."""
    ppi = nf.params.ports_per_ip
    return nf.params.public_base + index // ppi, FIRST_PORT + index % ppi


def mapping_of(proto, src, port, remote):
    """The index of internal endpoint (``src``, ``port``, ``proto``) sending to ``remote``: its live
    mapping refreshed, or a new one, and (filtering=address) its permit for ``remote``; None
    (counted) when no index or permit is left."""
    p, st = nf.params, nf.state
    ports, base = space(proto)
    key = src << 24 | port << 8 | proto
    index = st.mappings.get(key)
    if index is None or not ports.refresh(index):
        index = ports.allocate()
        if index is None:
            st.exhausted.update().ports += 1
            return None
        st.mappings.set(key, index)
        ep = st.endpoints[base + index]
        ep.ip = src
        ep.port = port
        ep.gen = ep.gen + 1 & LOW32
    if p.filtering == "address" and not permit(st, p, proto, base + index, remote):
        st.exhausted.update().permits += 1
        return None
    return index


def live_endpoint(proto, dst, port):
    """The ``endpoints`` slot of external endpoint (``dst``, ``port``, ``proto``) if it holds a live
    mapping, else None."""
    p = nf.params
    ppi = p.ports_per_ip
    k, port = dst - p.public_base, port - FIRST_PORT
    if not (0 <= k < p.public_ips and 0 <= port < ppi):
        return None   # not one of our external endpoints
    ports, base = space(proto)
    index = k * ppi + port
    if not ports.is_allocated(index):
        return None   # no mapping (or an expired one)
    return base + index


def admitted(proto, slot, remote):
    """Filtering: may ``remote`` reach the mapping at ``endpoints`` slot ``slot``?"""
    p, st = nf.params, nf.state
    if p.filtering != "address":
        return True
    ref = st.permits.get(slot << 32 | remote)
    permits = st.udp_permits if proto == UDP else st.icmp_permits if proto == ICMP else st.tcp_permits
    return ref is not None and ref & LOW32 == st.endpoints[slot].gen and permits.is_allocated(ref >> 32)


def to_wan(pkt, ip):
    if nf.params.lan_ip:
        route(pkt, WAN, wan_next_hop(ip.dst))
    else:
        pkt.send(WAN)


def to_lan(pkt, ip):
    if nf.params.lan_ip:
        route(pkt, LAN, ip.dst)
    else:
        pkt.send(LAN)


def outbound(pkt, ip, l4):
    index = mapping_of(ip.proto, ip.src, l4.sport, ip.dst)
    if index is None:
        return
    ip.src, l4.sport = external(index)
    if is_public(ip.dst):
        inbound(pkt, ip, l4)   # hairpinning
    else:
        to_wan(pkt, ip)


def permit(st, p, proto, slot, remote):
    """Record that endpoint ``slot`` sent to ``remote`` (refresh or new permit); False if none is left."""
    if proto == UDP:
        permits, base = st.udp_permits, p.permits
    elif proto == ICMP:
        permits, base = st.icmp_permits, 2 * p.permits
    else:
        permits, base = st.tcp_permits, 0
    gen = st.endpoints[slot].gen
    key = slot << 32 | remote
    ref = st.permits.get(key)
    if ref is not None and permits.refresh(ref >> 32):
        if ref & LOW32 != gen:   # left over from the index's previous holder: take it over
            st.permits.set(key, ref >> 32 << 32 | gen)
        return True
    n = permits.allocate()
    if n is None:
        return False
    st.permits.set(key, n << 32 | gen)
    st.permit_keys[base + n] = key
    return True


def inbound(pkt, ip, l4):
    proto = ip.proto
    slot = live_endpoint(proto, ip.dst, l4.dport)
    if slot is None or not admitted(proto, slot, ip.src):
        return   # no live mapping, or the internal endpoint has not sent to this address
    ep = nf.state.endpoints[slot]
    ip.dst = ep.ip
    l4.dport = ep.port
    to_lan(pkt, ip)


# ------------------------------------------------------------------ ICMP (RFC 5508)

def outbound_echo(pkt, ip, icmp):
    if is_public(ip.dst):
        return   # a ping to our own public addresses: the NAT answers none
    index = mapping_of(ICMP, ip.src, icmp.id, ip.dst)
    if index is None:
        return
    ip.src, icmp.id = external(index)
    to_wan(pkt, ip)


def inbound_echo(pkt, ip, icmp):
    slot = live_endpoint(ICMP, ip.dst, icmp.id)
    if slot is None or not admitted(ICMP, slot, ip.src):
        return
    ep = nf.state.endpoints[slot]
    ip.dst = ep.ip
    icmp.id = ep.port
    to_lan(pkt, ip)


def quoted_session(icmp):
    """(quoted IPv4 header, quoted TCP/UDP or ICMP header, protocol) of an error whose checksums
    verify (RFC 5508 REQ-3, REQ-3a; the quoted transport checksum is not checked, REQ-3c) and
    that quotes a TCP/UDP header or an ICMP echo; else None."""
    q = icmp.inner
    if q is None or not icmp.checksum_ok or not q.ip.checksum_ok:
        return None
    qip = q.ip
    proto = qip.proto
    if proto in (TCP, UDP) and q.l4 is not None:
        return qip, q.l4, proto
    if proto == ICMP and q.icmp is not None and q.icmp.type in (ECHO_REQUEST, ECHO_REPLY):
        return qip, q.icmp, proto
    return None


def inbound_error(pkt, ip, icmp):
    """An error about a packet one of our mappings sent (RFC 5508 REQ-4): the quoted source goes back
    to the internal endpoint, and so does the error."""
    quoted = quoted_session(icmp)
    if quoted is None:
        return
    qip, qhdr, proto = quoted
    if proto == ICMP:
        if qhdr.type != ECHO_REQUEST:
            return
        slot = live_endpoint(ICMP, qip.src, qhdr.id)
    else:
        slot = live_endpoint(proto, qip.src, qhdr.sport)
    if slot is None:
        return   # no active mapping for the quoted packet: dropped (REQ-4)
    ep = nf.state.endpoints[slot]
    qip.src = ep.ip
    if proto == ICMP:
        qhdr.id = ep.port
    else:
        qhdr.sport = ep.port
    ip.dst = ep.ip   # REQ-4c
    to_lan(pkt, ip)


def outbound_error(pkt, ip, icmp):
    """An error about a packet a mapping let in (RFC 5508 REQ-5): the quoted destination becomes the
    external endpoint again, and the error comes from its public address."""
    quoted = quoted_session(icmp)
    if quoted is None:
        return
    qip, qhdr, proto = quoted
    if proto == ICMP:
        if qhdr.type != ECHO_REPLY:
            return
        port = qhdr.id
    else:
        port = qhdr.dport
    st = nf.state
    ports, _ = space(proto)
    index = st.mappings.get(qip.dst << 24 | port << 8 | proto)
    if index is None or not ports.is_allocated(index):
        return   # no active mapping: dropped (REQ-5); an error does not refresh one
    public, pport = external(index)
    qip.dst = public
    if proto == ICMP:
        qhdr.id = pport
    else:
        qhdr.dport = pport
    ip.src = public   # REQ-5c
    if is_public(ip.dst):
        inbound_error(pkt, ip, icmp)   # hairpinned (REQ-7)
    else:
        to_wan(pkt, ip)


# ------------------------------------------------------------------ ARP

def answer_arp(pkt):
    """Not router mode: answer an ARP request on ``wan`` for a public address."""
    body = pkt.payload   # the ARP packet (and any padding)
    if len(body) < ARP_REQUEST.size:
        return
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = ARP_REQUEST.unpack_from(body)
    if (htype, ptype, hlen, plen, op) != (1, 0x0800, 6, 4, 1):
        return
    p = nf.params
    if not 0 <= int.from_bytes(tpa, "big") - p.public_base < p.public_ips:
        return
    reply_arp(pkt, body, nfos.mac(p.mac), sha, spa, tpa, WAN)


def reply_arp(pkt, body, mac, sha, spa, tpa, dev):
    """Emit the ARP reply ``tpa`` is at ``mac`` to the requester (``sha``, ``spa``), on ``dev``."""
    frame = pkt.frame
    ours = mac.to_bytes(6, "big")
    tags = frame[12:len(frame) - len(body)]   # an 802.1Q tag (if any) and the EtherType
    reply = sha + ours + tags + ARP_REQUEST.pack(1, 0x0800, 6, 4, 2, ours, tpa, sha, spa)
    nf.emit(reply + bytes(max(0, 60 - len(reply))), dev)


def router_arp(pkt):
    """Router mode: RFC 826's reception algorithm on either device."""
    body = pkt.payload
    if len(body) < ARP_REQUEST.size:
        return
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = ARP_REQUEST.unpack_from(body)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (1, 2):
        return
    p, st = nf.params, nf.state
    dev = pkt.dev_index
    target = int.from_bytes(tpa, "big")
    if dev == LAN:
        for_us = target == p.lan_ip
    else:
        for_us = 0 <= target - p.public_base < p.public_ips
    sender = int.from_bytes(spa, "big")
    hw = int.from_bytes(sha, "big")
    if sender and not hw & GROUP_BIT and hw:   # never believe a broadcast/multicast MAC (RFC 1812 3.3.2)
        key = dev << 32 | sender
        n = st.neighbors.get(key)
        leases = st.neighbor_leases
        if n is not None and leases.refresh(n.idx):   # merge: the sender is in the cache
            if n.mac != hw:
                n.mac = hw
        elif for_us:                                    # a new entry only when we are the target
            n = new_neighbor(key, n)
            if n is not None:
                n.mac = hw
    if for_us and op == 1:
        reply_arp(pkt, body, st.router[0].mac, sha, spa, tpa, dev)


def new_neighbor(key, n):
    """A fresh ARP cache entry (lease) for ``key``; ``n``: its expired entry, or None.  None if full."""
    st = nf.state
    leases = st.neighbor_leases
    if n is not None:
        leases.free(n.idx)   # the expired lease: never reclaimed (on_expire) now
    idx = leases.allocate()
    if idx is None:
        if n is not None:
            st.neighbors.delete(key)
        return None
    if n is None:
        try:
            n = st.neighbors.set(key)
        except nfos.MapFull:   # the key's bucket is full (2 buckets per entry: very unlikely)
            leases.free(idx)
            return None
    n.idx = idx
    n.mac = 0
    n.asked = 0
    st.neighbor_keys[idx] = key
    return n


def request_arp(dev, hop, to_mac):
    """Emit an ARP request for ``hop`` on ``dev``: broadcast, or unicast to ``to_mac`` (a poll)."""
    p, st = nf.params, nf.state
    ours = st.router[0].mac.to_bytes(6, "big")
    sender = p.lan_ip if dev == LAN else p.public_base
    frame = ((to_mac.to_bytes(6, "big") if to_mac else BROADCAST) + ours + b"\x08\x06"
             + ARP_REQUEST.pack(1, 0x0800, 6, 4, 1, ours, sender.to_bytes(4, "big"), bytes(6),
                                hop.to_bytes(4, "big")))
    nf.emit(frame + bytes(60 - len(frame)), dev)
    st.routed.update().arp_requests += 1


def resolve(dev, hop):
    """The MAC of next hop ``hop`` on ``dev``, or None (not resolved: an ARP request may go out)."""
    st = nf.state
    key = dev << 32 | hop
    n = st.neighbors.get(key)
    leases = st.neighbor_leases
    now = nfos.now()
    if n is not None and leases.is_allocated(n.idx):
        mac = n.mac
        if mac and leases.lease_remaining(n.idx) > nf.params.arp_timeout // 2:
            return mac   # the common case: read-only
        if now - n.asked < ARP_INTERVAL:
            return mac or None
        # unresolved, or in the second half of its life: ask (again)
    else:
        n = new_neighbor(key, n)
        if n is None:
            return None  # the cache is full
        mac = 0
    n.asked = now
    request_arp(dev, hop, mac)
    return mac or None


def wan_next_hop(dst):
    """The WAN next hop of ``dst``: itself if on-link (in wan_prefix, or no wan_gateway), else wan_gateway."""
    gateway = nf.params.wan_gateway
    if not gateway:
        return dst
    cfg = nf.state.router[0]
    if cfg.wan_mask and dst & cfg.wan_mask == cfg.wan_net:
        return dst
    return gateway


def route(pkt, dev, hop):
    """Router mode: send ``pkt`` on ``dev`` from our MAC to the MAC of ``hop``, or drop it (counted)."""
    mac = resolve(dev, hop)
    if mac is None:
        nf.state.routed.update().unresolved += 1
        return
    eth = pkt.eth
    eth.src = nf.state.router[0].mac
    eth.dst = mac
    pkt.send(dev)
