/* A worker's packet-set table: key -> state, with an LRU list for expiry.
 *
 * Only its worker touches it, so it needs no synchronisation.  It lives in
 * the arena (allocated per slot before the fork) so that a later recovery
 * can hand a dead worker's sets to its replacement.  Inserts and removals
 * push undo records, so an aborted attempt also undoes its registrations
 * and expiries.  Buckets hold entry index + 1 (0 = empty), so freshly
 * mapped zero pages are an empty table.
 */
#include "pktset.h"

typedef struct {
    uint64_t khash;
    uint64_t last_seen;
    uint32_t hnext, prev, next;   /* index + 1; 0 = none */
    uint8_t keylen, used;
    uint16_t pad;
    uint8_t key[NFOS_MAX_KEY];
} PstEntry;

typedef struct {
    uint32_t capacity, state_size, bmask;
    uint32_t count, hwm, nfree;
    uint32_t lru_head, lru_tail;
    uint32_t *buckets, *free_stack;
    PstEntry *entries;
    char *states;
} PSTable;

static PSTable *tables;   /* one per slot, in the arena */
static PSTable *T;        /* this process's */

static inline PstEntry *E(uint32_t i) { return &T->entries[i]; }
char *pst_state(int32_t id) { return T->states + (size_t)id * T->state_size; }
uint64_t pst_last_seen(int32_t id) { return E(id)->last_seen; }
uint32_t pst_count(void) { return T ? T->count : 0; }
int32_t pst_oldest(void) { return T && T->lru_head ? (int32_t)T->lru_head - 1 : -1; }
uint32_t pst_capacity(void) { return T ? T->capacity : 0; }

int pst_alloc_all(uint32_t nslots, uint32_t capacity, uint32_t state_size) {
    tables = proc_alloc(sizeof(PSTable) * nslots, NFOS_CACHELINE);
    if (!tables) return -1;
    uint32_t nb = 1;
    while (nb < capacity) nb <<= 1;
    state_size = (state_size + 7) & ~7u;
    if (state_size == 0) state_size = 8;
    for (uint32_t s = 0; s < nslots; s++) {
        PSTable *t = &tables[s];
        t->capacity = capacity;
        t->state_size = state_size;
        t->bmask = nb - 1;
        t->buckets = proc_alloc(sizeof(uint32_t) * nb, NFOS_CACHELINE);
        t->free_stack = proc_alloc(sizeof(uint32_t) * capacity, NFOS_CACHELINE);
        t->entries = proc_alloc(sizeof(PstEntry) * capacity, NFOS_CACHELINE);
        t->states = proc_alloc((size_t)state_size * capacity, NFOS_CACHELINE);
        if (!t->buckets || !t->free_stack || !t->entries || !t->states) return -1;
    }
    return 0;
}

void pst_select(int slot) {
    if (slot < 0) tables = NULL;
    T = tables && slot >= 0 ? &tables[slot] : NULL;
}

int32_t pst_lookup(const PktSlot *s) {
    uint32_t i = T->buckets[s->khash & T->bmask];
    while (i) {
        PstEntry *e = E(i - 1);
        if (e->khash == s->khash && e->keylen == s->keylen && memcmp(e->key, s->key, s->keylen) == 0)
            return (int32_t)i - 1;
        i = e->hnext;
    }
    return -1;
}

static void lru_unlink(uint32_t id) {
    PstEntry *e = E(id);
    if (e->prev) E(e->prev - 1)->next = e->next; else T->lru_head = e->next;
    if (e->next) E(e->next - 1)->prev = e->prev; else T->lru_tail = e->prev;
    e->prev = e->next = 0;
}

static void lru_append(uint32_t id) {
    PstEntry *e = E(id);
    e->prev = T->lru_tail;
    e->next = 0;
    if (T->lru_tail) E(T->lru_tail - 1)->next = id + 1; else T->lru_head = id + 1;
    T->lru_tail = id + 1;
}

void pst_touch(int32_t id, uint64_t now) {
    PstEntry *e = E(id);
    e->last_seen = now;
    if (T->lru_tail != (uint32_t)id + 1) {
        lru_unlink(id);
        lru_append(id);
    }
}

static void link_entry(uint32_t id) {
    PstEntry *e = E(id);
    uint32_t *b = &T->buckets[e->khash & T->bmask];
    e->hnext = *b;
    *b = id + 1;
    e->used = 1;
    lru_append(id);
    T->count++;
}

static void unlink_entry(uint32_t id) {
    PstEntry *e = E(id);
    uint32_t *p = &T->buckets[e->khash & T->bmask];
    while (*p && *p != id + 1) p = &E(*p - 1)->hnext;
    if (*p) *p = e->hnext;
    lru_unlink(id);
    e->used = 0;
    T->count--;
}

static void free_push(uint32_t id) { T->free_stack[T->nfree++] = id; }

static int free_take(uint32_t id) {   /* remove a specific id from the free stack */
    for (uint32_t i = T->nfree; i-- > 0;) {
        if (T->free_stack[i] == id) {
            T->free_stack[i] = T->free_stack[--T->nfree];
            return 0;
        }
    }
    return -1;
}

