/* Packet-set keys and software RSS (hot path).
 *
 * A packet-set definition lists header fields per input device, in order.
 * The key is those fields' bytes concatenated in that order (plus the IP
 * protocol when ports are used), so a LAN packet A->B and the WAN reply
 * B->A, declared with reversed fields, produce the same key.  With "icmp"
 * in the definition's protocols, ICMP belongs to sessions: an echo request
 * or reply uses its identifier as both ports, and an error takes its key
 * from the header it quotes with source and destination swapped (the quoted
 * packet went the other way), so it lands on its session's worker and set
 * (io/bpf.py computes the same in the kernel).  Steering is
 * what a NIC does: a Toeplitz hash of the key (the standard Microsoft key,
 * or the symmetric 0x6D5A key) indexes a 128-entry indirection table.
 * The hash is computed with one 256-entry table per key byte position.
 */
#include "steer.h"

#include <arpa/inet.h>

/* The NF's definitions and the hash tables: set by steer_configure. */
static DevSetDef defs[NFOS_MAX_DEVS];
static uint32_t proto_mask;
static int has_sets;
static int nworkers;
static uint32_t reta[STEER_RETA];
static uint32_t toeplitz[NFOS_MAX_KEY][256];

static const uint8_t default_rss_key[40] = {
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
    0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
    0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};

static void toeplitz_setup(const uint8_t *rss_key, int keylen) {
    if (!rss_key) {
        rss_key = default_rss_key;
        keylen = 40;
    }
    /* bit i of the (cyclically extended) key */
#define KEYBIT(i) ((rss_key[((i) / 8) % keylen] >> (7 - (i) % 8)) & 1)
    for (int p = 0; p < NFOS_MAX_KEY; p++) {
        for (int b = 0; b < 256; b++) {
            uint32_t h = 0;
            for (int bit = 0; bit < 8; bit++) {
                if (!(b & (0x80 >> bit))) continue;
                int start = p * 8 + bit;
                uint32_t window = 0;
                for (int k = 0; k < 32; k++) window = window << 1 | KEYBIT(start + k);
                h ^= window;
            }
            toeplitz[p][b] = h;
        }
    }
#undef KEYBIT
}

uint32_t toeplitz_hash(const uint8_t *key, int len) {
    uint32_t h = 0;
    for (int i = 0; i < len; i++) h ^= toeplitz[i][key[i]];
    return h;
}

static inline uint64_t key_hash64(const uint8_t *k, int len) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)len;
    int i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, k + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, k + i, len - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return h;
}

/* The protocol class (bit of the definition's protocol mask) of an IP
 * protocol number: fragments without an L4 header are classed by it too, as
 * the kernel fanout program does. */
static inline uint32_t proto_class(uint8_t proto) {
    switch (proto) {
    case 6: return 1;
    case 17: return 2;
    case 1: return 4;
    default: return 8;
    }
}

/* Where the key's address, port and protocol fields come from: the packet's
 * own headers, or (an ICMP error) the header it quotes, source and
 * destination swapped — the quoted packet travelled the other way. */
typedef struct {
    const uint8_t *src, *dst, *sport, *dport;
    uint8_t proto;
} KeySource;

/* ICMP of a definition whose protocols list "icmp": echo requests and replies
 * use the identifier as both ports; an error (type 3, 11, 12) is keyed by the
 * packet it quotes, if the quote has what the key needs and that packet's
 * protocol is one of the definition's.  0: an orphan. */
static int icmp_key_source(const PktSlot *s, int ports, KeySource *ks) {
    const uint8_t *d = s->data;
    int header = (s->flags & PF_ICMP) && s->payload >= s->l4 + 8;
    uint8_t type = header ? d[s->l4] : 0xff;
    if (header && icmp_is_echo(type)) {
        ks->sport = ks->dport = d + s->l4 + 4;
        return 1;
    }
    if (header && icmp_is_error(type)) {
        if (!(s->qflags & QF_IP) || (ports && !(s->qflags & QF_PORTS))) return 0;
        uint8_t qproto = d[s->q3 + 9];
        if (!(proto_class(qproto) & proto_mask)) return 0;
        ks->src = d + s->q3 + 16;
        ks->dst = d + s->q3 + 12;
        if (s->qflags & QF_ECHO) {
            ks->sport = ks->dport = d + s->q4 + 4;
        } else {
            ks->sport = d + s->q4 + 2;
            ks->dport = d + s->q4;
        }
        ks->proto = qproto;
        return 1;
    }
    return !ports;   /* any other ICMP: keyed by its addresses when the key has no ports */
}

