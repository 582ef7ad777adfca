/* Packet view: zero-copy parsing and header accessors (hot path).
 *
 * pkt_parse() finds the layer offsets once (Ethernet with one 802.1Q tag,
 * IPv4 with options and fragments, TCP, UDP, ICMP, and the IPv4 header and
 * first 8 L4 bytes an ICMP error quotes); README.md lists when a frame is
 * malformed.  A frame a capture cut (wire > len) may have an IP length up to
 * its wire length, but the headers it exposes (a quote included) must have
 * been captured.  Python sees a Packet whose header views (pkt.eth, pkt.ip,
 * pkt.tcp / pkt.udp / pkt.l4, pkt.icmp and pkt.icmp.inner.ip / .l4 / .icmp)
 * read the frame bytes in place; a malformed frame (@nf.malformed) has no IP
 * or L4 view.  Setting an address, port, TTL, TOS, TCP flags or ICMP
 * identifier updates the IPv4, TCP/UDP and ICMP checksums incrementally
 * (RFC 1624, eqn. 3), or, for a checksum left to offload (a live frame's
 * VNET_NEEDS_CSUM), the pseudo-header sum the field holds; a quoted header's
 * setter also keeps the quoted IPv4 checksum and (where quoted) the quoted
 * TCP/UDP checksum.  The header bytes are saved in the undo log first, so an
 * aborted attempt leaves the frame as it arrived.
 */
#include "packet.h"

#include <structmember.h>

static PyTypeObject *Packet_Type;
static PyTypeObject *EthView_Type, *IPView_Type, *L4View_Type, *ICMPView_Type;
static PyTypeObject *Quote_Type, *QIPView_Type, *QL4View_Type, *QICMPView_Type;
enum { V_ETH, V_IP, V_L4, V_ICMP, V_QUOTE, V_QIP, V_QL4, V_QICMP };

/* ----------------------------------------------------------------- parse */

/* The IPv4 packet an ICMP error quotes, from q3 up to the end of the error's
 * IP packet (quotes are usually truncated: only the bytes needed are
 * checked, never the quoted total length nor any checksum). */
static void parse_quote(PktSlot *s, uint32_t q3, uint32_t end) {
    const uint8_t *d = s->data;
    if (q3 + 20 > end || (d[q3] >> 4) != 4) return;
    uint32_t qihl = (d[q3] & 0xf) * 4u;
    if (qihl < 20 || q3 + qihl > end) return;
    s->qflags = QF_IP;
    s->q3 = (uint16_t)q3;
    uint32_t q4 = q3 + qihl;
    s->q4 = (uint16_t)q4;
    uint16_t frag = rd16(d + q3 + 6);
    if (frag & 0x3fff) s->qflags |= QF_FRAG;
    if ((frag & 0x1fff) || q4 + 8 > end) return;   /* a later fragment, or fewer than 8 bytes of L4 */
    switch (d[q3 + 9]) {
    case 6: s->qflags |= QF_TCP; break;
    case 17: s->qflags |= QF_UDP; break;
    case 1: s->qflags |= QF_ICMP | (icmp_is_echo(d[q4]) ? QF_ECHO : 0); break;
    }
}

void pkt_parse(PktSlot *s) {
    const uint8_t *d = s->data;
    uint32_t len = s->len;
    if (s->wire < len) s->wire = len;
    s->flags = 0;
    s->proto = 0;
    s->l3 = s->l4 = s->payload = 0;
    s->q3 = s->q4 = 0;
    s->qflags = 0;
    if (len < 14) {
        s->flags = PF_MALFORMED;
        return;
    }
    uint16_t l3 = 14, etype = rd16(d + 12);
    if (etype == 0x8100) {
        if (len < 18) {
            s->flags = PF_MALFORMED;
            return;
        }
        s->flags |= PF_VLAN;
        etype = rd16(d + 16);
        l3 = 18;
    }
    s->l3 = l3;
    s->payload = l3;
    if (etype != 0x0800) return;   /* not IPv4: an orphan, no IP view */
    if (len < (uint32_t)l3 + 20u || (d[l3] >> 4) != 4) {
        s->flags |= PF_MALFORMED;
        return;
    }
    /* The IP length may reach past the captured bytes only in a frame the
     * capture cut (up to its wire length); the headers must be captured. */
    uint32_t ihl = (d[l3] & 0xf) * 4u, total = rd16(d + l3 + 2);
    if (ihl < 20 || total < ihl || l3 + ihl > len || l3 + total > s->wire) {
        s->flags |= PF_MALFORMED;   /* bad IHL, options cut off, or a total length beyond the frame */
        return;
    }
    s->flags |= PF_IP;
    s->proto = d[l3 + 9];
    uint16_t frag = rd16(d + l3 + 6);
    if (frag & 0x3fff) s->flags |= PF_FRAG;
    uint32_t l4 = l3 + ihl, end = l3 + total;
    s->l4 = (uint16_t)l4;
    s->payload = (uint16_t)l4;
    if (frag & 0x1fff) return;   /* a later fragment carries no L4 header */
    uint32_t room = end - l4;    /* L4 bytes by the IP length */
    uint32_t caught = len - l4;  /* L4 bytes captured */
    if (s->proto == 6) {
        uint32_t doff = room >= 13 && caught >= 13 ? (d[l4 + 12] >> 4) * 4u : 0;
        if (room >= 20 && doff >= 20 && doff <= room) {
            if (doff <= caught) {
                s->flags |= PF_TCP;
                s->payload = (uint16_t)(l4 + doff);
            } else {
                s->flags |= PF_MALFORMED;   /* the capture cut the TCP header */
            }
        } else if (!(s->flags & PF_FRAG) || (room >= 20 && caught < 13)) {
            s->flags |= PF_MALFORMED;   /* no room for the header (or it was cut before its length) */
        }
    } else if (s->proto == 17) {
        if (room >= 8 && caught >= 8) {
            s->flags |= PF_UDP;
            s->payload = (uint16_t)(l4 + 8);
        } else if (!(s->flags & PF_FRAG) || room >= 8) {
            s->flags |= PF_MALFORMED;
        }
    } else if (s->proto == 1) {
        if (room >= 8 && caught >= 8) {
            s->flags |= PF_ICMP;
            s->payload = (uint16_t)(l4 + 8);
            if (icmp_is_error(d[l4])) parse_quote(s, l4 + 8, end < len ? end : len);   /* what was captured */
        } else if (room >= 4 && caught >= 4) {
            s->flags |= PF_ICMP;
            s->payload = (uint16_t)(l4 + 4);
        }
    }
}

