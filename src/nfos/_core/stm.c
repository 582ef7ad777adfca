/* Software transactional memory over the arena (TL2 with LSA snapshot
 * extension, object granularity, redo log for crash recovery).
 *
 * Theory of operation
 * -------------------
 * A global version clock lives in the arena.  A transaction starts by
 * reading it (its snapshot `rv`).  Opening a shared object copies its payload
 * into a private buffer between two reads of the object's lock word; the copy
 * is consistent if both reads agree, the object is unlocked and its version
 * is <= rv.  Reads and writes of the handler then go to that copy, so a
 * handler never sees a torn or inconsistent state (opacity).  Meeting a
 * version newer than the snapshot does not abort at once: the transaction
 * re-validates everything it has read and, if nothing changed, moves its
 * snapshot forward (LSA, as TinySTM does) and copies the object again (a
 * commit numbered below the new snapshot may have locked it since the first
 * copy), so read-mostly transactions rarely abort.
 *
 * Commit of a transaction that wrote something:
 *   1. lock every written object with a CAS from exactly the version it
 *      copied (the lock word keeps the version and records the owner slot);
 *   2. take a write version wv = ++clock;
 *   3. unless wv == rv + 1 (nobody committed meanwhile), check that every
 *      object read is unlocked (or locked by us) at the version copied;
 *   4. append the new payloads to this slot's redo log in the arena and mark
 *      it WRITING, so a crash from here on can be completed by the control
 *      process (stm_recover_slot);
 *   5. copy the payloads back, then release each lock with version wv;
 *   6. mark the redo log IDLE.
 * A failure in 1 or 3 releases the locks taken and aborts.
 *
 * Private memory (packet-set state, packet bytes, merge caches, structural
 * changes of the worker's own packet-set table) is written in place with an
 * undo log, because no other process can see it.  The same undo log makes
 * TX_DIRECT mode: the sequential reference mode, init, and irrevocable
 * transactions write shared objects in place too.  An irrevocable
 * transaction first takes a global token and waits until no other slot is
 * inside a transaction; others wait at begin while the token is held.  So it
 * runs alone and cannot conflict, which guarantees progress.
 *
 * The tunables are in stm.h.  This file is Python-free (tests/c/test_stm.c
 * links it with base.c and arena.c alone).
 */
#include "stm.h"

#include <sched.h>
#include <stdlib.h>

/* Time spent inside the STM, for sampled transactions only (no clock reads otherwise). */
#define STM_TIMED_BEGIN(tx) uint64_t stm_t0_ = (tx)->sampled && !(tx)->t_commit ? mono_ns() : 0
#define STM_TIMED_END(tx)                                    \
    do {                                                     \
        if (stm_t0_) (tx)->stm_ns += mono_ns() - stm_t0_;    \
    } while (0)

/* ------------------------------------------------------------ shared state */

StmShared *stm_shared_create(Arena *a, uint32_t nslots) {
    StmShared *sh = arena_alloc(a, sizeof(StmShared) + (size_t)nslots * sizeof(StmSlot), NFOS_CACHELINE);
    if (!sh) return NULL;
    sh->nslots = nslots;
    atomic_store(&sh->clock, 1);
    return sh;
}

/* Release the locks `slot` holds among the objects its last commit logged. */
static void release_logged_locks(StmSlot *ss, uint32_t slot) {
    uint32_t n = atomic_load(&ss->nlocks);
    if (n > TX_MAX_ENTRIES) n = TX_MAX_ENTRIES;
    for (uint32_t i = 0; i < n; i++) {
        ObjHdr *o = ss->locks[i];
        if (!o) continue;
        uint64_t w = atomic_load(&o->lock);
        if ((w & LOCK_BIT) && LOCK_OWNER(w) == slot) atomic_store(&o->lock, LOCK_VERSION(w) << 8);
    }
    atomic_store(&ss->nlocks, 0);
}

