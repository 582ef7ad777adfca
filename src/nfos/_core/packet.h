/* Layer 5: packets — the parsed slot of a frame, and the Python packet view (packet.c). */
#ifndef NFOS_PACKET_H
#define NFOS_PACKET_H

#include "record.h"

enum pkt_flags {
    PF_VLAN = 1, PF_IP = 2, PF_TCP = 4, PF_UDP = 8, PF_ICMP = 16,
    PF_FRAG = 32, PF_MALFORMED = 64
};

/* A live frame's offload metadata, as the packet socket gives it (struct
 * virtio_net_hdr's fields, host byte order; pktio_afpacket.c): a GSO
 * super-frame the kernel segments when it is sent (gso_type, gso_size,
 * hdr_len), and a TCP/UDP checksum left to offload (flags & VNET_NEEDS_CSUM:
 * the field at csum_start + csum_offset holds the pseudo-header sum, the
 * kernel or the NIC completes it over the bytes from csum_start).  All zero:
 * none (replays, emitted frames). */
enum { VNET_NEEDS_CSUM = 1, VNET_DATA_VALID = 2 };
enum { VNET_GSO_NONE = 0, VNET_GSO_TCPV4 = 1, VNET_GSO_UDP = 3, VNET_GSO_TCPV6 = 4, VNET_GSO_UDP_L4 = 5,
       VNET_GSO_ECN = 0x80 };
typedef struct {
    uint8_t flags, gso_type;
    uint16_t hdr_len, gso_size, csum_start, csum_offset;
} PktVnet;   /* 10 bytes: the layout of struct virtio_net_hdr */

/* What an ICMP error (type 3, 11 or 12, with its 8-byte header) quotes
 * (PktSlot.qflags): QF_IP, a whole IPv4 header (options included) at q3;
 * then, when the quoted packet is not a later fragment and 8 bytes of its L4
 * header follow at q4 (RFC 792's "64 bits of original data"), QF_TCP, QF_UDP
 * or QF_ICMP (QF_ECHO too for an echo request or reply).  QF_FRAG: the
 * quoted packet is a fragment. */
enum quote_flags {
    QF_IP = 1, QF_TCP = 2, QF_UDP = 4, QF_ICMP = 8, QF_ECHO = 16, QF_FRAG = 32
};
#define QF_PORTS (QF_TCP | QF_UDP | QF_ECHO)   /* the quote has ports, or an echo identifier */

/* ICMP types (RFC 792) */
#define ICMP_ECHO_REPLY 0
#define ICMP_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAM_PROBLEM 12
static inline int icmp_is_error(uint8_t type) {
    return type == ICMP_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAM_PROBLEM;
}
static inline int icmp_is_echo(uint8_t type) { return type == ICMP_ECHO || type == ICMP_ECHO_REPLY; }

typedef struct {
    uint8_t *data;
    uint32_t len;             /* bytes in data: the frame as captured */
    uint32_t wire;            /* its length on the wire: > len when a capture's snap length cut it */
    uint16_t dev;
    int16_t out;              /* -1 drop, -2 flood, >= 0 device */
    uint64_t time;
    uint16_t l3, l4, payload; /* offsets */
    uint8_t flags, proto;
    uint8_t has_set, keylen;
    uint16_t q3, q4;          /* an ICMP error's quoted IPv4 and L4 headers (offsets; see qflags) */
    uint8_t qflags;           /* enum quote_flags; 0: not an ICMP error quoting an IPv4 header */
    uint32_t rss;             /* Toeplitz hash (steering) */
    uint64_t khash;           /* table hash */
    uint64_t undo_serial;     /* header bytes saved for this attempt */
    uint64_t enq_ns;          /* paced mode: monotonic time the generator queued it (0: not timed) */
    PktVnet vnet;             /* live: offload metadata (zero: none) */
    uint32_t index;           /* replay: the frame's place in the trace (--record-commits) */
    uint8_t *copy_to;         /* the frame is handled more than once (laps, the paced pool): before
                               * the first rewrite it is copied here and data points to the copy */
    uint8_t key[NFOS_MAX_KEY];
} PktSlot;

typedef struct Packet {
    PyObject_HEAD
    PktSlot *slot;            /* NULL once the handler has returned */
    PyObject *views[8];       /* eth, ip, l4, icmp, the quote, its ip, l4, icmp (owned; created on
                               * first use, kept while the object is reused) */
    /* Borrowed, set per packet: read-only members (pkt.eth, pkt.ip, ..., pkt.dev,
     * pkt.dev_index), which CPython loads as specialised slot reads; a header the
     * packet does not have is None. */
    PyObject *a_eth, *a_ip, *a_tcp, *a_udp, *a_l4, *a_icmp, *a_dev, *a_dev_index;
} Packet;

int packet_types_init(PyObject *m);
/* The slot of `o` if it is a packet whose handler is running, else NULL. */
PktSlot *packet_slot(PyObject *o);
/* Find the layer offsets and flags of s->data[0..len) (a wire length below len is taken as len). */
void pkt_parse(PktSlot *s);
/* The TCP/UDP checksum of s is left to offload (VNET_NEEDS_CSUM at its L4 header):
 * its field holds the pseudo-header sum. */
static inline int pkt_csum_partial(const PktSlot *s) {
    return (s->vnet.flags & VNET_NEEDS_CSUM) && s->vnet.csum_start == s->l4 && (s->flags & (PF_TCP | PF_UDP)) &&
           s->vnet.csum_offset == ((s->flags & PF_TCP) ? 16 : 6);
}
PyObject *packet_new(PktSlot *s);
void packet_invalidate(PyObject *p);
/* The handlers are done with `p` (a reference the caller owns): invalidate it
 * and drop the reference; if nothing else holds it, it (and its header views
 * nothing else holds) is kept for the next packet_new, not freed. */
void packet_release(PyObject *p);

/* Network byte order. */
static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static inline void wr32(uint8_t *p, uint32_t v) { wr16(p, v >> 16); wr16(p + 2, v & 0xffff); }
static inline uint64_t rd48(const uint8_t *p) { return (uint64_t)rd16(p) << 32 | rd32(p + 2); }

#endif