/* Where the IP packet ends by its length (past the captured bytes in a cut frame). */
static inline uint32_t ip_end(const PktSlot *s) {
    return (s->flags & PF_IP) ? s->l3 + rd16(s->data + s->l3 + 2) : s->len;
}

/* -------------------------------------------------------- checksum update */

static inline uint16_t csum_update16(uint16_t hc, uint16_t old, uint16_t new_) {
    uint32_t sum = (uint16_t)~hc + (uint16_t)~old + (uint32_t)new_;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static void csum_at(uint8_t *p, uint16_t old, uint16_t new_) { wr16(p, csum_update16(rd16(p), old, new_)); }

/* The L4 checksum covers the pseudo-header (addresses) and the ports.  A
 * zero UDP checksum means "none" and stays zero (RFC 768).  A checksum left
 * to offload (pkt_csum_partial) holds the pseudo-header sum itself, not its
 * complement: an address (`pseudo`) moves it by the same difference, and a
 * word of the L4 header does not touch it (the final sum will cover it). */
static void l4_csum_update(PktSlot *s, uint16_t old, uint16_t new_, int pseudo) {
    uint8_t *d = s->data;
    if (pkt_csum_partial(s)) {
        if (pseudo) {
            uint8_t *c = d + s->vnet.csum_start + s->vnet.csum_offset;
            wr16(c, (uint16_t)~csum_update16((uint16_t)~rd16(c), old, new_));
        }
        return;
    }
    if (s->flags & PF_TCP) {
        csum_at(d + s->l4 + 16, old, new_);
    } else if (s->flags & PF_UDP) {
        uint8_t *c = d + s->l4 + 6;
        if (rd16(c) == 0) return;
        uint16_t v = csum_update16(rd16(c), old, new_);
        wr16(c, v ? v : 0xffff);
    }
}

/* Before a header rewrite: save the bytes for an abort (once per attempt).  A
 * shared frame is first copied (*d: where the frame is now). */
static int prepare_write(PktSlot *s, uint8_t **d) {
    if (s->copy_to) {   /* a shared frame: rewrite a copy (kept for the retries of this batch) */
        memcpy(s->copy_to, s->data, s->len);
        s->data = s->copy_to;
        s->copy_to = NULL;
    }
    *d = s->data;
    if (s->undo_serial == proc.tx.serial) return 0;
    uint32_t n = s->payload + 4u;
    if (s->qflags && s->q4 + 20u > n) n = s->q4 + 20u;   /* a quoted header, up to a TCP checksum */
    if (n < 160u) n = 160u;
    if (n > s->len) n = s->len;
    if (tx_save_private(s->data, n) < 0) return -1;
    s->undo_serial = proc.tx.serial;
    return 0;
}

/* ----------------------------------------------------------------- Packet */

typedef struct {
    PyObject_HEAD
    Packet *pkt;   /* borrowed; cleared when the packet goes away */
} HdrView;

/* One packet object (and its header views) is reused from packet to packet
 * while no handler keeps a reference to it: no allocation per packet. */
static Packet *spare;
static PyObject *dev_ints[NFOS_MAX_DEVS];   /* pkt.dev_index values (owned) */

/* The header view `which` of p (created once; NULL: out of memory). */
static PyObject *view_slot(Packet *p, int which, PyTypeObject *tp) {
    if (!p->views[which]) {
        HdrView *v = (HdrView *)tp->tp_alloc(tp, 0);
        if (!v) return NULL;
        v->pkt = p;
        p->views[which] = (PyObject *)v;
    }
    return p->views[which];
}

PyObject *packet_new(PktSlot *s) {
    Packet *p = spare;
    if (p) {
        spare = NULL;
    } else {
        p = (Packet *)Packet_Type->tp_alloc(Packet_Type, 0);
        if (!p) return NULL;
    }
    p->slot = s;
    uint8_t f = s->flags;
    PyObject *none = Py_None;
    /* A malformed frame (seen by @nf.malformed) has an Ethernet view if its 14
     * bytes are there, and no IP or L4 view. */
    if (f & PF_MALFORMED) f = 0;
    p->a_eth = s->len >= 14 ? view_slot(p, V_ETH, EthView_Type) : none;
    p->a_ip = f & PF_IP ? view_slot(p, V_IP, IPView_Type) : none;
    PyObject *l4 = f & (PF_TCP | PF_UDP) ? view_slot(p, V_L4, L4View_Type) : none;
    p->a_tcp = f & PF_TCP ? l4 : none;
    p->a_udp = f & PF_UDP ? l4 : none;
    p->a_l4 = l4;
    p->a_icmp = f & PF_ICMP ? view_slot(p, V_ICMP, ICMPView_Type) : none;
    if (!p->a_eth || !p->a_ip || !l4 || !p->a_icmp) {
        p->slot = NULL;
        Py_DECREF(p);
        return NULL;
    }
    p->a_dev = proc.dev_names && s->dev < PyTuple_GET_SIZE(proc.dev_names) ? PyTuple_GET_ITEM(proc.dev_names, s->dev)
                                                                           : none;
    if (s->dev < NFOS_MAX_DEVS && !dev_ints[s->dev] && !(dev_ints[s->dev] = PyLong_FromLong(s->dev))) {
        p->slot = NULL;
        Py_DECREF(p);
        return NULL;
    }
    p->a_dev_index = s->dev < NFOS_MAX_DEVS ? dev_ints[s->dev] : none;
    return (PyObject *)p;
}

void packet_invalidate(PyObject *o) { ((Packet *)o)->slot = NULL; }

void packet_release(PyObject *o) {
    Packet *p = (Packet *)o;
    p->slot = NULL;
    if (spare || Py_REFCNT(o) != 1) {
        Py_DECREF(o);
        return;
    }
    for (int i = 0; i < (int)(sizeof p->views / sizeof p->views[0]); i++) {   /* a view the NF kept goes stale */
        PyObject *v = p->views[i];
        if (v && Py_REFCNT(v) != 1) {
            ((HdrView *)v)->pkt = NULL;
            p->views[i] = NULL;
            Py_DECREF(v);
        }
    }
    p->a_eth = p->a_ip = p->a_tcp = p->a_udp = p->a_l4 = p->a_icmp = p->a_dev = p->a_dev_index = NULL;
    spare = p;
}

PktSlot *packet_slot(PyObject *o) { return PyObject_TypeCheck(o, Packet_Type) ? ((Packet *)o)->slot : NULL; }

static void packet_dealloc(PyObject *o) {
    Packet *p = (Packet *)o;
    PyTypeObject *tp = Py_TYPE(o);
    for (int i = 0; i < (int)(sizeof p->views / sizeof p->views[0]); i++) {
        if (p->views[i]) {
            ((HdrView *)p->views[i])->pkt = NULL;
            Py_DECREF(p->views[i]);
        }
    }
    tp->tp_free(o);
    Py_DECREF(tp);
}

static PyObject *stale(void) {
    PyErr_SetString(PyExc_RuntimeError, "this packet's handler has returned; packets are valid only inside it");
    return NULL;
}

#define SLOT_OR_FAIL(p)                   \
    PktSlot *s = ((Packet *)(p))->slot;   \
    if (!s) return stale();

/* A new reference to the view `which` of p (the quoted headers' views, created on first use). */
static PyObject *view_of(Packet *p, int which, PyTypeObject *tp) {
    return Py_XNewRef(view_slot(p, which, tp));
}

static PyObject *pkt_get_time(PyObject *o, void *c) {
    SLOT_OR_FAIL(o);
    return PyLong_FromUnsignedLongLong(s->time);
}
static PyObject *pkt_get_len(PyObject *o, void *c) {
    SLOT_OR_FAIL(o);
    return PyLong_FromUnsignedLong(s->wire);
}
static PyObject *pkt_get_cut(PyObject *o, void *c) {
    SLOT_OR_FAIL(o);
    return PyBool_FromLong(s->wire > s->len);
}
static PyObject *pkt_get_payload(PyObject *o, void *c) {
    SLOT_OR_FAIL(o);
    if (s->flags & PF_MALFORMED) {   /* what follows the Ethernet header (and tag) */
        uint32_t at = s->len >= s->l3 ? s->l3 : s->len;
        return PyBytes_FromStringAndSize((char *)s->data + at, s->len - at);
    }
    uint32_t end = ip_end(s);
    if (end > s->len) end = s->len;   /* a cut frame: what was captured */
    return PyBytes_FromStringAndSize((char *)s->data + s->payload, end > s->payload ? end - s->payload : 0);
}
static PyObject *pkt_get_frame(PyObject *o, void *c) {
    SLOT_OR_FAIL(o);
    return PyBytes_FromStringAndSize((char *)s->data, s->len);
}
static PyObject *pkt_get_out(PyObject *o, void *c) {
    SLOT_OR_FAIL(o);
    if (s->out == -1) Py_RETURN_NONE;
    if (s->out == -2) return PyUnicode_FromString("*flood*");
    PyObject *n = PyTuple_GET_ITEM(proc.dev_names, s->out);
    Py_INCREF(n);
    return n;
}

static PyObject *pkt_send(PyObject *o, PyObject *dev) {
    SLOT_OR_FAIL(o);
    int d = dev_lookup(dev);
    if (d < 0) return NULL;
    s->out = (int16_t)d;
    Py_RETURN_NONE;
}
static PyObject *pkt_flood(PyObject *o, PyObject *noargs) {
    SLOT_OR_FAIL(o);
    s->out = -2;
    Py_RETURN_NONE;
}
static PyObject *pkt_drop(PyObject *o, PyObject *noargs) {
    SLOT_OR_FAIL(o);
    s->out = -1;
    Py_RETURN_NONE;
}

static PyObject *pkt_repr(PyObject *o) {
    Packet *p = (Packet *)o;
    if (!p->slot) return PyUnicode_FromString("<Packet (handler returned)>");
    PktSlot *s = p->slot;
    return PyUnicode_FromFormat("<Packet dev=%R len=%u time=%llu>", PyTuple_GET_ITEM(proc.dev_names, s->dev),
                                s->wire, (unsigned long long)s->time);
}

/* Members, not getters: CPython specialises a member load (LOAD_ATTR_SLOT);
 * each is set when the packet's handler starts (see Packet in packet.h). */
static PyMemberDef pkt_members[] = {
    {"eth", T_OBJECT_EX, offsetof(Packet, a_eth), READONLY, "Ethernet header view"},
    {"ip", T_OBJECT_EX, offsetof(Packet, a_ip), READONLY, "IPv4 header view, or None"},
    {"tcp", T_OBJECT_EX, offsetof(Packet, a_tcp), READONLY, "TCP header view, or None"},
    {"udp", T_OBJECT_EX, offsetof(Packet, a_udp), READONLY, "UDP header view, or None"},
    {"l4", T_OBJECT_EX, offsetof(Packet, a_l4), READONLY, "TCP or UDP header view, or None"},
    {"icmp", T_OBJECT_EX, offsetof(Packet, a_icmp), READONLY, "ICMP header view, or None"},
    {"dev", T_OBJECT_EX, offsetof(Packet, a_dev), READONLY, "input device name"},
    {"dev_index", T_OBJECT_EX, offsetof(Packet, a_dev_index), READONLY, "input device index"},
    {NULL}};

static PyGetSetDef pkt_getset[] = {
    {"time", pkt_get_time, NULL, "arrival time, ns", NULL},
    {"len", pkt_get_len, NULL, "frame length on the wire, in bytes (a cut frame's original length)", NULL},
    {"cut", pkt_get_cut, NULL, "True if the capture's snap length cut the frame (len > len(frame))", NULL},
    {"payload", pkt_get_payload, NULL, "bytes after the L4 (or IP) header, up to the IP length (as captured)", NULL},
    {"frame", pkt_get_frame, NULL, "a copy of the frame, as captured", NULL},
    {"out", pkt_get_out, NULL, "current output decision (None = drop)", NULL},
    {NULL}};

static PyMethodDef pkt_methods[] = {
    {"send", pkt_send, METH_O, "send(dev): output on device `dev` (name or index) at commit"},
    {"flood", pkt_flood, METH_NOARGS, "output on every device but the input one"},
    {"drop", pkt_drop, METH_NOARGS, "drop the packet (the default)"},
    {NULL}};

static PyType_Slot pkt_slots[] = {
    {Py_tp_dealloc, packet_dealloc}, {Py_tp_getset, pkt_getset}, {Py_tp_members, pkt_members},
    {Py_tp_methods, pkt_methods},
    {Py_tp_repr, pkt_repr}, {Py_tp_doc, "A packet being handled; valid only inside its handler."},
    {0, NULL}};
static PyType_Spec pkt_spec = {"nfos.Packet", sizeof(Packet), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
                               pkt_slots};

/* ------------------------------------------------------------ header views */

static void hdr_dealloc(PyObject *o) {
    PyTypeObject *tp = Py_TYPE(o);
    tp->tp_free(o);
    Py_DECREF(tp);
}

#define HDR_SLOT(o)                                              \
    HdrView *hv = (HdrView *)(o);                                \
    if (!hv->pkt || !hv->pkt->slot) return stale();             \
    PktSlot *s = hv->pkt->slot;                                  \
    uint8_t *d = s->data;
#define HDR_SLOT_SET(o)                                          \
    HdrView *hv = (HdrView *)(o);                                \
    if (!hv->pkt || !hv->pkt->slot) { stale(); return -1; }      \
    PktSlot *s = hv->pkt->slot;                                  \
    uint8_t *d = s->data;                                        \
    if (value == NULL) { PyErr_SetString(PyExc_AttributeError, "header fields cannot be deleted"); return -1; }

static int get_uint(PyObject *value, unsigned long long max, unsigned long long *out) {
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "header fields take ints, got %.80s", Py_TYPE(value)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (PyErr_Occurred() || v > max) {
        PyErr_Clear();
        PyErr_Format(PyExc_OverflowError, "value %R out of range 0..%llu", value, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* Ethernet */
static PyObject *eth_src(PyObject *o, void *c) { HDR_SLOT(o); (void)s; return PyLong_FromUnsignedLongLong(rd48(d + 6)); }
static PyObject *eth_dst(PyObject *o, void *c) { HDR_SLOT(o); (void)s; return PyLong_FromUnsignedLongLong(rd48(d)); }
static PyObject *eth_type(PyObject *o, void *c) {
    HDR_SLOT(o);
    return PyLong_FromLong(rd16(d + ((s->flags & PF_VLAN) ? 16 : 12)));
}
static PyObject *eth_vlan(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (!(s->flags & PF_VLAN)) Py_RETURN_NONE;
    return PyLong_FromLong(rd16(d + 14) & 0xfff);
}
static int eth_set_mac(PyObject *o, PyObject *value, void *c) {
    HDR_SLOT_SET(o);
    unsigned long long v;
    if (get_uint(value, 0xffffffffffffull, &v) < 0 || prepare_write(s, &d) < 0) return -1;
    uint8_t *p = d + (c ? 6 : 0);
    wr16(p, (uint16_t)(v >> 32));
    wr32(p + 2, (uint32_t)v);
    return 0;
}
static PyGetSetDef eth_getset[] = {
    {"src", eth_src, eth_set_mac, "source MAC (int)", (void *)1},
    {"dst", eth_dst, eth_set_mac, "destination MAC (int)", NULL},
    {"type", eth_type, NULL, "EtherType (after a VLAN tag)", NULL},
    {"vlan", eth_vlan, NULL, "802.1Q VLAN id, or None", NULL},
    {NULL}};

/* IPv4 */
#define IPH (d + s->l3)
static PyObject *ip_src(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromUnsignedLong(rd32(IPH + 12)); }
static PyObject *ip_dst(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromUnsignedLong(rd32(IPH + 16)); }
static PyObject *ip_proto(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(IPH[9]); }
static PyObject *ip_ttl(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(IPH[8]); }
static PyObject *ip_tos(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(IPH[1]); }
static PyObject *ip_len(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(IPH + 2)); }
static PyObject *ip_id(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(IPH + 4)); }
static PyObject *ip_ihl(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(IPH[0] & 0xf); }
static PyObject *ip_checksum(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(IPH + 10)); }
static PyObject *ip_fragment(PyObject *o, void *c) { HDR_SLOT(o); (void)d; return PyBool_FromLong(s->flags & PF_FRAG); }
static PyObject *ip_df(PyObject *o, void *c) { HDR_SLOT(o); return PyBool_FromLong(IPH[6] & 0x40); }
static PyObject *ip_mf(PyObject *o, void *c) { HDR_SLOT(o); return PyBool_FromLong(IPH[6] & 0x20); }
static PyObject *ip_frag_offset(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong((rd16(IPH + 6) & 0x1fff) * 8); }
static PyObject *ip_options(PyObject *o, void *c) {
    HDR_SLOT(o);
    return PyBytes_FromStringAndSize((char *)IPH + 20, (IPH[0] & 0xf) * 4 - 20);
}

static int ip_set_addr(PyObject *o, PyObject *value, void *c) {
    HDR_SLOT_SET(o);
    unsigned long long v;
    if (get_uint(value, 0xffffffffull, &v) < 0 || prepare_write(s, &d) < 0) return -1;
    uint8_t *p = IPH + (c ? 16 : 12);
    uint32_t old = rd32(p), nw = (uint32_t)v;
    wr32(p, nw);
    csum_at(IPH + 10, old >> 16, nw >> 16);
    csum_at(IPH + 10, old & 0xffff, nw & 0xffff);
    l4_csum_update(s, old >> 16, nw >> 16, 1);
    l4_csum_update(s, old & 0xffff, nw & 0xffff, 1);
    return 0;
}
static int ip_set_ttl(PyObject *o, PyObject *value, void *c) {
    HDR_SLOT_SET(o);
    unsigned long long v;
    if (get_uint(value, 255, &v) < 0 || prepare_write(s, &d) < 0) return -1;
    uint16_t old = rd16(IPH + 8);
    IPH[8] = (uint8_t)v;
    csum_at(IPH + 10, old, rd16(IPH + 8));
    return 0;
}
static int ip_set_tos(PyObject *o, PyObject *value, void *c) {
    HDR_SLOT_SET(o);
    unsigned long long v;
    if (get_uint(value, 255, &v) < 0 || prepare_write(s, &d) < 0) return -1;
    uint16_t old = rd16(IPH);
    IPH[1] = (uint8_t)v;
    csum_at(IPH + 10, old, rd16(IPH));
    return 0;
}
static PyGetSetDef ip_getset[] = {
    {"src", ip_src, ip_set_addr, "source address (int); setting it fixes checksums", NULL},
    {"dst", ip_dst, ip_set_addr, "destination address (int); setting it fixes checksums", (void *)1},
    {"proto", ip_proto, NULL, "protocol number", NULL},
    {"ttl", ip_ttl, ip_set_ttl, "time to live", NULL},
    {"tos", ip_tos, ip_set_tos, "type of service / DSCP+ECN byte", NULL},
    {"len", ip_len, NULL, "total length", NULL},
    {"id", ip_id, NULL, "identification", NULL},
    {"ihl", ip_ihl, NULL, "header length in 32-bit words", NULL},
    {"checksum", ip_checksum, NULL, "header checksum", NULL},
    {"fragment", ip_fragment, NULL, "True if this is a fragment (MF set or offset > 0)", NULL},
    {"df", ip_df, NULL, "don't-fragment flag", NULL},
    {"mf", ip_mf, NULL, "more-fragments flag", NULL},
    {"frag_offset", ip_frag_offset, NULL, "fragment offset in bytes", NULL},
    {"options", ip_options, NULL, "IPv4 options bytes", NULL},
    {NULL}};

/* TCP / UDP */
#define L4H (d + s->l4)
static PyObject *l4_sport(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(L4H)); }
static PyObject *l4_dport(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(L4H + 2)); }
static PyObject *l4_flags(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (!(s->flags & PF_TCP)) return PyLong_FromLong(0);
    return PyLong_FromLong(L4H[13]);
}
static PyObject *l4_seq(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (!(s->flags & PF_TCP)) Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(rd32(L4H + 4));
}
static PyObject *l4_ack(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (!(s->flags & PF_TCP)) Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(rd32(L4H + 8));
}
static PyObject *l4_window(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (!(s->flags & PF_TCP)) Py_RETURN_NONE;
    return PyLong_FromLong(rd16(L4H + 14));
}
static PyObject *l4_checksum(PyObject *o, void *c) {
    HDR_SLOT(o);
    return PyLong_FromLong(rd16(L4H + ((s->flags & PF_TCP) ? 16 : 6)));
}
static PyObject *l4_len(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (s->flags & PF_UDP) return PyLong_FromLong(rd16(L4H + 4));
    return PyLong_FromLong(ip_end(s) - s->l4);
}
static int l4_set_port(PyObject *o, PyObject *value, void *c) {
    HDR_SLOT_SET(o);
    unsigned long long v;
    if (get_uint(value, 0xffff, &v) < 0 || prepare_write(s, &d) < 0) return -1;
    uint8_t *p = L4H + (c ? 2 : 0);
    uint16_t old = rd16(p);
    wr16(p, (uint16_t)v);
    l4_csum_update(s, old, (uint16_t)v, 0);
    return 0;
}
static int l4_set_flags(PyObject *o, PyObject *value, void *c) {
    HDR_SLOT_SET(o);
    if (!(s->flags & PF_TCP)) {
        PyErr_SetString(PyExc_AttributeError, "only TCP has flags");
        return -1;
    }
    unsigned long long v;
    if (get_uint(value, 255, &v) < 0 || prepare_write(s, &d) < 0) return -1;
    uint16_t old = rd16(L4H + 12);
    L4H[13] = (uint8_t)v;
    l4_csum_update(s, old, rd16(L4H + 12), 0);
    return 0;
}
static PyGetSetDef l4_getset[] = {
    {"sport", l4_sport, l4_set_port, "source port; setting it fixes the checksum", NULL},
    {"dport", l4_dport, l4_set_port, "destination port; setting it fixes the checksum", (void *)1},
    {"flags", l4_flags, l4_set_flags, "TCP flags byte (0 for UDP)", NULL},
    {"seq", l4_seq, NULL, "TCP sequence number", NULL},
    {"ack", l4_ack, NULL, "TCP acknowledgement number", NULL},
    {"window", l4_window, NULL, "TCP window", NULL},
    {"checksum", l4_checksum, NULL, "L4 checksum", NULL},
    {"len", l4_len, NULL, "UDP length, or TCP header+payload length", NULL},
    {NULL}};