int stm_recover_slot(StmShared *sh, uint32_t slot) {
    StmSlot *ss = &sh->slots[slot];
    int replayed = 0;
    if (atomic_load(&ss->redo_state) == REDO_WRITING && ss->redo_used) {
        uint32_t at = 0;
        while (at < ss->redo_used) {
            ObjHdr *obj;
            uint32_t size;
            memcpy(&obj, ss->redo + at, sizeof(void *));
            memcpy(&size, ss->redo + at + sizeof(void *), 4);
            memcpy(OBJ_DATA(obj), ss->redo + at + sizeof(void *) + 8, size);
            atomic_store(&obj->lock, ss->redo_version << 8);
            at += (uint32_t)(sizeof(void *) + 8 + ((size + 7) & ~7u));
            replayed++;
        }
    }
    release_logged_locks(ss, slot);   /* a commit that died before writing back, or unlogged */
    atomic_store(&ss->redo_state, REDO_IDLE);
    atomic_store(&ss->undo_last, 0);
    atomic_store(&ss->in_tx, 0);
    uint32_t owner = slot + 1;
    atomic_compare_exchange_strong(&sh->irrevocable, &owner, 0);
    return replayed;
}

typedef struct {
    uint32_t kind;   /* 0: memory restore, 1: callback */
    uint32_t size;
    void *ptr;       /* memory address, or the callback */
    uint32_t prev;   /* offset of the previous record + 1 (0: none) */
    uint32_t pad;
} UndoHdr;

int stm_recover_undo(StmShared *sh, uint32_t slot, const void *lo, const void *hi) {
    StmSlot *ss = &sh->slots[slot];
    if (atomic_load(&ss->redo_state) == REDO_WRITING) {   /* committed: completed from the redo log */
        atomic_store(&ss->undo_last, 0);
        return 0;
    }
    release_logged_locks(ss, slot);
    if (atomic_load(&ss->undo_overflow)) {
        atomic_store(&ss->undo_last, 0);
        return -1;
    }
    int n = 0;
    uint32_t at = atomic_load(&ss->undo_last);
    while (at && at <= UNDO_SHARED_BYTES) {
        UndoHdr *h = (UndoHdr *)(ss->undo + at - 1);
        if (h->kind == 0) {
            const char *p = h->ptr;
            if (p >= (const char *)lo && p + h->size <= (const char *)hi) memcpy(h->ptr, h + 1, h->size);
        } else {
            ((undo_fn)h->ptr)(h + 1);
        }
        n++;
        at = h->prev;
        atomic_store(&ss->undo_last, at);
    }
    atomic_store(&ss->undo_last, 0);
    return n;
}

/* ------------------------------------------------------------- descriptor */

int stm_tx_init(StmTx *tx) {
    memset(tx, 0, sizeof *tx);
    tx->cap = TX_MAX_ENTRIES;
    tx->entries = calloc(tx->cap, sizeof(TxEntry));
    tx->hmask = TX_HASH_MIN - 1;
    tx->htab = calloc(TX_HASH_MAX, sizeof(uint32_t));
    tx->copy_cap = TX_COPY_BYTES;
    tx->copybuf = malloc(tx->copy_cap);
    tx->undo_priv_cap = tx->undo_cap = TX_UNDO_BYTES;
    tx->undo_priv = tx->undo = malloc(tx->undo_cap);
    tx->serial = 1;
    if (!tx->entries || !tx->htab || !tx->copybuf || !tx->undo) return -1;
    return 0;
}

void stm_tx_free(StmTx *tx) {
    free(tx->entries);
    free(tx->htab);
    free(tx->copybuf);
    free(tx->undo_priv);
    memset(tx, 0, sizeof *tx);
}

/* The undo log in the slot's StmSlot (shared), else in private memory. */
static void undo_home(StmTx *tx) {
    if (tx->shared) {
        tx->undo = tx->shared->slots[tx->slot].undo;
        tx->undo_cap = UNDO_SHARED_BYTES;
    } else {
        tx->undo = tx->undo_priv;
        tx->undo_cap = tx->undo_priv_cap;
    }
}

void stm_tx_bind(StmTx *tx, StmShared *shared, uint32_t slot, SlotCounters *counters) {
    tx->shared = shared;
    tx->slot = slot;
    tx->counters = shared ? counters : NULL;
    tx->undo_used = 0;
    tx->undo_last = 0;
    if (tx->undo_priv) undo_home(tx);
}

static inline uint32_t ptr_hash(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 32;
    return (uint32_t)x;
}

