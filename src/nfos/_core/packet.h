/* Layer 5: packets — the parsed slot of a frame, and the Python packet view (packet.c). */
#ifndef NFOS_PACKET_H
#define NFOS_PACKET_H

#include "record.h"

enum pkt_flags {
    PF_VLAN = 1, PF_IP = 2, PF_TCP = 4, PF_UDP = 8, PF_ICMP = 16,
    PF_FRAG = 32, PF_MALFORMED = 64
};

typedef struct {
    uint8_t *data;
    uint32_t len;
    uint16_t dev;
    int16_t out;              /* -1 drop, -2 flood, >= 0 device */
    uint64_t time;
    uint16_t l3, l4, payload; /* offsets */
    uint8_t flags, proto;
    uint8_t has_set, keylen;
    uint32_t rss;             /* Toeplitz hash (steering) */
    uint64_t khash;           /* table hash */
    uint64_t undo_serial;     /* header bytes saved for this attempt */
    uint64_t enq_ns;          /* paced mode: monotonic time the generator queued it (0: not timed) */
    uint8_t *copy_to;         /* the frame is handled more than once (laps, the paced pool): before
                               * the first rewrite it is copied here and data points to the copy */
    uint8_t key[NFOS_MAX_KEY];
} PktSlot;

typedef struct Packet {
    PyObject_HEAD
    PktSlot *slot;            /* NULL once the handler has returned */
    PyObject *views[4];       /* eth, ip, l4, icmp (owned; kept while the object is reused) */
    /* Borrowed, set per packet: read-only members (pkt.eth, pkt.ip, ..., pkt.dev,
     * pkt.dev_index), which CPython loads as specialised slot reads; a header the
     * packet does not have is None. */
    PyObject *a_eth, *a_ip, *a_tcp, *a_udp, *a_l4, *a_icmp, *a_dev, *a_dev_index;
} Packet;

int packet_types_init(PyObject *m);
/* The slot of `o` if it is a packet whose handler is running, else NULL. */
PktSlot *packet_slot(PyObject *o);
/* Find the layer offsets and flags of s->data[0..len). */
void pkt_parse(PktSlot *s);
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