/* ICMP */
/* Change the 16-bit word at offset `at` of the ICMP message (an even offset
 * from its start), keeping the ICMP checksum valid (RFC 1624). */
static void icmp_put16(PktSlot *s, uint32_t at, uint16_t v) {
    uint8_t *d = s->data;
    uint16_t old = rd16(d + at);
    wr16(d + at, v);
    csum_at(d + s->l4 + 2, old, v);
}
/* Fold a change of one word (old -> new_) into the checksum at `c`, a word of
 * the ICMP message (so the ICMP checksum follows too). */
static void icmp_csum_fold(PktSlot *s, uint32_t c, uint16_t old, uint16_t new_) {
    icmp_put16(s, c, csum_update16(rd16(s->data + c), old, new_));
}
static inline int icmp_has_header(const PktSlot *s) { return s->payload >= s->l4 + 8; }
/* Queries carry an identifier and a sequence number: echo, timestamp,
 * information and address mask requests and replies (RFC 792, RFC 950). */
static inline int icmp_is_query(uint8_t t) { return icmp_is_echo(t) || (t >= 13 && t <= 18); }

static PyObject *icmp_type(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(L4H[0]); }
static PyObject *icmp_code(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(L4H[1]); }
static PyObject *icmp_checksum(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(L4H + 2)); }
static PyObject *icmp_id(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (!icmp_has_header(s) || !icmp_is_query(L4H[0])) Py_RETURN_NONE;
    return PyLong_FromLong(rd16(L4H + 4));
}
static PyObject *icmp_seq(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (!icmp_has_header(s) || !icmp_is_query(L4H[0])) Py_RETURN_NONE;
    return PyLong_FromLong(rd16(L4H + 6));
}
static PyObject *icmp_mtu(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (!icmp_has_header(s) || L4H[0] != ICMP_UNREACH || L4H[1] != 4) Py_RETURN_NONE;
    return PyLong_FromLong(rd16(L4H + 6));   /* next-hop MTU (RFC 1191); 0 from an older router */
}
/* 1 if the one's complement sum of d[from..to) is all ones: a valid checksum inside (RFC 1071). */
static int csum_verifies(const uint8_t *d, uint32_t from, uint32_t to) {
    uint64_t sum = 0;
    uint32_t i = from;
    for (; i + 1 < to; i += 2) sum += rd16(d + i);
    if (i < to) sum += (uint32_t)d[i] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
}
static PyObject *icmp_checksum_ok(PyObject *o, void *c) {
    HDR_SLOT(o);
    (void)d;
    return PyBool_FromLong(csum_verifies(s->data, s->l4, ip_end(s)));
}
static PyObject *icmp_inner(PyObject *o, void *c) {
    HDR_SLOT(o);
    (void)d;
    if (!(s->qflags & QF_IP)) Py_RETURN_NONE;
    return view_of(hv->pkt, V_QUOTE, Quote_Type);
}
static int icmp_set_id(PyObject *o, PyObject *value, void *c) {
    HDR_SLOT_SET(o);
    if (!icmp_has_header(s) || !icmp_is_query(L4H[0])) {
        PyErr_SetString(PyExc_AttributeError, "only an ICMP query (echo, timestamp, ...) has an identifier");
        return -1;
    }
    unsigned long long v;
    if (get_uint(value, 0xffff, &v) < 0 || prepare_write(s, &d) < 0) return -1;
    icmp_put16(s, s->l4 + 4, (uint16_t)v);
    return 0;
}
static PyGetSetDef icmp_getset[] = {
    {"type", icmp_type, NULL, "ICMP type", NULL},
    {"code", icmp_code, NULL, "ICMP code", NULL},
    {"checksum", icmp_checksum, NULL, "ICMP checksum", NULL},
    {"checksum_ok", icmp_checksum_ok, NULL, "True if the checksum verifies over the whole message", NULL},
    {"id", icmp_id, icmp_set_id, "a query's identifier (echo: types 8 and 0), else None; setting it fixes the checksum",
     NULL},
    {"seq", icmp_seq, NULL, "a query's sequence number, else None", NULL},
    {"mtu", icmp_mtu, NULL, "fragmentation needed (type 3, code 4): the next-hop MTU (RFC 1191), else None", NULL},
    {"inner", icmp_inner, NULL, "an error's quoted packet (.ip, .l4, .icmp), or None", NULL},
    {NULL}};

