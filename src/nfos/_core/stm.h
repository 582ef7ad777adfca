/* Layer 2: software transactional memory over the arena (TL2 with LSA
 * snapshot extension, object granularity, redo log for crash recovery).
 *
 * Python-free and self-contained: it knows objects, slots and a descriptor,
 * not workers, packets, Python or the profiler.  Every call takes the
 * descriptor explicitly (TinySTM's `_tx` style).  A failed call returns NULL
 * or -1 with the reason in the descriptor (`fail`, `fail_cause`); an abort
 * also leaves a conflict description (StmConflict) that the abort hook gets
 * when the attempt is rolled back.  The profiler plugs in through two hooks:
 * `site_hook` (the current access site, called on every open when set: NULL
 * is profiling off, one pointer test) and `abort_hook` (record an abort).
 * Opens carry an opaque 64-bit tag (the operation, base.h OP_TAG) that a
 * commit stores in the object's last-writer word.  See stm.c for the
 * algorithm. */
#ifndef NFOS_STM_H
#define NFOS_STM_H

#include "arena.h"

/* ------------------------------------------------------ transactional objects
 * Every shared object (a Vector element, a DistributedObj replica, a Map
 * bucket, an allocator cell or pool head) starts with this 16-byte header;
 * its payload follows.
 *
 * lock word:  bits 63..8  version (the global clock value of the commit
 *                         that last wrote the object)
 *             bits  7..1  owner slot while locked
 *             bit      0  locked
 * The version stays in the word while it is locked, so the owner can check
 * that what it read is still what it is about to overwrite.  A fresh object
 * is all zeroes (unlocked, version 0), so structures need no initialisation
 * pass and untouched pages of the arena stay unbacked.
 *
 * info word:  who wrote last: bits 7..0 its slot, bits 31..16 its site (from
 *             the site hook; 0 when profiling is off), and in the bits of
 *             STM_TAG_MASK (15..8, 63..32) the tag of the open that wrote it. */
typedef struct {
    _Atomic uint64_t lock;
    uint64_t info;
} ObjHdr;

#define LOCK_BIT 1ull
#define LOCK_OWNER(w) ((((w) >> 1) & 0x7f))
#define LOCK_VERSION(w) ((w) >> 8)
#define OBJ_DATA(o) ((char *)(o) + sizeof(ObjHdr))

#define STM_TAG_MASK 0xffffffff0000ff00ull
#define INFO_SLOT(info) ((uint8_t)((info) & 0xff))
#define INFO_SITE(info) ((uint32_t)(((info) >> 16) & 0xffff))

/* Stride of an object with `payload` bytes: header + payload, cache-line
 * aligned so that two objects never share a line (no false conflicts). */
static inline size_t obj_stride(size_t payload) {
    size_t s = sizeof(ObjHdr) + payload;
    return (s + NFOS_CACHELINE - 1) & ~(size_t)(NFOS_CACHELINE - 1);
}

/* ------------------------------------------------------------------ tunables
 * The descriptor holds up to TX_MAX_ENTRIES objects and TX_COPY_BYTES of
 * copies; a bigger transaction aborts with ABORT_TOO_LARGE (the runtime then
 * splits its batch, or runs it irrevocably).  The undo log grows on demand
 * from TX_UNDO_BYTES.  SPIN_LOCKED is how often an open retries an object
 * another slot is writing back before it aborts (`locked`).  One transaction
 * in STM_SAMPLE is timed.  REDO_BYTES bounds a commit's redo log (a larger
 * write set commits unlogged: it cannot be completed after a crash). */
#define TX_MAX_ENTRIES 4096
#define TX_HASH_MIN 256                  /* slots of the descriptor's hash table at first */
#define TX_HASH_MAX (2 * TX_MAX_ENTRIES)
#define TX_COPY_BYTES (1u << 20)
#define TX_UNDO_BYTES (4u << 20)
#define SPIN_LOCKED 256
#define STM_SAMPLE 64
#define REDO_BYTES (256 * 1024)
/* A slot's undo log lives in the arena (StmSlot.undo) up to UNDO_SHARED_BYTES,
 * so the control process can roll back a dead worker's private writes; a
 * larger one moves to private memory for the rest of that transaction
 * (undo_overflow: such a death cannot be rolled back). */
#define UNDO_SHARED_BYTES (512 * 1024)

/* ------------------------------------------------------- shared STM state */
enum { REDO_IDLE = 0, REDO_WRITING = 1 };