static void undo_insert(void *payload) {
    uint32_t id;
    memcpy(&id, payload, 4);
    unlink_entry(id);
    free_push(id);
}

typedef struct {
    uint32_t id;
    uint32_t pad;
    PstEntry entry;
} RemovedHdr;   /* followed by the state bytes */

static void undo_remove(void *payload) {
    RemovedHdr *r = payload;
    if (free_take(r->id) < 0 && r->id >= T->hwm) T->hwm = r->id + 1;
    PstEntry *e = E(r->id);
    *e = r->entry;
    memcpy(pst_state((int32_t)r->id), r + 1, T->state_size);
    uint64_t seen = e->last_seen;
    link_entry(r->id);
    e->last_seen = seen;
}

int32_t pst_insert(const PktSlot *s) {
    uint32_t id;
    if (T->nfree) id = T->free_stack[--T->nfree];
    else if (T->hwm < T->capacity) id = T->hwm++;
    else return -1;
    PstEntry *e = E(id);
    e->khash = s->khash;
    e->keylen = s->keylen;
    memcpy(e->key, s->key, s->keylen);
    e->last_seen = proc.clock;
    memset(pst_state((int32_t)id), 0, T->state_size);
    link_entry(id);
    if (tx_push_undo(undo_insert, &id, 4) < 0) {
        unlink_entry(id);
        free_push(id);
        return -2;
    }
    return (int32_t)id;
}

void pst_remove(int32_t id) {
    char buf[sizeof(RemovedHdr) + 4096];
    RemovedHdr *r = (RemovedHdr *)buf;
    uint32_t ss = T->state_size <= 4096 ? T->state_size : 4096;
    r->id = (uint32_t)id;
    r->entry = *E(id);
    memcpy(r + 1, pst_state(id), ss);
    unlink_entry((uint32_t)id);
    free_push((uint32_t)id);
    tx_push_undo(undo_remove, buf, (uint32_t)(sizeof(RemovedHdr) + ss));
}

int32_t pst_next_lru(int32_t id) {
    uint32_t n = E(id)->next;
    return n ? (int32_t)n - 1 : -1;
}

/* ------------------------------------------------------------- migration */

typedef struct {
    uint64_t khash, last_seen;
    uint32_t dest;
    uint8_t keylen;
    uint8_t pad[3];
    uint8_t key[NFOS_MAX_KEY];
} Migrant;   /* followed by the state (state_size bytes) */

size_t pst_migrant_size(void) {
    const PSTable *t = T ? T : tables;   /* every slot's table has the same layout */
    return sizeof(Migrant) + (t ? t->state_size : 8);
}
uint32_t pst_table_capacity(void) {
    const PSTable *t = T ? T : tables;
    return t ? t->capacity : 0;
}

uint32_t pst_export(const uint32_t *dest, char *out, uint32_t cap) {
    uint32_t n = 0;
    size_t rec = pst_migrant_size();
    for (uint32_t i = T->lru_head; i && n < cap;) {
        uint32_t id = i - 1;
        PstEntry *e = E(id);
        i = e->next;
        uint32_t to = dest[steer_key_bucket(e->key, e->keylen)];
        if (to == UINT32_MAX) continue;
        Migrant *m = (Migrant *)(out + (size_t)n++ * rec);
        m->khash = e->khash;
        m->last_seen = e->last_seen;
        m->dest = to;
        m->keylen = e->keylen;
        memcpy(m->key, e->key, e->keylen);
        memcpy(m + 1, pst_state((int32_t)id), T->state_size);
        unlink_entry(id);
        free_push(id);
    }
    return n;
}

uint32_t pst_import(const char *in, uint32_t n, uint32_t me, uint32_t *dropped) {
    size_t rec = pst_migrant_size();
    uint32_t added = 0, cursor = T->lru_head;   /* records come oldest first: one merge pass */
    for (uint32_t k = 0; k < n; k++) {
        const Migrant *m = (const Migrant *)(in + (size_t)k * rec);
        if (m->dest != me) continue;
        uint32_t id;
        if (T->nfree) id = T->free_stack[--T->nfree];
        else if (T->hwm < T->capacity) id = T->hwm++;
        else {
            (*dropped)++;
            continue;
        }
        PstEntry *e = E(id);
        e->khash = m->khash;
        e->keylen = m->keylen;
        memcpy(e->key, m->key, m->keylen);
        memcpy(pst_state((int32_t)id), m + 1, T->state_size);
        link_entry(id);   /* appended at the young end ... */
        e->last_seen = m->last_seen;
        while (cursor && E(cursor - 1)->last_seen <= m->last_seen) cursor = E(cursor - 1)->next;
        if (cursor && cursor != id + 1) {   /* ... moved before the first younger set */
            lru_unlink(id);
            PstEntry *c = E(cursor - 1);
            e->prev = c->prev;
            e->next = cursor;
            if (c->prev) E(c->prev - 1)->next = id + 1; else T->lru_head = id + 1;
            c->prev = id + 1;
        }
        added++;
    }
    return added;
}