/* The descriptor's hash table (object or private pointer -> entry) has
 * TX_HASH_MIN slots while transactions are small, so that its lines stay in
 * the L1 cache; it doubles while more than half full, up to TX_HASH_MAX, and
 * shrinks back after a transaction that used little of it.  Only the slots
 * a transaction used are cleared when it ends. */
static inline const void *entry_key(const TxEntry *e) { return e->obj ? (const void *)e->obj : (const void *)e->data; }

static void table_insert(StmTx *tx, uint32_t i) {
    uint32_t h = ptr_hash(entry_key(&tx->entries[i])) & tx->hmask;
    while (tx->htab[h]) h = (h + 1) & tx->hmask;
    tx->htab[h] = i + 1;
    tx->entries[i].hslot = h;
}

/* Forget every entry (the attempt is over). */
static void table_reset(StmTx *tx) {
    uint32_t n = tx->nentries;
    for (uint32_t i = 0; i < n; i++) tx->htab[tx->entries[i].hslot] = 0;
    if (tx->hmask + 1 > TX_HASH_MIN && 16 * n < tx->hmask + 1) tx->hmask = TX_HASH_MIN - 1;   /* all zero */
    tx->nentries = 0;
}

static void table_grow(StmTx *tx) {
    for (uint32_t i = 0; i < tx->nentries; i++) tx->htab[tx->entries[i].hslot] = 0;
    tx->hmask = 2 * tx->hmask + 1;
    for (uint32_t i = 0; i < tx->nentries; i++) table_insert(tx, i);
}

/* Find the entry of `key`; with create, add one.  -1: not found / full. */
static int32_t entry_find(StmTx *tx, const void *key, int create) {
    uint32_t h = ptr_hash(key) & tx->hmask;
    for (;;) {
        uint32_t v = tx->htab[h];
        if (!v) {
            if (!create || tx->nentries >= tx->cap) return -1;
            if (2 * (tx->nentries + 1) > tx->hmask + 1) {
                table_grow(tx);
                return entry_find(tx, key, create);
            }
            uint32_t i = tx->nentries++;
            tx->htab[h] = i + 1;
            TxEntry *e = &tx->entries[i];
            memset(e, 0, sizeof *e);
            e->hslot = h;
            return (int32_t)i;
        }
        if (entry_key(&tx->entries[v - 1]) == key) return (int32_t)(v - 1);
        h = (h + 1) & tx->hmask;
    }
}

static void undo_reset(StmTx *tx);

static void wait_irrevocable_free(StmTx *tx) {
    for (unsigned spins = 0;; spins++) {
        uint32_t owner = atomic_load(&tx->shared->irrevocable);
        if (owner == 0 || owner == tx->slot + 1) return;
        if (spins > 64) sched_yield();
    }
}

void stm_begin(StmTx *tx, int mode, int irrevocable) {
    StmShared *sh = tx->shared;
    tx->wv = 0;
    tx->sampled = sh && (++tx->count % STM_SAMPLE) == 0;
    tx->stm_ns = 0;
    if (tx->sampled) tx->t_begin = mono_ns();
    STM_TIMED_BEGIN(tx);
    tx->active = 1;
    tx->mode = mode;
    tx->irrevocable = irrevocable;
    tx->doomed = 0;
    tx->fail = STM_OK;
    tx->conflict_valid = 0;
    tx->tag = 0;
    tx->serial++;
    table_reset(tx);
    tx->copy_used = 0;
    undo_reset(tx);
    if (!sh) return;
    StmSlot *me = &sh->slots[tx->slot];
    tx->counters->transactions[0]++;
    if (irrevocable) {
        uint32_t expect = 0;
        unsigned spins = 0;
        while (!atomic_compare_exchange_weak(&sh->irrevocable, &expect, tx->slot + 1)) {
            expect = 0;
            if (++spins > 64) sched_yield();
        }
        for (uint32_t s = 0; s < sh->nslots; s++) {
            if (s == tx->slot) continue;
            for (spins = 0; atomic_load(&sh->slots[s].in_tx); spins++)
                if (spins > 64) sched_yield();
        }
        atomic_store(&me->in_tx, 1);
        if (irrevocable == STM_IRREVOCABLE) tx->counters->irrevocable[0]++;
    } else {
        for (;;) {
            wait_irrevocable_free(tx);
            atomic_store(&me->in_tx, 1);
            uint32_t owner = atomic_load(&sh->irrevocable);
            if (owner == 0 || owner == tx->slot + 1) break;
            atomic_store(&me->in_tx, 0);
        }
    }
    tx->rv = atomic_load(&sh->clock);
    STM_TIMED_END(tx);
}