/* The quote of an ICMP error (pkt.icmp.inner) and its header views.  A
 * setter rewrites the quoted header and keeps three checksums valid: the
 * quoted IPv4 header's, the quoted TCP/UDP (or ICMP) checksum when it lies
 * inside the quote, and the error's own ICMP checksum (RFC 1624 each). */
#define QIPH (d + s->q3)
#define QL4H (d + s->q4)
static PyObject *quote_ip(PyObject *o, void *c) {
    HDR_SLOT(o);
    (void)d;
    (void)s;
    return view_of(hv->pkt, V_QIP, QIPView_Type);
}
static PyObject *quote_l4_of(PyObject *o, uint8_t want) {
    HDR_SLOT(o);
    (void)d;
    if (!(s->qflags & want)) Py_RETURN_NONE;
    return view_of(hv->pkt, V_QL4, QL4View_Type);
}
static PyObject *quote_l4(PyObject *o, void *c) { return quote_l4_of(o, QF_TCP | QF_UDP); }
static PyObject *quote_tcp(PyObject *o, void *c) { return quote_l4_of(o, QF_TCP); }
static PyObject *quote_udp(PyObject *o, void *c) { return quote_l4_of(o, QF_UDP); }
static PyObject *quote_icmp(PyObject *o, void *c) {
    HDR_SLOT(o);
    (void)d;
    if (!(s->qflags & QF_ICMP)) Py_RETURN_NONE;
    return view_of(hv->pkt, V_QICMP, QICMPView_Type);
}
static PyObject *quote_len(PyObject *o, void *c) {
    HDR_SLOT(o);
    (void)d;
    return PyLong_FromLong(ip_end(s) - s->q3);
}
static PyGetSetDef quote_getset[] = {
    {"ip", quote_ip, NULL, "the quoted IPv4 header", NULL},
    {"l4", quote_l4, NULL, "the quoted TCP or UDP header (its first 8 bytes at least), or None", NULL},
    {"tcp", quote_tcp, NULL, "the quoted TCP header, or None", NULL},
    {"udp", quote_udp, NULL, "the quoted UDP header, or None", NULL},
    {"icmp", quote_icmp, NULL, "the quoted ICMP header, or None", NULL},
    {"len", quote_len, NULL, "bytes quoted (from the quoted IPv4 header to the end of the error)", NULL},
    {NULL}};

