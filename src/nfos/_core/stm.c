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
 * snapshot forward (LSA, as TinySTM does), so read-mostly transactions
 * rarely abort.
 *
 * Commit of a transaction that wrote something:
 *   1. lock every written object with a CAS from exactly the version it
 *      copied (the lock word keeps the version and records the owner slot);
 *   2. take a write version wv = ++clock;
 *   3. unless wv == rv + 1 (nobody committed meanwhile), check that every
 *      object read is unlocked (or locked by us) at the version copied;
 *   4. append the new payloads to this slot's redo log in the arena and mark
 *      it WRITING, so a crash from here on can be completed by the control
 *      process;
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
 * Tunables: the descriptor holds up to TX_MAX_ENTRIES objects and
 * TX_COPY_BYTES of copies; a bigger transaction aborts with ABORT_TOO_LARGE
 * and the runtime splits its batch (or runs it irrevocably).  SPIN_LOCKED is
 * how often an open retries an object another slot is writing back.
 */
#include "nfos_core.h"

#include <sched.h>
#include <sys/mman.h>

#define TX_MAX_ENTRIES 4096
#define TX_COPY_BYTES (1u << 20)
#define TX_UNDO_BYTES (4u << 20)
#define TX_EMIT_BYTES (1u << 20)
#define SPIN_LOCKED 256

const char *const abort_cause_names[ABORT_NCAUSES] = {
    "locked", "validation", "snapshot", "too_large", "handler_error"};
const char *const op_code_names[OPC_NCODES] = {
    "none", "read", "write", "read", "update", "get", "set", "delete",
    "allocate", "free", "refresh", "expire", "query"};

ArenaHeader *g_arena = NULL;
static char *arena_base, *arena_end;
static _Atomic(uint64_t) *arena_bump;   /* in the header page, shared */
static size_t arena_header_size;

Tx g_tx;
int g_slot = 0;
uint64_t g_clock = 0;
PyObject *TransactionAborted;
PyObject *TableFull;

SlotShared *my_shared(void) { return &g_arena->slots[g_slot]; }

/* Time spent inside the STM, for sampled transactions only (no clock reads otherwise). */
#define STM_TIMED_BEGIN uint64_t stm_t0_ = g_tx.sampled && !g_tx.t_commit ? mono_ns() : 0
#define STM_TIMED_END   do { if (stm_t0_) g_tx.stm_ns += mono_ns() - stm_t0_; } while (0)

/* ---------------------------------------------------------------- arena */

int arena_ready(void) { return g_arena != NULL; }

/* One anonymous shared mapping: inherited by fork at the same address, never
 * named, so nothing is left in /dev/shm when the processes exit.  Pages are
 * only backed when touched (MAP_NORESERVE). */
static PyObject *py_arena_create(PyObject *self, PyObject *args) {
    unsigned long long size;
    unsigned int nslots;
    if (!PyArg_ParseTuple(args, "KI", &size, &nslots))
        return NULL;
    if (g_arena) {
        PyErr_SetString(PyExc_RuntimeError, "the arena already exists in this process");
        return NULL;
    }
    if (nslots < 1 || nslots > NFOS_MAX_SLOTS) {
        PyErr_Format(PyExc_ValueError, "at most %d workers are supported", NFOS_MAX_SLOTS - 1);
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        PyErr_Format(PyExc_MemoryError, "cannot map a %llu-byte shared arena", size);
        return NULL;
    }
    g_arena = p;
    g_arena->magic = 0x6e666f7361726e61ull;
    g_arena->nslots = nslots;
    atomic_store(&g_arena->clock, 1);
    arena_header_size = sizeof(ArenaHeader) + nslots * sizeof(SlotShared) + sizeof(uint64_t);
    arena_header_size = (arena_header_size + 4095) & ~(size_t)4095;
    arena_bump = (_Atomic(uint64_t) *)((char *)p + arena_header_size - sizeof(uint64_t));
    atomic_store(arena_bump, arena_header_size);
    arena_base = p;
    arena_end = (char *)p + size;
    Py_RETURN_NONE;
}

void *arena_alloc(size_t size, size_t align) {
    if (!g_arena) {
        PyErr_SetString(PyExc_RuntimeError, "nfos structures must be created while an NF is loaded");
        return NULL;
    }
    if (align < 8) align = 8;
    uint64_t off = atomic_load(arena_bump);
    off = (off + align - 1) & ~(uint64_t)(align - 1);
    if (arena_base + off + size > arena_end) {
        PyErr_Format(PyExc_MemoryError,
                     "the shared arena is full (%zu bytes requested); raise --arena-size", size);
        return NULL;
    }
    atomic_store(arena_bump, off + size);
    return arena_base + off;
}