static void tx_end(StmTx *tx) {
    if (tx->sampled && tx->counters) {
        SlotCounters *c = tx->counters;
        uint64_t now = mono_ns();
        if (tx->t_commit) tx->stm_ns += now - tx->t_commit;
        c->stm_sampled_transactions[0]++;
        c->stm_sampled_tx_ns[0] += now - tx->t_begin;
        c->stm_sampled_stm_ns[0] += tx->stm_ns;
        tx->sampled = 0;
    }
    tx->t_commit = 0;
    tx->active = 0;
    tx->serial++;   /* views of this attempt are stale from now on */
    if (!tx->shared) return;
    if (tx->irrevocable) atomic_store(&tx->shared->irrevocable, 0);
    atomic_store(&tx->shared->slots[tx->slot].in_tx, 0);
}

/* ------------------------------------------------------------- undo log */

static int grow(char **buf, size_t *cap, size_t need) {
    size_t n = *cap;
    while (n < need) n *= 2;
    if (n > ((size_t)1 << 32)) return -1;
    char *p = realloc(*buf, n);
    if (!p) return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static inline StmSlot *undo_slot(StmTx *tx) {
    return tx->shared && tx->undo == tx->shared->slots[tx->slot].undo ? &tx->shared->slots[tx->slot] : NULL;
}

/* The log outgrew the arena's room: on in private memory (not recoverable). */
static int undo_overflow(StmTx *tx, size_t need) {
    StmSlot *ss = undo_slot(tx);
    if (tx->undo_priv_cap < need && grow(&tx->undo_priv, &tx->undo_priv_cap, need) < 0) return -1;
    if (ss) {
        memcpy(tx->undo_priv, tx->undo, tx->undo_used);
        atomic_store(&ss->undo_overflow, 1);
    }
    tx->undo = tx->undo_priv;
    tx->undo_cap = tx->undo_priv_cap;
    return 0;
}

/* The log is empty (the attempt ended): back in the arena, published empty. */
static void undo_reset(StmTx *tx) {
    tx->undo_used = 0;
    tx->undo_last = 0;
    if (!tx->shared) return;
    StmSlot *ss = &tx->shared->slots[tx->slot];
    if (tx->undo != ss->undo) {
        tx->undo = ss->undo;
        tx->undo_cap = UNDO_SHARED_BYTES;
        atomic_store(&ss->undo_overflow, 0);
    }
    atomic_store_explicit(&ss->undo_last, 0, memory_order_release);
}

static int undo_push(StmTx *tx, uint32_t kind, void *ptr, const void *bytes, uint32_t size) {
    size_t need = sizeof(UndoHdr) + ((size + 7) & ~7u);
    if (tx->undo_used == 0) tx->undo_last = 0;
    if (tx->undo_used + need > tx->undo_cap && undo_overflow(tx, tx->undo_used + need) < 0)
        return -1;
    UndoHdr *h = (UndoHdr *)(tx->undo + tx->undo_used);
    h->kind = kind;
    h->size = size;
    h->ptr = ptr;
    h->prev = tx->undo_last;
    memcpy(h + 1, bytes, size);
    tx->undo_last = (uint32_t)tx->undo_used + 1;
    tx->undo_used += need;
    StmSlot *ss = undo_slot(tx);
    if (ss) atomic_store_explicit(&ss->undo_last, tx->undo_last, memory_order_release);
    return 0;
}

static void undo_apply_all(StmTx *tx) {
    if (tx->undo_used == 0) return;
    StmSlot *ss = undo_slot(tx);
    uint32_t at = tx->undo_last;
    while (at) {
        UndoHdr *h = (UndoHdr *)(tx->undo + at - 1);
        if (h->kind == 0)
            memcpy(h->ptr, h + 1, h->size);
        else
            ((undo_fn)h->ptr)(h + 1);
        at = h->prev;
        if (ss) atomic_store_explicit(&ss->undo_last, at, memory_order_release);
    }
    undo_reset(tx);
}

/* The attempt committed: its undo log is dropped, then the slot's commit count moves. */
static void undo_discard(StmTx *tx) {
    undo_reset(tx);
    if (tx->shared) atomic_fetch_add_explicit(&tx->shared->slots[tx->slot].commit_seq, 1, memory_order_release);
}

/* --------------------------------------------------------------- aborts */

/* Doom the attempt with `cause`: remember what was met (the first cause wins). */
static void doom(StmTx *tx, int cause, ObjHdr *obj, uint16_t struct_id, uint32_t index) {
    tx->doomed = 1;
    tx->fail = STM_ABORTED;
    tx->fail_cause = cause;
    if (tx->conflict_valid) return;
    StmConflict *c = &tx->conflict;
    memset(c, 0, sizeof *c);
    c->cause = (uint16_t)cause;
    c->struct_id = struct_id;
    c->index = index;
    c->own_tag = tx->tag;
    c->own_site = tx->site;
    c->ctx = tx->ctx;
    c->other_slot = 0xff;
    if (obj) {
        int32_t e = entry_find(tx, obj, 0);
        if (e >= 0 && tx->entries[e].obj == obj) {   /* what this transaction did to it */
            c->own_tag = tx->entries[e].tag;
            c->own_site = tx->entries[e].site;
        }
        uint64_t w = atomic_load(&obj->lock);
        uint64_t info = obj->info;
        c->other_slot = (w & LOCK_BIT) ? (uint8_t)LOCK_OWNER(w) : INFO_SLOT(info);
        c->other_info = info;
    }
    tx->conflict_valid = 1;
}

static void count_abort(StmTx *tx) {
    SlotCounters *ctr = tx->counters;
    if (!ctr) return;
    ctr->aborts[0]++;
    if (tx->conflict_valid) {
        ctr->aborts_by_cause[tx->conflict.cause]++;
        if (tx->abort_hook) tx->abort_hook(tx, &tx->conflict, tx->hook_arg);
    }
}

static void finish_abort(StmTx *tx) {
    STM_TIMED_BEGIN(tx);
    undo_apply_all(tx);
    count_abort(tx);
    table_reset(tx);
    STM_TIMED_END(tx);
    tx_end(tx);
}

void stm_abort(StmTx *tx) { finish_abort(tx); }

void stm_rollback(StmTx *tx) {
    undo_apply_all(tx);
    tx->nentries = 0;
    if (tx->counters && tx->counters->transactions[0]) tx->counters->transactions[0]--;
    tx->sampled = 0;
    tx_end(tx);
}

void stm_abort_cause(StmTx *tx, int cause) {
    tx->conflict_valid = 0;
    doom(tx, cause, NULL, 0, 0);
    finish_abort(tx);
}

/* ------------------------------------------------------- private memory */

static int save_private(StmTx *tx, void *ptr, uint32_t size) {
    int32_t i = entry_find(tx, ptr, 1);
    if (i < 0) {   /* descriptor full: save without de-duplication */
        if (undo_push(tx, 0, ptr, ptr, size) == 0) return 0;
        doom(tx, ABORT_TOO_LARGE, NULL, 0, 0);
        return -1;
    }
    TxEntry *e = &tx->entries[i];
    if (e->undo_saved && e->size >= size) return 0;
    e->data = ptr;
    e->size = size;
    e->undo_saved = 1;
    if (undo_push(tx, 0, ptr, ptr, size) < 0) {
        doom(tx, ABORT_TOO_LARGE, NULL, 0, 0);
        return -1;
    }
    return 0;
}

int stm_save_private(StmTx *tx, void *ptr, uint32_t size) {
    if (!tx->active || tx->mode == TX_UNLOGGED) return 0;
    STM_TIMED_BEGIN(tx);
    int r = save_private(tx, ptr, size);
    STM_TIMED_END(tx);
    return r;
}

int stm_push_undo(StmTx *tx, undo_fn fn, const void *payload, uint32_t size) {
    if (!tx->active || tx->mode == TX_UNLOGGED) return 0;
    if (undo_push(tx, 1, (void *)fn, payload, size) < 0) {
        doom(tx, ABORT_TOO_LARGE, NULL, 0, 0);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- opens */

/* Re-check the read set (but entry `skip`); on success move the snapshot to `now`. */
static int extend_snapshot(StmTx *tx, int32_t skip) {
    uint64_t now = atomic_load(&tx->shared->clock);
    for (uint32_t i = 0; i < tx->nentries; i++) {
        TxEntry *e = &tx->entries[i];
        if (!e->obj || (int32_t)i == skip) continue;
        uint64_t w = atomic_load(&e->obj->lock);
        if (LOCK_VERSION(w) != e->version) return -1;
        if ((w & LOCK_BIT) && LOCK_OWNER(w) != tx->slot) return -1;
    }
    tx->rv = now;
    return 0;
}

static char *aborted_open(StmTx *tx, int cause, ObjHdr *obj, uint16_t struct_id, uint32_t index) {
    doom(tx, cause, obj, struct_id, index);
    return NULL;
}

/* The object's lock word once it is unlocked (spinning while another slot
 * writes it back), or 1 (a lock bit: gave up, aborted as `locked`). */
static uint64_t unlocked_word(StmTx *tx, ObjHdr *obj, uint16_t struct_id, uint32_t index) {
    for (unsigned spins = 0;; spins++) {
        uint64_t w = atomic_load_explicit(&obj->lock, memory_order_acquire);
        if (!(w & LOCK_BIT)) return w;
        if (spins >= SPIN_LOCKED) {
            doom(tx, ABORT_LOCKED, obj, struct_id, index);
            return LOCK_BIT;
        }
        if (spins > 16) sched_yield();
    }
}

/* An entry read in place gets its private copy, of exactly the version read
 * (a write, or an open that wants a stable copy): 0, or -1 (aborted). */
static int copy_entry(StmTx *tx, TxEntry *e) {
    if (tx->copy_used + e->size > tx->copy_cap) {
        doom(tx, ABORT_TOO_LARGE, e->obj, e->struct_id, e->index);
        return -1;
    }
    char *copy = tx->copybuf + tx->copy_used;
    for (;;) {
        uint64_t w1 = unlocked_word(tx, e->obj, e->struct_id, e->index);
        if (w1 & LOCK_BIT) return -1;
        if (LOCK_VERSION(w1) != e->version) {   /* what was read of it is stale */
            doom(tx, ABORT_VALIDATION, e->obj, e->struct_id, e->index);
            return -1;
        }
        memcpy(copy, OBJ_DATA(e->obj), e->size);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->obj->lock, memory_order_relaxed) == w1) break;
    }
    tx->copy_used += (e->size + 7) & ~7u;
    e->data = copy;
    e->copied = 1;
    e->fresh = 0;
    return 0;
}

/* Open `obj`: a private copy (copy != 0), or in place (copy == 0, a read). */
static char *open_impl(StmTx *tx, ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, int write,
                       int copy, int32_t *ent) {
    if (tx->doomed) {
        tx->fail = STM_DOOMED;
        return NULL;
    }
    if (!tx->active) {
        tx->fail = STM_INACTIVE;
        return NULL;
    }
    if (tx->mode != TX_STM) {
        if (write && tx->mode != TX_UNLOGGED && save_private(tx, OBJ_DATA(obj), size) < 0) return NULL;
        return OBJ_DATA(obj);
    }
    int32_t i = entry_find(tx, obj, 1);
    if (i < 0) return aborted_open(tx, ABORT_TOO_LARGE, obj, struct_id, index);
    TxEntry *e = &tx->entries[i];
    *ent = i;
    if (e->obj == obj) {   /* already open in this transaction */
        if ((write || copy) && !e->copied && copy_entry(tx, e) < 0) return NULL;
        if (write && !e->written) {
            e->written = 1;
            e->tag = tx->tag;
        }
        return e->data;
    }
    copy |= write;
    if (copy && tx->copy_used + size > tx->copy_cap) return aborted_open(tx, ABORT_TOO_LARGE, obj, struct_id, index);
    char *data = copy ? tx->copybuf + tx->copy_used : OBJ_DATA(obj);
    for (;;) {
        uint64_t w1 = unlocked_word(tx, obj, struct_id, index);
        if (w1 & LOCK_BIT) return NULL;
        if (copy) {
            memcpy(data, OBJ_DATA(obj), size);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&obj->lock, memory_order_relaxed) != w1) continue;
        }
        if (LOCK_VERSION(w1) > tx->rv) {
            /* Newer than the snapshot: extend it, then copy (or read) again.
             * The copy was taken before the new snapshot time was read, and a
             * commit numbered up to it may have locked the object since. */
            if (extend_snapshot(tx, -1) < 0) return aborted_open(tx, ABORT_SNAPSHOT, obj, struct_id, index);
            continue;
        }
        e->version = LOCK_VERSION(w1);
        break;
    }
    if (copy) tx->copy_used += (size + 7) & ~7u;
    e->obj = obj;
    e->data = data;
    e->copied = (uint8_t)copy;
    e->fresh = (uint8_t)!copy;
    e->size = size;
    e->index = index;
    e->struct_id = struct_id;
    e->written = (uint8_t)write;
    e->site = tx->site;
    e->tag = tx->tag;
    return data;
}