/* The quoted TCP/UDP checksum follows a change of one word of its pseudo-header
 * or header: TCP when 18 bytes of it are quoted, UDP unless it is 0 ("none"). */
static void quoted_l4_update(PktSlot *s, uint16_t old, uint16_t new_) {
    uint8_t *d = s->data;
    if (s->qflags & QF_TCP) {
        if (s->q4 + 18u <= ip_end(s)) icmp_csum_fold(s, s->q4 + 16, old, new_);
    } else if (s->qflags & QF_UDP) {
        uint16_t c = rd16(QL4H + 6);
        if (c == 0) return;
        uint16_t v = csum_update16(c, old, new_);
        icmp_put16(s, s->q4 + 6, v ? v : 0xffff);
    }
}

static PyObject *qip_src(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromUnsignedLong(rd32(QIPH + 12)); }
static PyObject *qip_dst(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromUnsignedLong(rd32(QIPH + 16)); }
static PyObject *qip_proto(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(QIPH[9]); }
static PyObject *qip_ttl(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(QIPH[8]); }
static PyObject *qip_tos(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(QIPH[1]); }
static PyObject *qip_len(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(QIPH + 2)); }
static PyObject *qip_id(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(QIPH + 4)); }
static PyObject *qip_ihl(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(QIPH[0] & 0xf); }
static PyObject *qip_checksum(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(QIPH + 10)); }
static PyObject *qip_checksum_ok(PyObject *o, void *c) {
    HDR_SLOT(o);
    return PyBool_FromLong(csum_verifies(d, s->q3, s->q4));
}
static PyObject *qip_fragment(PyObject *o, void *c) {
    HDR_SLOT(o);
    (void)d;
    return PyBool_FromLong(s->qflags & QF_FRAG);
}
static PyObject *qip_df(PyObject *o, void *c) { HDR_SLOT(o); return PyBool_FromLong(QIPH[6] & 0x40); }
static PyObject *qip_mf(PyObject *o, void *c) { HDR_SLOT(o); return PyBool_FromLong(QIPH[6] & 0x20); }
static PyObject *qip_frag_offset(PyObject *o, void *c) {
    HDR_SLOT(o);
    return PyLong_FromLong((rd16(QIPH + 6) & 0x1fff) * 8);
}
static PyObject *qip_options(PyObject *o, void *c) {
    HDR_SLOT(o);
    return PyBytes_FromStringAndSize((char *)QIPH + 20, (QIPH[0] & 0xf) * 4 - 20);
}
static int qip_set_addr(PyObject *o, PyObject *value, void *c) {
    HDR_SLOT_SET(o);
    unsigned long long v;
    if (get_uint(value, 0xffffffffull, &v) < 0 || prepare_write(s, &d) < 0) return -1;
    uint32_t at = s->q3 + (c ? 16 : 12);
    uint32_t old = rd32(d + at), nw = (uint32_t)v;
    icmp_put16(s, at, (uint16_t)(nw >> 16));
    icmp_put16(s, at + 2, (uint16_t)nw);
    icmp_csum_fold(s, s->q3 + 10, (uint16_t)(old >> 16), (uint16_t)(nw >> 16));
    icmp_csum_fold(s, s->q3 + 10, (uint16_t)old, (uint16_t)nw);
    quoted_l4_update(s, (uint16_t)(old >> 16), (uint16_t)(nw >> 16));
    quoted_l4_update(s, (uint16_t)old, (uint16_t)nw);
    return 0;
}
static PyGetSetDef qip_getset[] = {
    {"src", qip_src, qip_set_addr, "quoted source address (int); setting it fixes the checksums", NULL},
    {"dst", qip_dst, qip_set_addr, "quoted destination address (int); setting it fixes the checksums", (void *)1},
    {"proto", qip_proto, NULL, "quoted protocol number", NULL},
    {"ttl", qip_ttl, NULL, "quoted time to live", NULL},
    {"tos", qip_tos, NULL, "quoted type of service", NULL},
    {"len", qip_len, NULL, "quoted total length (of the original packet, not of the quote)", NULL},
    {"id", qip_id, NULL, "quoted identification", NULL},
    {"ihl", qip_ihl, NULL, "quoted header length in 32-bit words", NULL},
    {"checksum", qip_checksum, NULL, "quoted header checksum", NULL},
    {"checksum_ok", qip_checksum_ok, NULL, "True if the quoted header checksum verifies", NULL},
    {"fragment", qip_fragment, NULL, "True if the quoted packet is a fragment", NULL},
    {"df", qip_df, NULL, "quoted don't-fragment flag", NULL},
    {"mf", qip_mf, NULL, "quoted more-fragments flag", NULL},
    {"frag_offset", qip_frag_offset, NULL, "quoted fragment offset in bytes", NULL},
    {"options", qip_options, NULL, "quoted IPv4 options bytes", NULL},
    {NULL}};

