/* Layer 5: a worker's packet-set table (pktset.c). */
#ifndef NFOS_PKTSET_H
#define NFOS_PKTSET_H

#include "steer.h"

/* One table per slot, in the arena (before the fork); -1: exception set. */
int pst_alloc_all(uint32_t nslots, uint32_t capacity, uint32_t state_size);
/* This process uses slot's table (-1: none). */
void pst_select(int slot);
uint32_t pst_capacity(void);
int32_t pst_lookup(const PktSlot *s);
int32_t pst_insert(const PktSlot *s);   /* -1: full; -2: exception set */
void pst_remove(int32_t id);
char *pst_state(int32_t id);
uint64_t pst_last_seen(int32_t id);
void pst_touch(int32_t id, uint64_t now);
int32_t pst_oldest(void);               /* least recently seen, or -1 */
int32_t pst_next_lru(int32_t id);       /* the next younger, or -1 */
uint32_t pst_count(void);

/* Migration (RSS++ rebalancing, outside any transaction).  A record is a set's
 * key, table hash, last-seen time and state, addressed to a worker;
 * pst_migrant_size() bytes each. */
size_t pst_migrant_size(void);
uint32_t pst_table_capacity(void);   /* sets per worker (any slot's table) */
/* Move every set of this worker whose RSS bucket b has dest[b] != UINT32_MAX
 * into `out` (room for `cap` records), oldest first, and out of the table:
 * the number of records. */
uint32_t pst_export(const uint32_t *dest, char *out, uint32_t cap);
/* Add the records of `in` addressed to `me` to this worker's table, each at
 * its place in the LRU order (by last-seen time): the number added; a full
 * table drops the rest (*dropped counts them). */
uint32_t pst_import(const char *in, uint32_t n, uint32_t me, uint32_t *dropped);

#endif