void set_key_extract(PktSlot *s) {
    const uint8_t *d = s->data;
    s->has_set = 0;
    s->keylen = 0;
    if (s->flags & PF_MALFORMED) {
        s->rss = 0;
        return;
    }
    const DevSetDef *def = &defs[s->dev];
    if (has_sets && def->defined &&
        (!proto_mask || ((s->flags & PF_IP) && (proto_class(s->proto) & proto_mask)))) {
        KeySource ks = {0};
        if (s->flags & PF_IP) {
            ks.src = d + s->l3 + 12;
            ks.dst = d + s->l3 + 16;
            ks.proto = s->proto;
            if (s->flags & (PF_TCP | PF_UDP)) {
                ks.sport = d + s->l4;
                ks.dport = d + s->l4 + 2;
            } else if (s->proto == 1 && (proto_mask & 4) && !icmp_key_source(s, def->ports, &ks)) {
                goto orphan;
            }
        }
        uint8_t *k = s->key;
        int n = 0;
        for (int i = 0; i < def->nfields; i++) {
            switch (def->fields[i]) {
            case KF_ETH_SRC: memcpy(k + n, d + 6, 6); n += 6; break;
            case KF_ETH_DST: memcpy(k + n, d, 6); n += 6; break;
            case KF_IP_SRC:
                if (!ks.src) goto orphan;
                memcpy(k + n, ks.src, 4); n += 4; break;
            case KF_IP_DST:
                if (!ks.dst) goto orphan;
                memcpy(k + n, ks.dst, 4); n += 4; break;
            case KF_PROTO:
                if (!(s->flags & PF_IP)) goto orphan;
                k[n++] = ks.proto; break;
            case KF_SPORT:
                if (!ks.sport) goto orphan;
                memcpy(k + n, ks.sport, 2); n += 2; break;
            case KF_DPORT:
                if (!ks.dport) goto orphan;
                memcpy(k + n, ks.dport, 2); n += 2; break;
            }
        }
        if (def->ports && !def->proto) k[n++] = ks.proto;   /* TCP and UDP sessions differ */
        s->keylen = (uint8_t)n;
        s->has_set = 1;
        s->rss = toeplitz_hash(k, n);
        s->khash = key_hash64(k, n);
        return;
    }
orphan:;
    /* Orphans are spread evenly: hash the address pair, the same way for
     * both directions, so a NIC could do it too. */
    uint8_t tmp[13];
    int n;
    if (s->flags & PF_IP) {
        uint32_t a, b;
        memcpy(&a, d + s->l3 + 12, 4);
        memcpy(&b, d + s->l3 + 16, 4);
        if (ntohl(a) > ntohl(b)) { uint32_t t = a; a = b; b = t; }   /* as the BPF program compares */
        memcpy(tmp, &a, 4);
        memcpy(tmp + 4, &b, 4);
        tmp[8] = s->proto;
        n = 9;
    } else {
        uint64_t a = 0, b = 0;
        memcpy(&a, d, 6);
        memcpy(&b, d + 6, 6);
        if (a > b) { uint64_t t = a; a = b; b = t; }
        memcpy(tmp, &a, 6);
        memcpy(tmp + 6, &b, 6);
        n = 12;
    }
    s->rss = toeplitz_hash(tmp, n);
}

void steer_configure(const DevSetDef *d, int ndevs, uint32_t mask, const uint8_t *rss_key, int keylen, int workers) {
    has_sets = 0;
    for (int i = 0; i < ndevs && i < NFOS_MAX_DEVS; i++) {
        defs[i] = d[i];
        defs[i].ports = defs[i].proto = 0;
        for (int f = 0; f < d[i].nfields; f++) {
            if (d[i].fields[f] == KF_SPORT || d[i].fields[f] == KF_DPORT) defs[i].ports = 1;
            if (d[i].fields[f] == KF_PROTO) defs[i].proto = 1;
        }
        if (d[i].defined) has_sets = 1;
    }
    proto_mask = mask;
    toeplitz_setup(rss_key, keylen);
    nworkers = workers;
    for (int i = 0; i < STEER_RETA; i++) reta[i] = workers > 0 ? (uint32_t)(i % workers) : 0;
}

int steer_key_bucket(const uint8_t *key, int keylen) { return (int)(toeplitz_hash(key, keylen) & (STEER_RETA - 1)); }
void steer_get_reta(uint32_t *table) { memcpy(table, reta, sizeof reta); }
void steer_set_reta(const uint32_t *table) { memcpy(reta, table, sizeof reta); }

int rsspp_plan(const double *est, uint32_t *table, int nworkers, int max_moves, RsMove *moves) {
    double load[NFOS_MAX_SLOTS] = {0}, total = 0;
    if (nworkers < 2) return 0;
    for (int b = 0; b < STEER_RETA; b++) {
        load[table[b] % (uint32_t)nworkers] += est[b];
        total += est[b];
    }
    double mean = total / nworkers;
    int n = 0;
    uint8_t moved[STEER_RETA] = {0};   /* a bucket moves at most once per epoch: its sets travel once */
    while (n < max_moves) {
        int hi = 0, lo = 0;
        for (int w = 1; w < nworkers; w++) {
            if (load[w] > load[hi]) hi = w;
            if (load[w] < load[lo]) lo = w;
        }
        if (mean <= 0 || load[hi] <= mean * (1 + RSS_THRESHOLD)) break;
        double gap = load[hi] - load[lo], best_err = 0;
        int best = -1;
        for (int b = 0; b < STEER_RETA; b++) {
            if ((int)table[b] != hi || moved[b] || est[b] <= 0 || est[b] >= gap) continue;
            double err = 2 * est[b] > gap ? 2 * est[b] - gap : gap - 2 * est[b];
            if (best < 0 || err < best_err) {
                best_err = err;
                best = b;
            }
        }
        if (best < 0) break;
        table[best] = (uint32_t)lo;
        moved[best] = 1;
        load[hi] -= est[best];
        load[lo] += est[best];
        moves[n++] = (RsMove){(uint8_t)best, (uint8_t)hi, (uint8_t)lo, 0};
    }
    return n;
}

int steer_has_sets(void) { return has_sets; }
void steer_reset(void) { has_sets = 0; }

int steer_worker(const PktSlot *s) {
    return nworkers > 0 ? (int)(reta[s->rss & (STEER_RETA - 1)] % (uint32_t)nworkers) : 0;
}