static PyObject *ql4_sport(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(QL4H)); }
static PyObject *ql4_dport(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(QL4H + 2)); }
static PyObject *ql4_checksum(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (s->qflags & QF_UDP) return PyLong_FromLong(rd16(QL4H + 6));
    if (s->q4 + 18u > ip_end(s)) Py_RETURN_NONE;   /* TCP's is not quoted */
    return PyLong_FromLong(rd16(QL4H + 16));
}
static int ql4_set_port(PyObject *o, PyObject *value, void *c) {
    HDR_SLOT_SET(o);
    unsigned long long v;
    if (get_uint(value, 0xffff, &v) < 0 || prepare_write(s, &d) < 0) return -1;
    uint32_t at = s->q4 + (c ? 2 : 0);
    uint16_t old = rd16(d + at);
    icmp_put16(s, at, (uint16_t)v);
    quoted_l4_update(s, old, (uint16_t)v);
    return 0;
}
static PyGetSetDef ql4_getset[] = {
    {"sport", ql4_sport, ql4_set_port, "quoted source port; setting it fixes the checksums", NULL},
    {"dport", ql4_dport, ql4_set_port, "quoted destination port; setting it fixes the checksums", (void *)1},
    {"checksum", ql4_checksum, NULL, "quoted TCP/UDP checksum, or None where the quote ends before it", NULL},
    {NULL}};