typedef struct {
    _Atomic uint32_t in_tx;          /* inside a transaction (irrevocable waits for 0) */
    _Atomic uint32_t redo_state;     /* REDO_WRITING while a commit writes back */
    uint32_t redo_used;              /* bytes of redo log (0: the commit was not logged) */
    uint32_t pad;
    uint64_t redo_version;           /* the version the logged commit releases with */
    char redo[REDO_BYTES];           /* records: object pointer, size (8 bytes), payload */
    /* the objects a commit is locking (written before the first lock is taken),
     * so the locks of a slot that dies while committing can be released */
    _Atomic uint32_t nlocks;
    uint32_t pad2;
    ObjHdr *locks[TX_MAX_ENTRIES];
    /* the running transaction's undo log (records as in the descriptor):
     * undo_last is the offset of the last complete record + 1 (0: none) */
    _Atomic uint32_t undo_last;
    _Atomic uint32_t undo_overflow;  /* the log outgrew `undo`: not recoverable */
    _Atomic uint64_t commit_seq;     /* transactions committed by the slot (after their undo log is dropped) */
    char undo[UNDO_SHARED_BYTES];
} StmSlot;

typedef struct {
    _Atomic uint64_t clock;          /* global version clock (TL2) */
    char pad0[56];
    _Atomic uint32_t irrevocable;    /* 0, or owner slot + 1 */
    uint32_t nslots;
    char pad1[56];
    StmSlot slots[];
} StmShared;

/* The shared state for `nslots` slots, in the arena (NULL: it is full). */
StmShared *stm_shared_create(Arena *a, uint32_t nslots);

/* Finish the write-back of a slot that died between REDO_WRITING and IDLE:
 * replay its redo log (which releases the objects it wrote with the new
 * version), clear its in_tx flag and irrevocable token.  Returns the number
 * of objects replayed. */
int stm_recover_slot(StmShared *sh, uint32_t slot);
/* Before stm_recover_slot, for a slot that died: unless it died while writing
 * back (its commit is completed, private writes kept), roll back its
 * running transaction's private writes from its undo log in the arena:
 * memory restores inside [lo, hi) (elsewhere is the dead process's own
 * memory) and undo callbacks (the caller makes them act on the dead slot's
 * state, e.g. its packet-set table).  Releases the locks its commit had
 * taken.  Returns the records applied, or -1: the log had overflowed into
 * private memory (nothing applied). */
int stm_recover_undo(StmShared *sh, uint32_t slot, const void *lo, const void *hi);

/* ------------------------------------------------------------- descriptor */
enum tx_mode {
    TX_DIRECT = 0,   /* write in place, undo log: sequential mode, irrevocable */
    TX_STM = 1,      /* copy on open, validate, write back on commit */
    TX_UNLOGGED = 2  /* write in place, no undo: @nf.init, before any worker exists */
};

typedef struct {
    ObjHdr *obj;          /* NULL for a private (undo-only) entry */
    char *data;           /* STM: the private copy, or the object's payload (an in-place read); DIRECT: the object */
    uint64_t version;     /* version seen when opened (STM) */
    uint64_t tag;         /* tag of the open (of the write, once written) */
    uint32_t size;
    uint32_t index;
    uint32_t site;
    uint32_t hslot;       /* its slot in the descriptor's hash table */
    uint16_t struct_id;
    uint8_t written;
    uint8_t undo_saved;
    uint8_t copied;       /* STM: data is a private copy (else it is read in place, validated per load) */
    uint8_t fresh;        /* an in-place read whose loads have not been validated yet */
} TxEntry;

/* What an abort met: filled when the attempt is doomed (the first cause wins). */
typedef struct {
    uint16_t cause;           /* enum abort_cause */
    uint16_t struct_id;
    uint32_t index;
    uint64_t own_tag;         /* what this transaction did to the object */
    uint32_t own_site;
    uint8_t other_slot;       /* who holds or last wrote the object (0xff: unknown) */
    uint64_t other_info;      /* the object's info word when met (0: no object) */
    uint64_t ctx;             /* the descriptor's ctx word when the attempt was doomed */
} StmConflict;

typedef struct StmTx StmTx;
typedef uint32_t (*stm_site_hook)(void *arg);
typedef void (*stm_abort_hook)(StmTx *tx, const StmConflict *c, void *arg);
typedef void (*stm_fault_hook)(StmTx *tx, void *arg);
typedef void (*undo_fn)(void *payload);

enum stm_fail {
    STM_OK = 0,
    STM_INACTIVE,    /* no transaction is running */
    STM_DOOMED,      /* the attempt had already aborted */
    STM_ABORTED      /* this call aborted the attempt: fail_cause says why */
};

struct StmTx {
    /* the slot this descriptor runs as (stm_tx_bind); NULL shared: no arena yet */
    StmShared *shared;
    uint32_t slot;
    SlotCounters *counters;   /* transactions, commits, aborts, aborts_by_cause, irrevocable, stm_sampled_* */
    /* hooks (NULL: none) */
    stm_site_hook site_hook;
    stm_abort_hook abort_hook;
    void *hook_arg;
    stm_fault_hook fault_hook;   /* tests: called once the redo log is WRITING and one object is written back */
    void *fault_arg;

