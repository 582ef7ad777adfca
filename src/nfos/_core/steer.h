/* Layer 5: packet-set keys and software RSS (steer.c). */
#ifndef NFOS_STEER_H
#define NFOS_STEER_H

#include "packet.h"

/* Header fields a packet-set definition lists (module constants KF_*). */
#define NFOS_KEY_FIELDS(X) X(ETH_SRC) X(ETH_DST) X(IP_SRC) X(IP_DST) X(PROTO) X(SPORT) X(DPORT)
enum key_field {
#define KEY_FIELD_ENUM(f) KF_##f,
    NFOS_KEY_FIELDS(KEY_FIELD_ENUM)
#undef KEY_FIELD_ENUM
    KF_NFIELDS
};

#define STEER_MAX_FIELDS 12
typedef struct {
    int defined;
    int nfields;
    uint8_t fields[STEER_MAX_FIELDS];
    uint8_t ports, proto;   /* the fields include a port / the protocol (set by steer_configure) */
} DevSetDef;

/* The NF's packet-set definitions (one per device), its protocol classes
 * (bit per class: 1 tcp, 2 udp, 4 icmp, 8 other IP; 0: any), the RSS key
 * (NULL: the standard 40-byte key) and the number of workers. */
void steer_configure(const DevSetDef *defs, int ndevs, uint32_t proto_mask, const uint8_t *rss_key, int keylen,
                     int nworkers);
int steer_has_sets(void);
void steer_reset(void);   /* no definitions (the NF was unloaded) */
/* The key, its table hash and its RSS hash of a parsed packet (has_set: it
 * matches a definition; else an orphan, with a hash of its address pair). */
void set_key_extract(PktSlot *s);
/* The worker RSS picks: the indirection table at the hash (0 without workers). */
int steer_worker(const PktSlot *s);

/* ------------------------------------------------ RSS++ rebalancing (replay)
 * The indirection table has STEER_RETA buckets; a key's bucket is its
 * Toeplitz hash & (STEER_RETA - 1).  steer_set_reta() replaces the table
 * (round robin after steer_configure). */
#define STEER_RETA 128
static inline int steer_bucket(const PktSlot *s) { return (int)(s->rss & (STEER_RETA - 1)); }
int steer_key_bucket(const uint8_t *key, int keylen);
void steer_get_reta(uint32_t *table);
void steer_set_reta(const uint32_t *table);

typedef struct {
    uint8_t bucket, from, to, pad;
} RsMove;

/* RSS++'s greedy (Barbette et al., CoNEXT'19), on per-bucket loads (the
 * replay: packets per epoch, smoothed over epochs, RSS_EWMA): while the busiest
 * worker's load exceeds the mean by more than RSS_THRESHOLD, move its bucket
 * whose load is nearest half the gap to the least busy worker (below the gap:
 * every move lowers the maximum), each bucket at most once, at most max_moves
 * times.  Applies the moves to `table` and returns how many (in `moves`).
 * The threshold and the smoothing keep buckets from moving back and forth on
 * an epoch's noise: each move is a migration the two workers wait for. */
#define RSS_EWMA 0.3
#define RSS_THRESHOLD 0.02
int rsspp_plan(const double *load_of_bucket, uint32_t *table, int nworkers, int max_moves, RsMove *moves);
uint32_t toeplitz_hash(const uint8_t *key, int len);

#endif