static PyObject *qicmp_type(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(QL4H[0]); }
static PyObject *qicmp_code(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(QL4H[1]); }
static PyObject *qicmp_checksum(PyObject *o, void *c) { HDR_SLOT(o); return PyLong_FromLong(rd16(QL4H + 2)); }
static PyObject *qicmp_id(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (!icmp_is_query(QL4H[0])) Py_RETURN_NONE;
    return PyLong_FromLong(rd16(QL4H + 4));
}
static PyObject *qicmp_seq(PyObject *o, void *c) {
    HDR_SLOT(o);
    if (!icmp_is_query(QL4H[0])) Py_RETURN_NONE;
    return PyLong_FromLong(rd16(QL4H + 6));
}
static int qicmp_set_id(PyObject *o, PyObject *value, void *c) {
    HDR_SLOT_SET(o);
    if (!icmp_is_query(QL4H[0])) {
        PyErr_SetString(PyExc_AttributeError, "only an ICMP query (echo, timestamp, ...) has an identifier");
        return -1;
    }
    unsigned long long v;
    if (get_uint(value, 0xffff, &v) < 0 || prepare_write(s, &d) < 0) return -1;
    uint16_t old = rd16(QL4H + 4);
    icmp_put16(s, s->q4 + 4, (uint16_t)v);
    icmp_csum_fold(s, s->q4 + 2, old, (uint16_t)v);
    return 0;
}
static PyGetSetDef qicmp_getset[] = {
    {"type", qicmp_type, NULL, "quoted ICMP type", NULL},
    {"code", qicmp_code, NULL, "quoted ICMP code", NULL},
    {"checksum", qicmp_checksum, NULL, "quoted ICMP checksum", NULL},
    {"id", qicmp_id, qicmp_set_id, "a quoted query's identifier, else None; setting it fixes the checksums", NULL},
    {"seq", qicmp_seq, NULL, "a quoted query's sequence number, else None", NULL},
    {NULL}};

