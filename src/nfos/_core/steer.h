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
uint32_t toeplitz_hash(const uint8_t *key, int len);

#endif