char *stm_open(StmTx *tx, ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, int write,
               uint64_t tag) {
    if (tx->site_hook) tx->site = tx->site_hook(tx->hook_arg);
    tx->tag = tag;
    STM_TIMED_BEGIN(tx);
    int32_t ent;
    char *r = open_impl(tx, obj, size, struct_id, index, write, 1, &ent);
    STM_TIMED_END(tx);
    return r;
}

char *stm_read_open(StmTx *tx, ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, uint64_t tag,
                    int32_t *ent) {
    if (tx->site_hook) tx->site = tx->site_hook(tx->hook_arg);
    tx->tag = tag;
    STM_TIMED_BEGIN(tx);
    *ent = -1;
    char *r = open_impl(tx, obj, size, struct_id, index, OP_READ, 0, ent);
    STM_TIMED_END(tx);
    return r;
}

/* stm_read_check's slow path: the lock word is not the version read. */
int stm_read_recheck(StmTx *tx, int32_t ent) {
    TxEntry *e = &tx->entries[ent];
    uint64_t w = unlocked_word(tx, e->obj, e->struct_id, e->index);
    if (w & LOCK_BIT) return -1;
    if (LOCK_VERSION(w) == e->version) return 1;   /* locked during the loads, released unchanged */
    if (e->fresh) {
        /* Nothing loaded from it has been used: take the new version (a
         * commit numbered up to the new snapshot may have locked it since). */
        if (LOCK_VERSION(w) > tx->rv && extend_snapshot(tx, ent) < 0) {
            doom(tx, ABORT_SNAPSHOT, e->obj, e->struct_id, e->index);
            return -1;
        }
        e->version = LOCK_VERSION(w);
        return 1;
    }
    doom(tx, ABORT_VALIDATION, e->obj, e->struct_id, e->index);
    return -1;
}