#define VIEW_SPEC(NAME, GETSET, DOC)                                                              \
    static PyType_Slot NAME##_slots[] = {{Py_tp_dealloc, hdr_dealloc}, {Py_tp_getset, GETSET},     \
                                         {Py_tp_getattro, descr_getattro},                        \
                                         {Py_tp_doc, DOC}, {0, NULL}};                            \
    static PyType_Spec NAME##_spec = {"nfos." #NAME, sizeof(HdrView), 0,                          \
                                      Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |             \
                                          Py_TPFLAGS_DISALLOW_INSTANTIATION,                      \
                                      NAME##_slots};
VIEW_SPEC(EthHeader, eth_getset, "Ethernet header of a packet")
VIEW_SPEC(IPv4Header, ip_getset, "IPv4 header of a packet")
VIEW_SPEC(L4Header, l4_getset, "TCP or UDP header of a packet")
VIEW_SPEC(ICMPHeader, icmp_getset, "ICMP header of a packet")
VIEW_SPEC(ICMPQuote, quote_getset, "The packet an ICMP error quotes: its IPv4 header and the start of its L4 header")
VIEW_SPEC(QuotedIPv4Header, qip_getset, "The IPv4 header an ICMP error quotes")
VIEW_SPEC(QuotedL4Header, ql4_getset, "The TCP or UDP header (its first 8 bytes at least) an ICMP error quotes")
VIEW_SPEC(QuotedICMPHeader, qicmp_getset, "The ICMP header an ICMP error quotes")

int packet_types_init(PyObject *m) {
    Packet_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &pkt_spec, NULL);
    EthView_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &EthHeader_spec, NULL);
    IPView_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &IPv4Header_spec, NULL);
    L4View_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &L4Header_spec, NULL);
    ICMPView_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &ICMPHeader_spec, NULL);
    Quote_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &ICMPQuote_spec, NULL);
    QIPView_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &QuotedIPv4Header_spec, NULL);
    QL4View_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &QuotedL4Header_spec, NULL);
    QICMPView_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &QuotedICMPHeader_spec, NULL);
    if (!Packet_Type || !EthView_Type || !IPView_Type || !L4View_Type || !ICMPView_Type || !Quote_Type ||
        !QIPView_Type || !QL4View_Type || !QICMPView_Type)
        return -1;
    PyModule_AddObjectRef(m, "Packet", (PyObject *)Packet_Type);
    PyModule_AddObjectRef(m, "EthHeader", (PyObject *)EthView_Type);
    PyModule_AddObjectRef(m, "IPv4Header", (PyObject *)IPView_Type);
    PyModule_AddObjectRef(m, "L4Header", (PyObject *)L4View_Type);
    PyModule_AddObjectRef(m, "ICMPHeader", (PyObject *)ICMPView_Type);
    PyModule_AddObjectRef(m, "ICMPQuote", (PyObject *)Quote_Type);
    PyModule_AddObjectRef(m, "QuotedIPv4Header", (PyObject *)QIPView_Type);
    PyModule_AddObjectRef(m, "QuotedL4Header", (PyObject *)QL4View_Type);
    PyModule_AddObjectRef(m, "QuotedICMPHeader", (PyObject *)QICMPView_Type);
    return 0;
}