    int active;
    int mode;
    int irrevocable;
    int doomed;               /* an abort happened; later opens fail too */
    int fail;                 /* enum stm_fail: why the last call returned NULL / -1 */
    int fail_cause;           /* STM_ABORTED: its abort cause */
    uint64_t serial;          /* changes at every attempt: stale views are refused */
    uint64_t rv;              /* snapshot version */
    uint64_t wv;              /* after a commit: its write version (the clock it took; 0: it took none, read-only) */
    TxEntry *entries;
    uint32_t nentries, cap;
    uint32_t *htab;           /* open addressing: object (or private pointer) -> entry index + 1; 0 empty */
    uint32_t hmask;           /* slots - 1: small while transactions are (its lines stay in L1) */
    char *copybuf;
    size_t copy_used, copy_cap;
    char *undo;               /* undo_priv, or the slot's StmSlot.undo while bound to an arena */
    size_t undo_used, undo_cap;
    char *undo_priv;
    size_t undo_priv_cap;
    uint32_t undo_last;       /* offset of the last undo record + 1 (0: none) */
    int conflict_valid;
    StmConflict conflict;
    uint32_t site;            /* the current access site (site hook) */
    uint64_t ctx;             /* the runtime's: what is running (copied into a conflict; opaque here) */
    uint64_t tag;             /* the tag of the current open */
    int sampled;              /* this transaction is timed (1 in STM_SAMPLE) */
    uint64_t count;           /* transactions begun by this descriptor */
    uint64_t t_begin, t_commit, stm_ns;
};

/* Allocate the descriptor's buffers: 0, or -1 (out of memory); free them. */
int stm_tx_init(StmTx *tx);
void stm_tx_free(StmTx *tx);
/* Run as `slot` of `shared`, counting into `counters` (NULL, NULL: no arena). */
void stm_tx_bind(StmTx *tx, StmShared *shared, uint32_t slot, SlotCounters *counters);

/* `irrevocable`: 0, or STM_IRREVOCABLE (take the global token and wait until
 * no other slot is inside a transaction: a fallback, counted in
 * `irrevocable`), or STM_ALONE (the same exclusion, for work that is meant to
 * run alone, e.g. a periodic handler at a barrier: not counted). */
enum { STM_IRREVOCABLE = 1, STM_ALONE = 2 };
void stm_begin(StmTx *tx, int mode, int irrevocable);
/* Open `obj` (payload `size` bytes) for reading or writing; returns where to
 * access its payload, or NULL (tx->fail says why). */
char *stm_open(StmTx *tx, ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, int write,
               uint64_t tag);
/* In-place read (no copy): where to load `obj`'s payload from — the object
 * itself, or this transaction's private copy once it has one — and its entry
 * (*ent; -1 outside STM mode, where the object is read directly).  The caller
 * loads what it needs from it, then calls stm_read_check(tx, *ent) before it
 * uses what it loaded for anything but a bounded local computation:
 * 0   the loads saw the version in the read set (opacity holds, as with a copy);
 * 1   the object changed or was being written while loading, and nothing loaded
 *     from it was validated before: the entry now has the new version (the
 *     snapshot was extended), load again;
 * -1  aborted (tx->fail says why): a validated read of this transaction is stale.
 * A later write (stm_open) copies the object at the version read, or aborts.
 * NULL: see stm_open. */
char *stm_read_open(StmTx *tx, ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, uint64_t tag,
                    int32_t *ent);
int stm_read_recheck(StmTx *tx, int32_t ent);
static inline int stm_read_check(StmTx *tx, int32_t ent) {
    if (ent < 0) return 0;
    TxEntry *e = &tx->entries[ent];
    if (e->copied) return 0;
    atomic_thread_fence(memory_order_acquire);   /* the loads before, the lock word after */
    if (atomic_load_explicit(&e->obj->lock, memory_order_relaxed) == e->version << 8) {
        e->fresh = 0;
        return 0;
    }
    return stm_read_recheck(tx, ent);
}
/* Copy `len` bytes at `src` (inside the payload of entry `ent`, or anywhere
 * when ent < 0) to dst, validated: 0, or -1 (aborted). */
static inline int stm_read_bytes(StmTx *tx, int32_t ent, const char *src, void *dst, size_t len) {
    for (;;) {
        memcpy(dst, src, len);
        int r = stm_read_check(tx, ent);
        if (r <= 0) return r;   /* 1: the entry has a new version (still in place): load again */
    }
}
/* Before writing private memory in place: remember its old bytes (undo). */
int stm_save_private(StmTx *tx, void *ptr, uint32_t size);
/* A generic undo record: fn(copy of payload) runs if the attempt aborts. */
int stm_push_undo(StmTx *tx, undo_fn fn, const void *payload, uint32_t size);
/* 0 committed, -1 aborted (everything of the attempt rolled back). */
int stm_commit(StmTx *tx);
/* Roll back everything of the attempt. */
void stm_abort(StmTx *tx);
/* Roll back with `cause` as the attempt's abort cause (e.g. a handler error). */
void stm_abort_cause(StmTx *tx, int cause);
/* Roll back as if the attempt never began (a stop request interrupted it):
 * no abort is counted and its begin is not counted as a transaction. */
void stm_rollback(StmTx *tx);

#endif