/* --------------------------------------------------------------- commit */

static void release_locks(StmTx *tx, uint32_t upto) {
    for (uint32_t i = 0; i < upto; i++) {
        TxEntry *e = &tx->entries[i];
        if (e->obj && e->written) {
            uint64_t w = atomic_load(&e->obj->lock);
            if ((w & LOCK_BIT) && LOCK_OWNER(w) == tx->slot) atomic_store(&e->obj->lock, e->version << 8);
        }
    }
}

static int commit_aborted(StmTx *tx, int cause, TxEntry *e) {
    doom(tx, cause, e->obj, e->struct_id, e->index);
    finish_abort(tx);
    return -1;
}

/* Direct mode: nothing to validate or write back. */
static int commit_direct(StmTx *tx) {
    if (tx->shared && tx->irrevocable) {
        /* In-place writes were made while every other slot waited; bumping
         * the clock makes later snapshots newer than them.  Objects written
         * keep their old version word, which is safe because no transaction
         * that could have read the old payload is still running. */
        tx->wv = atomic_fetch_add(&tx->shared->clock, 1) + 1;
    }
    undo_discard(tx);
    if (tx->counters) tx->counters->commits[0]++;
    tx_end(tx);
    return 0;
}

static int commit_impl(StmTx *tx) {
    if (tx->doomed) {
        finish_abort(tx);
        return -1;
    }
    tx->wv = 0;
    if (tx->mode != TX_STM) return commit_direct(tx);
    StmSlot *me = &tx->shared->slots[tx->slot];
    uint32_t n = tx->nentries, nwritten = 0;
    for (uint32_t i = 0; i < n; i++) nwritten += tx->entries[i].obj && tx->entries[i].written;
    if (nwritten == 0) {   /* read-only in shared memory: the snapshot was consistent */
        undo_discard(tx);
        tx->counters->commits[0]++;
        tx_end(tx);
        return 0;
    }
    /* 1. lock the write set (the objects logged first: a death from here on releases them) */
    atomic_store_explicit(&me->nlocks, 0, memory_order_relaxed);
    uint32_t nl = 0;
    for (uint32_t i = 0; i < n; i++)
        if (tx->entries[i].obj && tx->entries[i].written) me->locks[nl++] = tx->entries[i].obj;
    atomic_store_explicit(&me->nlocks, nl, memory_order_release);
    for (uint32_t i = 0; i < n; i++) {
        TxEntry *e = &tx->entries[i];
        if (!e->obj || !e->written) continue;
        uint64_t expect = e->version << 8;
        uint64_t mine = expect | ((uint64_t)tx->slot << 1) | LOCK_BIT;
        if (!atomic_compare_exchange_strong(&e->obj->lock, &expect, mine)) {
            int cause = (expect & LOCK_BIT) ? ABORT_LOCKED : ABORT_VALIDATION;
            release_locks(tx, i);
            return commit_aborted(tx, cause, e);
        }
    }
    /* 2. write version; 3. validate the read set */
    uint64_t wv = atomic_fetch_add(&tx->shared->clock, 1) + 1;
    tx->wv = wv;
    if (wv != tx->rv + 1) {
        for (uint32_t i = 0; i < n; i++) {
            TxEntry *e = &tx->entries[i];
            if (!e->obj || e->written) continue;
            uint64_t w = atomic_load(&e->obj->lock);
            if (LOCK_VERSION(w) != e->version || ((w & LOCK_BIT) && LOCK_OWNER(w) != tx->slot)) {
                release_locks(tx, n);
                return commit_aborted(tx, (w & LOCK_BIT) ? ABORT_LOCKED : ABORT_VALIDATION, e);
            }
        }
    }
    /* 4. redo log (crash recovery), 5. write back and release */
    uint32_t used = 0;
    int logged = 1;
    for (uint32_t i = 0; i < n; i++) {
        TxEntry *e = &tx->entries[i];
        if (!e->obj || !e->written) continue;
        uint32_t need = (uint32_t)(sizeof(void *) + 8 + ((e->size + 7) & ~7u));
        if (used + need > REDO_BYTES) {
            logged = 0;
            break;
        }
        char *r = me->redo + used;
        memcpy(r, &e->obj, sizeof(void *));
        memcpy(r + sizeof(void *), &e->size, 4);
        memcpy(r + sizeof(void *) + 8, e->data, e->size);
        used += need;
    }
    me->redo_used = logged ? used : 0;
    me->redo_version = wv;
    atomic_store(&me->redo_state, REDO_WRITING);
    int first = 1;
    for (uint32_t i = 0; i < n; i++) {
        TxEntry *e = &tx->entries[i];
        if (!e->obj || !e->written) continue;
        memcpy(OBJ_DATA(e->obj), e->data, e->size);
        e->obj->info = (uint64_t)tx->slot | ((uint64_t)(e->site & 0xffff) << 16) | (e->tag & STM_TAG_MASK);
        atomic_store_explicit(&e->obj->lock, wv << 8, memory_order_release);
        if (first && tx->fault_hook) tx->fault_hook(tx, tx->fault_arg);   /* tests: die here */
        first = 0;
    }
    atomic_store(&me->redo_state, REDO_IDLE);
    undo_discard(tx);
    tx->counters->commits[0]++;
    tx_end(tx);
    return 0;
}

int stm_commit(StmTx *tx) {
    if (tx->sampled) tx->t_commit = mono_ns();   /* tx_end() adds the commit to the STM time */
    return commit_impl(tx);
}