/* Forget the arena (a test harness loads many NFs in one process).  Views
 * and structures of the old NF are refused afterwards (arena generation). */
uint32_t g_arena_gen = 1;
extern void loop_reset(void);
static PyObject *py_arena_destroy(PyObject *self, PyObject *noargs) {
    if (!g_arena) Py_RETURN_NONE;
    if (g_tx.active) {
        PyErr_SetString(PyExc_RuntimeError, "cannot destroy the arena inside a transaction");
        return NULL;
    }
    loop_reset();
    munmap(arena_base, (size_t)(arena_end - arena_base));
    g_arena = NULL;
    arena_base = arena_end = NULL;
    g_arena_gen++;
    g_slot = 0;
    g_clock = 0;
    Py_RETURN_NONE;
}

static PyObject *py_arena_used(PyObject *self, PyObject *noargs) {
    if (!g_arena) return PyLong_FromLong(0);
    return PyLong_FromUnsignedLongLong(atomic_load(arena_bump));
}

/* ------------------------------------------------------------- descriptor */

int tx_init(void) {
    memset(&g_tx, 0, sizeof g_tx);
    g_tx.cap = TX_MAX_ENTRIES;
    g_tx.entries = PyMem_RawCalloc(g_tx.cap, sizeof(TxEntry));
    g_tx.hmask = 2 * TX_MAX_ENTRIES - 1;
    g_tx.htab = PyMem_RawCalloc(g_tx.hmask + 1, sizeof(int32_t));
    g_tx.hgen = PyMem_RawCalloc(g_tx.hmask + 1, sizeof(uint32_t));
    g_tx.copy_cap = TX_COPY_BYTES;
    g_tx.copybuf = PyMem_RawMalloc(g_tx.copy_cap);
    g_tx.undo_cap = TX_UNDO_BYTES;
    g_tx.undo = PyMem_RawMalloc(g_tx.undo_cap);
    g_tx.emit_cap = TX_EMIT_BYTES;
    g_tx.emit = PyMem_RawMalloc(g_tx.emit_cap);
    g_tx.gen = 1;
    g_tx.serial = 1;
    if (!g_tx.entries || !g_tx.htab || !g_tx.hgen || !g_tx.copybuf || !g_tx.undo || !g_tx.emit) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static inline uint32_t ptr_hash(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 32;
    return (uint32_t)x;
}

/* Find the entry of `key`; with create, add one.  -1: not found / full. */
static int32_t entry_find(const void *key, int create) {
    uint32_t h = ptr_hash(key) & g_tx.hmask;
    for (;;) {
        if (g_tx.hgen[h] != g_tx.gen) {
            if (!create || g_tx.nentries >= g_tx.cap) return -1;
            int32_t i = (int32_t)g_tx.nentries++;
            g_tx.hgen[h] = g_tx.gen;
            g_tx.htab[h] = i;
            memset(&g_tx.entries[i], 0, sizeof(TxEntry));
            return i;
        }
        TxEntry *e = &g_tx.entries[g_tx.htab[h]];
        if ((e->obj ? (void *)e->obj : (void *)e->data) == key) return g_tx.htab[h];
        h = (h + 1) & g_tx.hmask;
    }
}

static void wait_irrevocable_free(void) {
    for (unsigned spins = 0;; spins++) {
        uint32_t owner = atomic_load(&g_arena->irrevocable);
        if (owner == 0 || owner == (uint32_t)g_slot + 1) return;
        if (spins > 64) sched_yield();
    }
}

static uint64_t tx_count;

void tx_begin(int mode, int irrevocable) {
    SlotShared *me = g_arena ? my_shared() : NULL;
    g_tx.sampled = me && (++tx_count % STM_SAMPLE) == 0;
    g_tx.stm_ns = 0;
    if (g_tx.sampled) g_tx.t_begin = mono_ns();
    STM_TIMED_BEGIN;
    g_tx.active = 1;
    g_tx.mode = mode;
    g_tx.irrevocable = irrevocable;
    g_tx.doomed = 0;
    g_tx.conflict_valid = 0;
    g_tx.op = OPC_NONE;
    g_tx.detail = 0;
    g_tx.serial++;
    g_tx.nentries = 0;
    g_tx.gen++;
    if (g_tx.gen == 0) {   /* wrapped: clear the table once */
        memset(g_tx.hgen, 0, (g_tx.hmask + 1) * sizeof(uint32_t));
        g_tx.gen = 1;
    }
    g_tx.copy_used = g_tx.undo_used = g_tx.emit_used = 0;
    if (!me) return;
    me->stats.tx_started++;
    if (irrevocable) {
        uint32_t expect = 0;
        unsigned spins = 0;
        while (!atomic_compare_exchange_weak(&g_arena->irrevocable, &expect, (uint32_t)g_slot + 1)) {
            expect = 0;
            if (++spins > 64) sched_yield();
        }
        for (uint32_t s = 0; s < g_arena->nslots; s++) {
            if ((int)s == g_slot) continue;
            for (spins = 0; atomic_load(&g_arena->slots[s].in_tx); spins++)
                if (spins > 64) sched_yield();
        }
        atomic_store(&me->in_tx, 1);
        me->stats.irrevocable++;
    } else {
        for (;;) {
            wait_irrevocable_free();
            atomic_store(&me->in_tx, 1);
            uint32_t owner = atomic_load(&g_arena->irrevocable);
            if (owner == 0 || owner == (uint32_t)g_slot + 1) break;
            atomic_store(&me->in_tx, 0);
        }
    }
    g_tx.rv = atomic_load(&g_arena->clock);
    STM_TIMED_END;
}

static void tx_end(void) {
    if (g_tx.sampled && g_arena) {
        SlotStats *st = &my_shared()->stats;
        uint64_t now = mono_ns();
        if (g_tx.t_commit) g_tx.stm_ns += now - g_tx.t_commit;
        st->tx_sampled++;
        st->tx_sampled_ns += now - g_tx.t_begin;
        st->stm_sampled_ns += g_tx.stm_ns;
        g_tx.sampled = 0;
    }
    g_tx.t_commit = 0;
    g_tx.active = 0;
    g_tx.serial++;   /* views of this attempt are stale from now on */
    if (!g_arena) return;
    SlotShared *me = my_shared();
    if (g_tx.irrevocable) atomic_store(&g_arena->irrevocable, 0);
    atomic_store(&me->in_tx, 0);
}

/* ------------------------------------------------------------- undo log */

typedef struct {
    uint32_t kind;   /* 0: memory restore, 1: callback */
    uint32_t size;
    void *ptr;       /* memory address, or the callback */
    uint32_t prev;   /* offset of the previous record + 1 (0: none) */
    uint32_t pad;
} UndoHdr;

static uint32_t undo_last;   /* offset of the last record + 1 */

static int grow(char **buf, size_t *cap, size_t need) {
    size_t n = *cap;
    while (n < need) n *= 2;
    if (n > ((size_t)1 << 32)) return -1;
    char *p = PyMem_RawRealloc(*buf, n);
    if (!p) return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static int undo_push(uint32_t kind, void *ptr, const void *bytes, uint32_t size) {
    size_t need = sizeof(UndoHdr) + ((size + 7) & ~7u);
    if (g_tx.undo_used == 0) undo_last = 0;
    if (g_tx.undo_used + need > g_tx.undo_cap && grow(&g_tx.undo, &g_tx.undo_cap, g_tx.undo_used + need) < 0)
        return -1;
    UndoHdr *h = (UndoHdr *)(g_tx.undo + g_tx.undo_used);
    h->kind = kind;
    h->size = size;
    h->ptr = ptr;
    h->prev = undo_last;
    memcpy(h + 1, bytes, size);
    undo_last = (uint32_t)g_tx.undo_used + 1;
    g_tx.undo_used += need;
    return 0;
}

static void undo_apply_all(void) {
    if (g_tx.undo_used == 0) return;
    uint32_t at = undo_last;
    while (at) {
        UndoHdr *h = (UndoHdr *)(g_tx.undo + at - 1);
        if (h->kind == 0)
            memcpy(h->ptr, h + 1, h->size);
        else
            ((undo_fn)h->ptr)(h + 1);
        at = h->prev;
    }
    g_tx.undo_used = 0;
    undo_last = 0;
}

static int tx_save_private_impl(void *ptr, uint32_t size);

int tx_save_private(void *ptr, uint32_t size) {
    if (!g_tx.active || g_tx.mode == TX_UNLOGGED) return 0;
    STM_TIMED_BEGIN;
    int r = tx_save_private_impl(ptr, size);
    STM_TIMED_END;
    return r;
}

static int tx_save_private_impl(void *ptr, uint32_t size) {
    int32_t i = entry_find(ptr, 1);
    if (i < 0) {   /* descriptor full: save without de-duplication */
        if (undo_push(0, ptr, ptr, size) == 0) return 0;
        tx_raise_abort(ABORT_TOO_LARGE, NULL, 0, 0, OP_WRITE);
        return -1;
    }
    TxEntry *e = &g_tx.entries[i];
    if (e->undo_saved && e->size >= size) return 0;
    e->data = ptr;
    e->size = size;
    e->undo_saved = 1;
    if (undo_push(0, ptr, ptr, size) < 0) {
        tx_raise_abort(ABORT_TOO_LARGE, NULL, 0, 0, OP_WRITE);
        return -1;
    }
    return 0;
}

int tx_push_undo(undo_fn fn, const void *payload, uint32_t size) {
    if (!g_tx.active || g_tx.mode == TX_UNLOGGED) return 0;
    if (undo_push(1, (void *)fn, payload, size) < 0) {
        tx_raise_abort(ABORT_TOO_LARGE, NULL, 0, 0, OP_WRITE);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- emits */

int tx_emit(const char *frame, uint32_t len, uint32_t devmask) {
    size_t need = 8 + ((len + 7) & ~7u);
    if (g_tx.emit_used + need > g_tx.emit_cap && grow(&g_tx.emit, &g_tx.emit_cap, g_tx.emit_used + need) < 0) {
        PyErr_SetString(PyExc_MemoryError, "too many frames emitted in one transaction");
        return -1;
    }
    uint32_t *h = (uint32_t *)(g_tx.emit + g_tx.emit_used);
    h[0] = len;
    h[1] = devmask;
    memcpy(h + 2, frame, len);
    g_tx.emit_used += need;
    return 0;
}

/* --------------------------------------------------------------- aborts */

void stats_count_abort(void) {
    if (!g_arena) return;
    SlotShared *me = my_shared();
    me->stats.tx_aborted++;
    if (g_tx.conflict_valid) {
        me->stats.aborts_by_cause[g_tx.conflict.cause]++;
        uint64_t n = atomic_fetch_add(&me->conflict_count, 1);
        me->conflicts[n % CONFLICT_RING] = g_tx.conflict;
    }
}

PyObject *tx_raise_abort(int cause, ObjHdr *obj, uint16_t struct_id, uint32_t index, int own_op) {
    g_tx.doomed = 1;
    if (!g_tx.conflict_valid) {
        ConflictRecord *c = &g_tx.conflict;
        memset(c, 0, sizeof *c);
        c->cause = (uint16_t)cause;
        c->struct_id = struct_id;
        c->index = index;
        c->own_op = g_tx.op ? g_tx.op : (uint8_t)own_op;
        c->own_site = g_tx.site;
        c->own_detail = g_tx.detail;
        c->other_slot = 0xff;
        if (obj) {
            int32_t e = entry_find(obj, 0);
            if (e >= 0 && g_tx.entries[e].obj == obj) {   /* what this transaction did to it */
                c->own_op = g_tx.entries[e].op;
                c->own_site = g_tx.entries[e].site;
                c->own_detail = g_tx.entries[e].detail;
            }
            uint64_t w = atomic_load(&obj->lock);
            uint64_t info = obj->info;
            c->other_slot = (w & LOCK_BIT) ? (uint8_t)LOCK_OWNER(w) : (uint8_t)(info & 0xff);
            c->other_op = (uint8_t)((info >> 8) & 0xff);
            c->other_site = (uint32_t)((info >> 16) & 0xffff);
            c->other_detail = (uint32_t)(info >> 32);
        }
        g_tx.conflict_valid = 1;
    }
    PyErr_SetString(TransactionAborted, abort_cause_names[cause]);
    return NULL;
}

/* ---------------------------------------------------------------- opens */

/* Re-check the read set; on success move the snapshot to `now`. */
static int extend_snapshot(void) {
    uint64_t now = atomic_load(&g_arena->clock);
    for (uint32_t i = 0; i < g_tx.nentries; i++) {
        TxEntry *e = &g_tx.entries[i];
        if (!e->obj) continue;
        uint64_t w = atomic_load(&e->obj->lock);
        if (LOCK_VERSION(w) != e->version) return -1;
        if ((w & LOCK_BIT) && LOCK_OWNER(w) != (uint64_t)g_slot) return -1;
    }
    g_tx.rv = now;
    return 0;
}

uint32_t current_site(void) {
    PyFrameObject *f = PyEval_GetFrame();   /* borrowed */
    if (!f || !g_cfg.nf_file) return 0;
    Py_INCREF(f);
    while (f) {
        PyCodeObject *code = PyFrame_GetCode(f);
        int match = code->co_filename == g_cfg.nf_file ||
                    PyUnicode_Compare(code->co_filename, g_cfg.nf_file) == 0;
        Py_DECREF(code);
        if (match) {
            int line = PyFrame_GetLineNumber(f);
            Py_DECREF(f);
            return line > 0 && line < 0xffff ? (uint32_t)line : 0xffff;
        }
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    return 0;
}

static char *tx_open_impl(ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, int write);

char *tx_open(ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, int write) {
    if (g_cfg.profile) g_tx.site = current_site();
    STM_TIMED_BEGIN;
    char *r = tx_open_impl(obj, size, struct_id, index, write);
    STM_TIMED_END;
    return r;
}

static char *tx_open_impl(ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, int write) {
    if (g_tx.doomed) {
        PyErr_SetString(TransactionAborted, "transaction already aborted");
        return NULL;
    }
    if (!g_tx.active) {
        PyErr_SetString(PyExc_RuntimeError,
                        "nfos structures can only be used inside a handler or @nf.init");
        return NULL;
    }
    if (g_tx.mode != TX_STM) {
        if (write && tx_save_private(OBJ_DATA(obj), size) < 0) return NULL;
        return OBJ_DATA(obj);
    }
    int32_t i = entry_find(obj, 1);
    if (i < 0) return (char *)tx_raise_abort(ABORT_TOO_LARGE, obj, struct_id, index, write);
    TxEntry *e = &g_tx.entries[i];
    if (e->obj == obj) {   /* already open in this transaction */
        if (write && !e->written) {
            e->written = 1;
            e->op = g_tx.op;
            e->detail = g_tx.detail;
        }
        return e->data;
    }
    if (g_tx.copy_used + size > g_tx.copy_cap)
        return (char *)tx_raise_abort(ABORT_TOO_LARGE, obj, struct_id, index, write);
    char *copy = g_tx.copybuf + g_tx.copy_used;
    for (unsigned spins = 0;; spins++) {
        uint64_t w1 = atomic_load_explicit(&obj->lock, memory_order_acquire);
        if (w1 & LOCK_BIT) {
            if (spins < SPIN_LOCKED) {
                if (spins > 16) sched_yield();
                continue;
            }
            return (char *)tx_raise_abort(ABORT_LOCKED, obj, struct_id, index, write);
        }
        memcpy(copy, OBJ_DATA(obj), size);
        atomic_thread_fence(memory_order_acquire);
        uint64_t w2 = atomic_load_explicit(&obj->lock, memory_order_relaxed);
        if (w1 != w2) continue;
        if (LOCK_VERSION(w1) > g_tx.rv && extend_snapshot() < 0) {
            return (char *)tx_raise_abort(ABORT_SNAPSHOT, obj, struct_id, index, write);
        }
        e->version = LOCK_VERSION(w1);
        break;
    }
    g_tx.copy_used += (size + 7) & ~7u;
    e->obj = obj;
    e->data = copy;
    e->size = size;
    e->index = index;
    e->struct_id = struct_id;
    e->written = (uint8_t)write;
    e->site = g_tx.site;
    e->op = g_tx.op;
    e->detail = g_tx.detail;
    return copy;
}

/* --------------------------------------------------------------- commit */

static void release_locks(uint32_t upto) {
    for (uint32_t i = 0; i < upto; i++) {
        TxEntry *e = &g_tx.entries[i];
        if (e->obj && e->written) {
            uint64_t w = atomic_load(&e->obj->lock);
            if ((w & LOCK_BIT) && LOCK_OWNER(w) == (uint64_t)g_slot)
                atomic_store(&e->obj->lock, e->version << 8);
        }
    }
}

static void finish_abort(void) {
    STM_TIMED_BEGIN;
    undo_apply_all();
    g_tx.nentries = 0;
    g_tx.emit_used = 0;
    stats_count_abort();
    STM_TIMED_END;
    tx_end();
}

void tx_abort(void) { finish_abort(); }

/* Direct mode: publish a new version on every shared object written, so a
 * concurrent snapshot (after an irrevocable transaction) sees the change. */
static int commit_direct(void) {
    if (g_arena && g_tx.irrevocable) {
        uint64_t wv = atomic_fetch_add(&g_arena->clock, 1) + 1;
        (void)wv;
        /* In-place writes were made while every other slot waited; bumping
         * the clock makes later snapshots newer than them.  Objects written
         * keep their old version word, which is safe because no transaction
         * that could have read the old payload is still running. */
    }
    g_tx.undo_used = 0;
    undo_last = 0;
    if (g_arena) my_shared()->stats.tx_committed++;
    tx_end();
    return 0;
}

static int tx_commit_impl(void);

int tx_commit(void) {
    if (g_tx.sampled) g_tx.t_commit = mono_ns();   /* tx_end() adds the commit to the STM time */
    return tx_commit_impl();
}

static int tx_commit_impl(void) {
    if (g_tx.doomed) {
        finish_abort();
        return -1;
    }
    if (g_tx.mode != TX_STM) return commit_direct();
    SlotShared *me = my_shared();
    uint32_t n = g_tx.nentries, nwritten = 0;
    for (uint32_t i = 0; i < n; i++) nwritten += g_tx.entries[i].obj && g_tx.entries[i].written;
    if (nwritten == 0) {   /* read-only in shared memory: the snapshot was consistent */
        g_tx.undo_used = 0;
        undo_last = 0;
        me->stats.tx_committed++;
        tx_end();
        return 0;
    }
    /* 1. lock the write set */
    for (uint32_t i = 0; i < n; i++) {
        TxEntry *e = &g_tx.entries[i];
        if (!e->obj || !e->written) continue;
        uint64_t expect = e->version << 8;
        uint64_t mine = expect | ((uint64_t)g_slot << 1) | LOCK_BIT;
        if (!atomic_compare_exchange_strong(&e->obj->lock, &expect, mine)) {
            int cause = (expect & LOCK_BIT) ? ABORT_LOCKED : ABORT_VALIDATION;
            release_locks(i);
            tx_raise_abort(cause, e->obj, e->struct_id, e->index, OP_WRITE);
            PyErr_Clear();
            finish_abort();
            return -1;
        }
    }
    /* 2. write version; 3. validate the read set */
    uint64_t wv = atomic_fetch_add(&g_arena->clock, 1) + 1;
    if (wv != g_tx.rv + 1) {
        for (uint32_t i = 0; i < n; i++) {
            TxEntry *e = &g_tx.entries[i];
            if (!e->obj || e->written) continue;
            uint64_t w = atomic_load(&e->obj->lock);
            if (LOCK_VERSION(w) != e->version || ((w & LOCK_BIT) && LOCK_OWNER(w) != (uint64_t)g_slot)) {
                release_locks(n);
                tx_raise_abort((w & LOCK_BIT) ? ABORT_LOCKED : ABORT_VALIDATION, e->obj, e->struct_id,
                               e->index, OP_READ);
                PyErr_Clear();
                finish_abort();
                return -1;
            }
        }
    }
    /* 4. redo log (crash recovery), 5. write back and release */
    uint32_t used = 0;
    int logged = 1;
    for (uint32_t i = 0; i < n; i++) {
        TxEntry *e = &g_tx.entries[i];
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
    for (uint32_t i = 0; i < n; i++) {
        TxEntry *e = &g_tx.entries[i];
        if (!e->obj || !e->written) continue;
        memcpy(OBJ_DATA(e->obj), e->data, e->size);
        e->obj->info = (uint64_t)g_slot | ((uint64_t)e->op << 8) | ((uint64_t)(e->site & 0xffff) << 16) |
                       ((uint64_t)e->detail << 32);
        atomic_store_explicit(&e->obj->lock, wv << 8, memory_order_release);
    }
    atomic_store(&me->redo_state, REDO_IDLE);
    g_tx.undo_used = 0;
    undo_last = 0;
    me->stats.tx_committed++;
    tx_end();
    return 0;
}

/* ------------------------------------------------------- Python functions */

static PyObject *py_now(PyObject *self, PyObject *noargs) {
    return PyLong_FromUnsignedLongLong(g_clock);
}

static PyObject *py_set_clock(PyObject *self, PyObject *arg) {
    unsigned long long t = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (t > g_clock) g_clock = t;
    if (g_arena) my_shared()->stats.clock_ns = g_clock;
    Py_RETURN_NONE;
}

static PyObject *py_set_slot(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (!g_arena || s < 0 || (uint32_t)s >= g_arena->nslots) {
        PyErr_SetString(PyExc_ValueError, "bad slot");
        return NULL;
    }
    g_slot = (int)s;
    Py_RETURN_NONE;
}

static PyObject *py_tx_begin(PyObject *self, PyObject *args) {
    int mode = TX_DIRECT, irrevocable = 0;
    if (!PyArg_ParseTuple(args, "|ii", &mode, &irrevocable)) return NULL;
    if (g_tx.active) {
        PyErr_SetString(PyExc_RuntimeError, "a transaction is already running");
        return NULL;
    }
    tx_begin(mode, irrevocable);
    Py_RETURN_NONE;
}

static PyObject *py_tx_commit(PyObject *self, PyObject *noargs) {
    if (!g_tx.active) Py_RETURN_FALSE;
    return PyBool_FromLong(tx_commit() == 0);
}

static PyObject *py_tx_abort(PyObject *self, PyObject *noargs) {
    if (g_tx.active) finish_abort();
    Py_RETURN_NONE;
}

static PyObject *py_tx_active(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(g_tx.active);
}

static PyObject *py_tx_doomed(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(g_tx.doomed);
}

/* Remember that an error at `site` was logged; True the first time. */
static PyObject *py_first_error_at(PyObject *self, PyObject *arg) {
    uint64_t h = PyLong_AsUnsignedLongLongMask(arg) | 1;
    if (!g_arena) Py_RETURN_TRUE;
    for (unsigned i = 0; i < ERROR_SITES; i++) {
        _Atomic uint64_t *cell = &g_arena->error_sites[(h + i) % ERROR_SITES];
        uint64_t cur = atomic_load(cell);
        if (cur == h) Py_RETURN_FALSE;
        if (cur == 0) {
            uint64_t zero = 0;
            if (atomic_compare_exchange_strong(cell, &zero, h)) Py_RETURN_TRUE;
            if (zero == h) Py_RETURN_FALSE;
        }
    }
    Py_RETURN_FALSE;
}

/* Finish the write-back of a slot that died between REDO_WRITING and IDLE:
 * replay its redo log, then release whatever it still holds locked. */
static PyObject *py_recover_slot(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (!g_arena || s < 0 || (uint32_t)s >= g_arena->nslots) {
        PyErr_SetString(PyExc_ValueError, "bad slot");
        return NULL;
    }
    SlotShared *sh = &g_arena->slots[s];
    int replayed = 0;
    if (atomic_load(&sh->redo_state) == REDO_WRITING && sh->redo_used) {
        uint32_t at = 0;
        while (at < sh->redo_used) {
            ObjHdr *obj;
            uint32_t size;
            memcpy(&obj, sh->redo + at, sizeof(void *));
            memcpy(&size, sh->redo + at + sizeof(void *), 4);
            memcpy(OBJ_DATA(obj), sh->redo + at + sizeof(void *) + 8, size);
            atomic_store(&obj->lock, sh->redo_version << 8);
            at += (uint32_t)(sizeof(void *) + 8 + ((size + 7) & ~7u));
            replayed++;
        }
    }
    atomic_store(&sh->redo_state, REDO_IDLE);
    atomic_store(&sh->in_tx, 0);
    uint32_t owner = (uint32_t)s + 1;
    atomic_compare_exchange_strong(&g_arena->irrevocable, &owner, 0);
    return PyLong_FromLong(replayed);
}

static PyObject *py_slot_stats(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (!g_arena || s < 0 || (uint32_t)s >= g_arena->nslots) {
        PyErr_SetString(PyExc_ValueError, "bad slot");
        return NULL;
    }
    SlotStats *st = &g_arena->slots[s].stats;
    PyObject *outs = PyList_New(g_cfg.ndevs);
    for (int d = 0; d < g_cfg.ndevs; d++) PyList_SET_ITEM(outs, d, PyLong_FromUnsignedLongLong(st->out_per_dev[d]));
    PyObject *causes = PyDict_New();
    for (int c = 0; c < ABORT_NCAUSES; c++) {
        PyObject *v = PyLong_FromUnsignedLongLong(st->aborts_by_cause[c]);
        PyDict_SetItemString(causes, abort_cause_names[c], v);
        Py_DECREF(v);
    }
    return Py_BuildValue(
        "{sKsKsKsKsKsKsNsKsKsKsKsKsNsKsKsKsKsKsKsKsKsKsKsKsKsK}", "packets", st->packets_in, "packets_out",
        st->packets_out, "dropped", st->dropped, "malformed", st->malformed, "handler_errors",
        st->handler_errors, "table_full", st->table_full, "out_per_dev", outs, "transactions",
        st->tx_started, "commits", st->tx_committed, "aborts", st->tx_aborted, "irrevocable",
        st->irrevocable, "splits", st->splits, "aborts_by_cause", causes, "sets_created",
        st->sets_created, "sets_expired", st->sets_expired, "sets_live", st->sets_live, "busy_ns",
        st->busy_ns, "clock_ns", st->clock_ns, "rx_done", st->rx_done, "peak_rss_kb", st->peak_rss_kb,
        "pss_kb", st->pss_kb, "begin_ns", st->begin_ns, "finish_ns", st->finish_ns, "tx_sampled", st->tx_sampled,
        "tx_sampled_ns", st->tx_sampled_ns, "stm_sampled_ns", st->stm_sampled_ns);
}

/* conflicts(slot, since=0) -> (records, cursor, lost): the conflict records
 * of a slot after `since` (pass the returned cursor next time).  `lost` counts
 * records overwritten before they were read (the ring holds CONFLICT_RING). */
static PyObject *py_conflicts(PyObject *self, PyObject *args) {
    long s;
    unsigned long long since = 0;
    if (!PyArg_ParseTuple(args, "l|K", &s, &since)) return NULL;
    if (!g_arena || s < 0 || (uint32_t)s >= g_arena->nslots) {
        PyErr_SetString(PyExc_ValueError, "bad slot");
        return NULL;
    }
    SlotShared *sh = &g_arena->slots[s];
    uint64_t n = atomic_load(&sh->conflict_count);
    uint64_t start = since, lost = 0;
    if (n > CONFLICT_RING && start < n - CONFLICT_RING) {
        lost = n - CONFLICT_RING - start;
        start = n - CONFLICT_RING;
    }
    PyObject *out = PyList_New(0);
    for (uint64_t i = start; i < n; i++) {
        ConflictRecord *c = &sh->conflicts[i % CONFLICT_RING];
        PyObject *t = Py_BuildValue("(siissiIIII)", abort_cause_names[c->cause], c->struct_id, c->index,
                                    op_code_names[c->own_op < OPC_NCODES ? c->own_op : 0],
                                    op_code_names[c->other_op < OPC_NCODES ? c->other_op : 0],
                                    c->other_slot == 0xff ? -1 : (int)c->other_slot, c->own_site,
                                    c->other_site, c->own_detail, c->other_detail);
        PyList_Append(out, t);
        Py_DECREF(t);
    }
    return Py_BuildValue("(NKK)", out, (unsigned long long)n, (unsigned long long)lost);
}

/* record_memory(peak_rss_kb, pss_kb): a worker's memory use, reported at exit. */
static PyObject *py_record_memory(PyObject *self, PyObject *args) {
    unsigned long long rss, pss;
    if (!PyArg_ParseTuple(args, "KK", &rss, &pss)) return NULL;
    if (g_arena) {
        my_shared()->stats.peak_rss_kb = rss;
        my_shared()->stats.pss_kb = pss;
    }
    Py_RETURN_NONE;
}

static PyObject *py_set_site(PyObject *self, PyObject *arg) {
    g_tx.site = (uint32_t)PyLong_AsUnsignedLongLongMask(arg);
    Py_RETURN_NONE;
}

PyMethodDef stm_methods[] = {
    {"arena_create", py_arena_create, METH_VARARGS, "arena_create(size, nslots)"},
    {"arena_destroy", py_arena_destroy, METH_NOARGS, "unmap the arena (after the run)"},
    {"arena_used", py_arena_used, METH_NOARGS, "bytes of the arena in use"},
    {"now", py_now, METH_NOARGS, "virtual or monotonic time of this process, in ns"},
    {"set_clock", py_set_clock, METH_O, "advance this process's clock (ns)"},
    {"set_slot", py_set_slot, METH_O, "set this process's slot"},
    {"tx_begin", py_tx_begin, METH_VARARGS, "tx_begin(mode=DIRECT, irrevocable=0)"},
    {"tx_commit", py_tx_commit, METH_NOARGS, "commit; False if it aborted"},
    {"tx_abort", py_tx_abort, METH_NOARGS, "roll back the running transaction"},
    {"tx_active", py_tx_active, METH_NOARGS, NULL},
    {"tx_doomed", py_tx_doomed, METH_NOARGS, NULL},
    {"first_error_at", py_first_error_at, METH_O, NULL},
    {"recover_slot", py_recover_slot, METH_O, "finish a dead slot's commit, release its locks"},
    {"slot_stats", py_slot_stats, METH_O, NULL},
    {"conflicts", py_conflicts, METH_VARARGS, "conflicts(slot, since=0) -> (records, cursor, lost)"},
    {"set_site", py_set_site, METH_O, NULL},
    {"record_memory", py_record_memory, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};
