/* The STM tested in C, without Python: this program links base.c, arena.c
 * and stm.c alone, forks processes that act as slots over one arena, and
 * checks
 *   - commit and abort of write sets (values, versions, undo of private memory),
 *   - validation and snapshot aborts, and what the abort hook is told,
 *   - the lock word's owner bits, and that a commit releases with the new version,
 *   - redo-log completion after a worker dies between WRITING and IDLE,
 *   - the irrevocable token (others wait at begin; it waits until it runs alone),
 *   - in-place reads (stm_read_open / stm_read_check, no copy): the version
 *     recorded, a re-read after a concurrent commit, read-then-write of one
 *     object, snapshot extension, the descriptor's hash table growing and
 *     shrinking back,
 *   - opacity: with writers moving an amount between two objects (and
 *     rewriting both halves of a pair inside one object), readers never see a
 *     torn state, not even in attempts that go on to abort — readers that copy
 *     and readers that read in place.
 * Run by tests/c/test_stm_c.py (plain, and under ASan + UBSan).  A failed
 * check prints what it expected and what it saw, then exits 1.  Waits are
 * for events, never for a time; the short sleeps only make a wrong order
 * likely to show. */
#include "stm.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define NSLOTS 8

#define CHECK(cond, ...)                                                               \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "test_stm: FAIL %s:%d: %s\n    ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
            fflush(stderr);                                                            \
            _exit(1);                                                                  \
        }                                                                              \
    } while (0)

static Arena arena;
static StmShared *sh;
static SlotCounters *counters;   /* one per slot, in the arena */

/* Flags the forked processes share (in the arena). */
typedef struct {
    _Atomic int a, b, c, d;
    _Atomic long done;
    _Atomic long torn;
} Flags;
static Flags *flags;

static ObjHdr *new_obj(uint32_t payload) {
    ObjHdr *o = arena_alloc(&arena, obj_stride(payload), NFOS_CACHELINE);
    CHECK(o != NULL, "the test arena is full");
    return o;
}

static uint64_t *val(ObjHdr *o) { return (uint64_t *)OBJ_DATA(o); }

static void tx_init(StmTx *tx, uint32_t slot) {
    CHECK(stm_tx_init(tx) == 0, "stm_tx_init: out of memory");
    stm_tx_bind(tx, sh, slot, &counters[slot]);
}

static void wait_for(_Atomic int *flag, int value) {
    while (atomic_load(flag) < value) sched_yield();
}

/* The abort hook: remember the last conflict reported. */
static StmConflict last;
static int hook_calls;
static void on_abort(StmTx *tx, const StmConflict *c, void *arg) {
    (void)tx;
    (void)arg;
    last = *c;
    hook_calls++;
}

static pid_t spawn(void (*fn)(void)) {
    fflush(stdout);
    fflush(stderr);
    pid_t p = fork();
    CHECK(p >= 0, "fork: %s", strerror(errno));
    if (p == 0) {
        fn();
        _exit(0);
    }
    return p;
}

static void join(pid_t p, const char *what) {
    int st;
    CHECK(waitpid(p, &st, 0) == p, "waitpid(%s): %s", what, strerror(errno));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: exited with status %d (signal %d)", what,
          WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* ------------------------------------------------------ commit and abort */

static int undo_runs;
static void count_undo(void *payload) { undo_runs += *(int *)payload; }

static void test_commit_abort(void) {
    StmTx tx;
    tx_init(&tx, 0);
    ObjHdr *a = new_obj(8), *b = new_obj(8);
    const uint64_t tag = 0x1234567800004200ull;

    /* commit: values written back, lock word = new version, unlocked; info = slot + tag */
    uint64_t clock0 = atomic_load(&sh->clock);
    stm_begin(&tx, TX_STM, 0);
    uint64_t *pa = (uint64_t *)stm_open(&tx, a, 8, 1, 0, OP_WRITE, tag);
    uint64_t *pb = (uint64_t *)stm_open(&tx, b, 8, 1, 1, OP_WRITE, tag);
    CHECK(pa && pb, "open for writing failed (fail %d)", tx.fail);
    CHECK((char *)pa != OBJ_DATA(a), "an STM open must give a private copy");
    *pa = 5;
    *pb = 7;
    CHECK(*val(a) == 0, "a write is visible before commit: %llu", (unsigned long long)*val(a));
    CHECK(stm_commit(&tx) == 0, "commit failed (fail %d cause %d)", tx.fail, tx.fail_cause);
    uint64_t wv = atomic_load(&sh->clock);
    CHECK(wv == clock0 + 1, "one commit moves the clock by one: %llu -> %llu", (unsigned long long)clock0,
          (unsigned long long)wv);
    CHECK(*val(a) == 5 && *val(b) == 7, "committed values: a=%llu b=%llu", (unsigned long long)*val(a),
          (unsigned long long)*val(b));
    CHECK(atomic_load(&a->lock) == wv << 8, "a's lock word after commit: %#llx, want version %llu unlocked",
          (unsigned long long)atomic_load(&a->lock), (unsigned long long)wv);
    CHECK(INFO_SLOT(a->info) == 0 && (a->info & STM_TAG_MASK) == (tag & STM_TAG_MASK),
          "a's info word %#llx: want slot 0 and the tag's bits", (unsigned long long)a->info);
    CHECK(counters[0].commits[0] == 1 && counters[0].transactions[0] == 1, "commits %llu transactions %llu",
          (unsigned long long)counters[0].commits[0], (unsigned long long)counters[0].transactions[0]);

    /* abort: the copy is dropped, the object and its version untouched; private memory restored */
    uint64_t priv = 1;
    int one = 1;
    undo_runs = 0;
    stm_begin(&tx, TX_STM, 0);
    pa = (uint64_t *)stm_open(&tx, a, 8, 1, 0, OP_WRITE, tag);
    *pa = 100;
    CHECK(stm_save_private(&tx, &priv, sizeof priv) == 0, "save_private failed");
    priv = 2;
    CHECK(stm_push_undo(&tx, count_undo, &one, sizeof one) == 0, "push_undo failed");
    stm_abort(&tx);
    CHECK(*val(a) == 5 && atomic_load(&a->lock) == wv << 8, "abort changed a: %llu, lock %#llx",
          (unsigned long long)*val(a), (unsigned long long)atomic_load(&a->lock));
    CHECK(priv == 1, "private memory not restored by the abort: %llu", (unsigned long long)priv);
    CHECK(undo_runs == 1, "undo callback ran %d times", undo_runs);
    CHECK(counters[0].aborts[0] == 1, "aborts %llu", (unsigned long long)counters[0].aborts[0]);

    /* direct mode writes in place, the undo log restores it */
    stm_begin(&tx, TX_DIRECT, 0);
    pa = (uint64_t *)stm_open(&tx, a, 8, 1, 0, OP_WRITE, tag);
    CHECK((char *)pa == OBJ_DATA(a), "a direct open gives the object itself");
    *pa = 9;
    stm_abort(&tx);
    CHECK(*val(a) == 5, "direct-mode abort left a=%llu", (unsigned long long)*val(a));

    /* a read-only transaction commits without moving the clock or any version */
    stm_begin(&tx, TX_STM, 0);
    CHECK(stm_open(&tx, a, 8, 1, 0, OP_READ, tag) != NULL, "read open failed");
    CHECK(stm_commit(&tx) == 0, "read-only commit failed");
    CHECK(atomic_load(&sh->clock) == wv && atomic_load(&a->lock) == wv << 8, "a read-only commit wrote");

    /* outside a transaction; after an abort */
    CHECK(stm_open(&tx, a, 8, 1, 0, OP_READ, tag) == NULL && tx.fail == STM_INACTIVE, "open outside: fail %d",
          tx.fail);
    stm_begin(&tx, TX_STM, 0);
    stm_abort_cause(&tx, ABORT_HANDLER_ERROR);
    CHECK(counters[0].aborts_by_cause[ABORT_HANDLER_ERROR] == 1, "handler_error aborts: %llu",
          (unsigned long long)counters[0].aborts_by_cause[ABORT_HANDLER_ERROR]);
    stm_tx_free(&tx);
}

/* rollback (a stop request): undone as an abort, but neither it nor its begin counted */
static void test_rollback(void) {
    StmTx tx;
    tx_init(&tx, 0);
    ObjHdr *a = new_obj(8);
    const uint64_t tag = 0x1234567800004200ull;
    uint64_t aborts = counters[0].aborts[0], txs = counters[0].transactions[0], before = *val(a);
    uint64_t priv = 1;
    stm_begin(&tx, TX_STM, 0);
    uint64_t *pa = (uint64_t *)stm_open(&tx, a, 8, 1, 0, OP_WRITE, tag);
    CHECK(pa != NULL, "open for writing failed (fail %d)", tx.fail);
    *pa = 100;
    CHECK(stm_save_private(&tx, &priv, sizeof priv) == 0, "save_private failed");
    priv = 3;
    stm_rollback(&tx);
    CHECK(!tx.active && *val(a) == before && priv == 1, "rollback: active %d a=%llu priv=%llu", tx.active,
          (unsigned long long)*val(a), (unsigned long long)priv);
    CHECK(counters[0].aborts[0] == aborts && counters[0].transactions[0] == txs,
          "rollback counted: aborts %llu -> %llu, transactions %llu -> %llu", (unsigned long long)aborts,
          (unsigned long long)counters[0].aborts[0], (unsigned long long)txs,
          (unsigned long long)counters[0].transactions[0]);
    CHECK(atomic_load(&sh->slots[0].in_tx) == 0, "rollback left the slot inside a transaction");
    stm_tx_free(&tx);
}

/* too many objects: too_large, and later opens of the attempt fail as doomed */
static void test_too_large(void) {
    StmTx tx;
    tx_init(&tx, 0);
    char *objs = arena_alloc(&arena, (size_t)(TX_MAX_ENTRIES + 1) * obj_stride(8), NFOS_CACHELINE);
    CHECK(objs != NULL, "the test arena is full");
    stm_begin(&tx, TX_STM, 0);
    int i;
    for (i = 0; i <= TX_MAX_ENTRIES; i++)
        if (!stm_open(&tx, (ObjHdr *)(objs + (size_t)i * obj_stride(8)), 8, 2, (uint32_t)i, OP_READ, 0)) break;
    CHECK(i == TX_MAX_ENTRIES && tx.fail == STM_ABORTED && tx.fail_cause == ABORT_TOO_LARGE,
          "opened %d of %d objects, fail %d cause %d", i, TX_MAX_ENTRIES + 1, tx.fail, tx.fail_cause);
    CHECK(stm_open(&tx, (ObjHdr *)objs, 8, 2, 0, OP_READ, 0) == NULL && tx.fail == STM_DOOMED,
          "an open after the abort: fail %d", tx.fail);
    CHECK(stm_commit(&tx) == -1, "a doomed transaction committed");
    stm_tx_free(&tx);
}

/* --------------------------------------------- validation and snapshots */

static void test_validation_and_snapshot(void) {
    StmTx t1, t2;
    tx_init(&t1, 1);
    tx_init(&t2, 2);
    t1.abort_hook = on_abort;
    ObjHdr *a = new_obj(8), *b = new_obj(8), *c = new_obj(8);
    const uint64_t tag2 = OP_TAG(7, 0xabcd);

    /* t1 reads a; t2 commits a write of a; t1's commit of b must fail validation */
    stm_begin(&t1, TX_STM, 0);
    CHECK(stm_open(&t1, a, 8, 3, 0, OP_READ, OP_TAG(1, 0)), "t1 read a");
    stm_begin(&t2, TX_STM, 0);
    *(uint64_t *)stm_open(&t2, a, 8, 3, 0, OP_WRITE, tag2) = 1;
    CHECK(stm_commit(&t2) == 0, "t2 commit");
    *(uint64_t *)stm_open(&t1, b, 8, 3, 1, OP_WRITE, OP_TAG(2, 0)) = 1;
    hook_calls = 0;
    CHECK(stm_commit(&t1) == -1, "t1 committed over a stale read");
    CHECK(hook_calls == 1 && last.cause == ABORT_VALIDATION && last.struct_id == 3 && last.index == 0,
          "hook calls %d, cause %d (want validation %d), struct %u index %u", hook_calls, last.cause,
          ABORT_VALIDATION, last.struct_id, last.index);
    CHECK(last.other_slot == 2 && (last.other_info & STM_TAG_MASK) == (tag2 & STM_TAG_MASK) &&
              last.own_tag == OP_TAG(1, 0),
          "the conflict names the other side: slot %u info %#llx own tag %#llx", last.other_slot,
          (unsigned long long)last.other_info, (unsigned long long)last.own_tag);
    CHECK(*val(b) == 0 && !(atomic_load(&b->lock) & LOCK_BIT), "the failed commit left b=%llu lock %#llx",
          (unsigned long long)*val(b), (unsigned long long)atomic_load(&b->lock));

    /* snapshot extension: a newer version met on open extends the snapshot
     * when nothing read has changed ... */
    stm_begin(&t1, TX_STM, 0);
    CHECK(stm_open(&t1, a, 8, 3, 0, OP_READ, 0), "t1 read a");
    stm_begin(&t2, TX_STM, 0);
    *(uint64_t *)stm_open(&t2, c, 8, 3, 2, OP_WRITE, tag2) = 3;
    CHECK(stm_commit(&t2) == 0, "t2 commit c");
    uint64_t *pc = (uint64_t *)stm_open(&t1, c, 8, 3, 2, OP_READ, 0);
    CHECK(pc && *pc == 3 && t1.rv == atomic_load(&sh->clock), "snapshot not extended (fail %d, rv %llu)", t1.fail,
          (unsigned long long)t1.rv);
    CHECK(stm_commit(&t1) == 0, "read-only t1 commit");
    /* ... and aborts (snapshot) when something read has changed */
    stm_begin(&t1, TX_STM, 0);
    CHECK(stm_open(&t1, a, 8, 3, 0, OP_READ, 0), "t1 read a");
    stm_begin(&t2, TX_STM, 0);
    *(uint64_t *)stm_open(&t2, a, 8, 3, 0, OP_WRITE, tag2) = 4;
    *(uint64_t *)stm_open(&t2, c, 8, 3, 2, OP_WRITE, tag2) = 4;
    CHECK(stm_commit(&t2) == 0, "t2 commit a, c");
    CHECK(stm_open(&t1, c, 8, 3, 2, OP_READ, 0) == NULL && t1.fail == STM_ABORTED &&
              t1.fail_cause == ABORT_SNAPSHOT,
          "t1 read c over a changed a: fail %d cause %d", t1.fail, t1.fail_cause);
    stm_abort(&t1);
    stm_tx_free(&t1);
    stm_tx_free(&t2);
}

/* ---------------------------------------------------------- in-place reads */

/* Load one u64 of an object in place, validated: 0, or -1 (aborted). */
static int read_u64(StmTx *tx, ObjHdr *o, uint64_t *out) {
    int32_t ent;
    for (;;) {
        char *p = stm_read_open(tx, o, 8, 4, 0, OP_TAG(3, 0), &ent);
        if (!p) return -1;
        memcpy(out, p, 8);
        int r = stm_read_check(tx, ent);
        if (r <= 0) return r;
    }
}

static void commit_value(StmTx *t, ObjHdr *o, uint64_t v) {
    stm_begin(t, TX_STM, 0);
    uint64_t *p = (uint64_t *)stm_open(t, o, 8, 4, 0, OP_WRITE, 0);
    CHECK(p != NULL, "writer open failed (fail %d)", t->fail);
    *p = v;
    CHECK(stm_commit(t) == 0, "writer commit failed (cause %d)", t->fail_cause);
}

static void test_in_place_reads(void) {
    StmTx t1, t2;
    tx_init(&t1, 1);
    tx_init(&t2, 2);
    ObjHdr *a = new_obj(8), *b = new_obj(8), *c = new_obj(8);
    commit_value(&t2, a, 10);
    uint64_t x = 0;

    /* a read in place: no copy, the object's own payload; the version goes into the read set */
    stm_begin(&t1, TX_STM, 0);
    int32_t ent;
    char *p = stm_read_open(&t1, a, 8, 4, 0, 0, &ent);
    CHECK(p == OBJ_DATA(a) && ent >= 0 && t1.copy_used == 0, "an in-place read copied (p %p obj %p copy %zu)",
          (void *)p, (void *)OBJ_DATA(a), t1.copy_used);
    CHECK(t1.entries[ent].version == LOCK_VERSION(atomic_load(&a->lock)) && !t1.entries[ent].copied,
          "the read set records the version read");
    memcpy(&x, p, 8);
    CHECK(stm_read_check(&t1, ent) == 0 && x == 10, "check 0 and the value 10: x=%llu", (unsigned long long)x);
    /* a commit of a; a re-read of a now is stale (it was validated before): validation */
    commit_value(&t2, a, 11);
    memcpy(&x, stm_read_open(&t1, a, 8, 4, 0, 0, &ent), 8);
    CHECK(stm_read_check(&t1, ent) == -1 && t1.fail == STM_ABORTED && t1.fail_cause == ABORT_VALIDATION,
          "a stale re-read must abort (validation): fail %d cause %d", t1.fail, t1.fail_cause);
    stm_abort(&t1);

    /* the first read of an object that changes between open and check: load again at the new version */
    stm_begin(&t1, TX_STM, 0);
    p = stm_read_open(&t1, a, 8, 4, 0, 0, &ent);
    commit_value(&t2, a, 12);
    memcpy(&x, p, 8);
    int r = stm_read_check(&t1, ent);
    CHECK(r == 1 && t1.rv == atomic_load(&sh->clock), "a first read of a changed object: check %d (want 1), rv %llu",
          r, (unsigned long long)t1.rv);
    memcpy(&x, p, 8);
    CHECK(stm_read_check(&t1, ent) == 0 && x == 12, "after loading again: x=%llu", (unsigned long long)x);
    CHECK(stm_commit(&t1) == 0, "read-only commit");

    /* snapshot extension on an in-place open of a newer object; abort when something read changed */
    stm_begin(&t1, TX_STM, 0);
    CHECK(read_u64(&t1, b, &x) == 0, "read b");
    commit_value(&t2, c, 5);
    CHECK(read_u64(&t1, c, &x) == 0 && x == 5 && t1.rv == atomic_load(&sh->clock), "snapshot not extended");
    commit_value(&t2, b, 6);
    commit_value(&t2, a, 13);
    CHECK(read_u64(&t1, a, &x) == -1 && t1.fail_cause == ABORT_SNAPSHOT, "read a over a changed b: cause %d",
          t1.fail_cause);
    stm_abort(&t1);

    /* read then write of one object: the write copies the version read and commits ... */
    stm_begin(&t1, TX_STM, 0);
    CHECK(read_u64(&t1, a, &x) == 0 && x == 13, "read a");
    uint64_t *pa = (uint64_t *)stm_open(&t1, a, 8, 4, 0, OP_WRITE, 0);
    CHECK(pa && (char *)pa != OBJ_DATA(a) && *pa == 13, "the write gets a private copy of the version read");
    *pa = 14;
    CHECK(read_u64(&t1, a, &x) == 0 && x == 14, "a later read sees the transaction's own write: %llu",
          (unsigned long long)x);
    CHECK(stm_commit(&t1) == 0 && *val(a) == 14, "read-then-write commit: a=%llu", (unsigned long long)*val(a));
    /* ... and aborts (validation) when the object changed between the read and the write */
    stm_begin(&t1, TX_STM, 0);
    CHECK(read_u64(&t1, a, &x) == 0, "read a");
    commit_value(&t2, a, 15);
    CHECK(stm_open(&t1, a, 8, 4, 0, OP_WRITE, 0) == NULL && t1.fail_cause == ABORT_VALIDATION,
          "a write of a changed object read in place: cause %d", t1.fail_cause);
    stm_abort(&t1);
    /* a read-only transaction whose in-place read was overwritten afterwards still commits
     * (its snapshot was consistent); one that also writes elsewhere fails validation */
    stm_begin(&t1, TX_STM, 0);
    CHECK(read_u64(&t1, a, &x) == 0, "read a");
    commit_value(&t2, a, 16);
    CHECK(stm_commit(&t1) == 0, "read-only commit after a later write");
    stm_begin(&t1, TX_STM, 0);
    CHECK(read_u64(&t1, a, &x) == 0, "read a");
    commit_value(&t2, a, 17);
    *(uint64_t *)stm_open(&t1, b, 8, 4, 1, OP_WRITE, 0) = 1;
    CHECK(stm_commit(&t1) == -1 && t1.fail_cause == ABORT_VALIDATION, "commit over a stale in-place read");

    /* the hash table grows with a big transaction and shrinks back after a small one */
    char *objs = arena_alloc(&arena, (size_t)2000 * obj_stride(8), NFOS_CACHELINE);
    CHECK(objs != NULL, "the test arena is full");
    stm_begin(&t1, TX_STM, 0);
    for (int i = 0; i < 2000; i++) {
        ObjHdr *o = (ObjHdr *)(objs + (size_t)i * obj_stride(8));
        CHECK(read_u64(&t1, o, &x) == 0, "read %d", i);
    }
    for (int i = 0; i < 2000; i += 7) {   /* every one is found again, none added */
        ObjHdr *o = (ObjHdr *)(objs + (size_t)i * obj_stride(8));
        CHECK(read_u64(&t1, o, &x) == 0 && t1.nentries == 2000, "re-read %d: %u entries", i, t1.nentries);
    }
    CHECK(t1.hmask + 1 >= 4000, "the table did not grow: %u slots", t1.hmask + 1);
    CHECK(stm_commit(&t1) == 0, "big read-only commit");
    stm_begin(&t1, TX_STM, 0);   /* a small transaction: the next one starts with the small table */
    CHECK(read_u64(&t1, a, &x) == 0, "read a");
    CHECK(stm_commit(&t1) == 0, "commit");
    stm_begin(&t1, TX_STM, 0);
    CHECK(t1.hmask + 1 == TX_HASH_MIN, "the table did not shrink back: %u slots", t1.hmask + 1);
    for (uint32_t i = 0; i < t1.hmask + 1; i++) CHECK(t1.htab[i] == 0, "slot %u not cleared", i);
    CHECK(read_u64(&t1, a, &x) == 0 && x == 17, "read after shrinking");
    CHECK(stm_commit(&t1) == 0, "commit");
    stm_tx_free(&t1);
    stm_tx_free(&t2);
}

/* -------------------------- owner bits, death while WRITING, recovery */

#define DEAD_SLOT 5
static ObjHdr *ra, *rb;
static int pipefd[2];

static void stop_here(StmTx *tx, void *arg) {   /* the fault hook: tell the parent, wait to be killed */
    (void)tx;
    (void)arg;
    char c = 'w';
    if (write(pipefd[1], &c, 1) != 1) _exit(3);
    for (;;) pause();
}

static void dying_writer(void) {
    StmTx tx;
    tx_init(&tx, DEAD_SLOT);
    tx.fault_hook = stop_here;
    stm_begin(&tx, TX_STM, 0);
    *(uint64_t *)stm_open(&tx, ra, 8, 4, 0, OP_WRITE, 0) = 11;
    *(uint64_t *)stm_open(&tx, rb, 8, 4, 1, OP_WRITE, 0) = 22;
    stm_commit(&tx);
    _exit(2);   /* not reached: killed in the hook */
}

static void test_death_and_recovery(void) {
    ra = new_obj(8);
    rb = new_obj(8);
    *val(ra) = 1;
    *val(rb) = 2;
    uint64_t v0 = LOCK_VERSION(atomic_load(&rb->lock));
    CHECK(pipe(pipefd) == 0, "pipe: %s", strerror(errno));
    pid_t p = spawn(dying_writer);
    char c;
    CHECK(read(pipefd[0], &c, 1) == 1, "the writer did not reach its write-back");
    StmSlot *ss = &sh->slots[DEAD_SLOT];
    uint64_t wv = ss->redo_version;
    uint64_t wa = atomic_load(&ra->lock), wb = atomic_load(&rb->lock);
    CHECK(atomic_load(&ss->redo_state) == REDO_WRITING && ss->redo_used > 0, "redo state %u, %u bytes logged",
          atomic_load(&ss->redo_state), ss->redo_used);
    CHECK(wa == wv << 8 && *val(ra) == 11, "the first object is written back and released with the new version: "
          "lock %#llx (want %#llx), value %llu", (unsigned long long)wa, (unsigned long long)(wv << 8),
          (unsigned long long)*val(ra));
    CHECK((wb & LOCK_BIT) && LOCK_OWNER(wb) == DEAD_SLOT && LOCK_VERSION(wb) == v0,
          "the second object is locked by slot %d at its old version: lock %#llx (owner %llu, version %llu)",
          DEAD_SLOT, (unsigned long long)wb, (unsigned long long)LOCK_OWNER(wb),
          (unsigned long long)LOCK_VERSION(wb));
    kill(p, SIGKILL);
    int st;
    CHECK(waitpid(p, &st, 0) == p && WIFSIGNALED(st), "the writer did not die of SIGKILL");
    close(pipefd[0]);
    close(pipefd[1]);

    /* another slot meets the dead slot's lock: a `locked` abort naming it */
    StmTx tx;
    tx_init(&tx, 1);
    tx.abort_hook = on_abort;
    stm_begin(&tx, TX_STM, 0);
    CHECK(stm_open(&tx, rb, 8, 4, 1, OP_READ, 0) == NULL && tx.fail_cause == ABORT_LOCKED,
          "open of a locked object: fail %d cause %d", tx.fail, tx.fail_cause);
    hook_calls = 0;
    stm_abort(&tx);
    CHECK(hook_calls == 1 && last.other_slot == DEAD_SLOT, "the abort names slot %u, want %d", last.other_slot,
          DEAD_SLOT);

    /* recovery replays the log: both objects hold the new values, unlocked at the new version */
    int n = stm_recover_slot(sh, DEAD_SLOT);
    CHECK(n == 2, "replayed %d objects, want 2", n);
    CHECK(*val(ra) == 11 && *val(rb) == 22, "after recovery a=%llu b=%llu", (unsigned long long)*val(ra),
          (unsigned long long)*val(rb));
    CHECK(atomic_load(&rb->lock) == wv << 8 && atomic_load(&ra->lock) == wv << 8,
          "after recovery the locks are %#llx %#llx, want %#llx", (unsigned long long)atomic_load(&ra->lock),
          (unsigned long long)atomic_load(&rb->lock), (unsigned long long)(wv << 8));
    CHECK(atomic_load(&ss->redo_state) == REDO_IDLE && atomic_load(&ss->in_tx) == 0, "the dead slot is not idle");
    stm_begin(&tx, TX_STM, 0);
    uint64_t *pb = (uint64_t *)stm_open(&tx, rb, 8, 4, 1, OP_WRITE, 0);
    CHECK(pb && *pb == 22, "after recovery the object opens: fail %d", tx.fail);
    *pb = 23;
    CHECK(stm_commit(&tx) == 0, "commit after recovery");
    stm_tx_free(&tx);
}

/* ---------------------------------------------------- irrevocable token */

static ObjHdr *io;

static void irrevocable_holder(void) {   /* slot 0: takes the token, then waits for slot 1 to try */
    StmTx tx;
    tx_init(&tx, 0);
    stm_begin(&tx, TX_DIRECT, 1);
    *(uint64_t *)stm_open(&tx, io, 8, 5, 0, OP_WRITE, 0) = 1;
    atomic_store(&flags->a, 1);
    wait_for(&flags->b, 1);
    usleep(20000);   /* (a begin that did not wait would now run and see c == 0) */
    atomic_store(&flags->c, 1);
    CHECK(stm_commit(&tx) == 0, "irrevocable commit");
    CHECK(counters[0].irrevocable[0] == 1, "irrevocable counted %llu", (unsigned long long)counters[0].irrevocable[0]);
}

static void waiter(void) {   /* slot 1: begins while the token is held */
    StmTx tx;
    tx_init(&tx, 1);
    wait_for(&flags->a, 1);
    atomic_store(&flags->b, 1);
    stm_begin(&tx, TX_STM, 0);
    CHECK(atomic_load(&flags->c) == 1, "slot 1 began while slot 0 held the irrevocable token");
    uint64_t *p = (uint64_t *)stm_open(&tx, io, 8, 5, 0, OP_READ, 0);
    CHECK(p && *p == 1, "slot 1 does not see the irrevocable write");
    CHECK(stm_commit(&tx) == 0, "slot 1 commit");
}

static void runner(void) {   /* slot 1: inside a transaction when slot 0 asks for the token */
    StmTx tx;
    tx_init(&tx, 1);
    stm_begin(&tx, TX_STM, 0);
    atomic_store(&flags->a, 1);
    wait_for(&flags->b, 1);
    usleep(20000);   /* (an irrevocable begin that did not wait would now run and see d == 0) */
    atomic_store(&flags->d, 1);
    CHECK(stm_commit(&tx) == 0, "slot 1 commit");
}

static void alone(void) {   /* slot 0: an irrevocable transaction waits until no other slot is inside one */
    StmTx tx;
    tx_init(&tx, 0);
    wait_for(&flags->a, 1);
    atomic_store(&flags->b, 1);
    stm_begin(&tx, TX_DIRECT, 1);
    CHECK(atomic_load(&flags->d) == 1, "the irrevocable transaction began while slot 1 was inside one");
    CHECK(stm_commit(&tx) == 0, "irrevocable commit");
}

static void test_irrevocable(void) {
    io = new_obj(8);
    memset(flags, 0, sizeof *flags);
    memset(&counters[0], 0, sizeof counters[0]);
    pid_t p0 = spawn(irrevocable_holder), p1 = spawn(waiter);
    join(p0, "irrevocable holder");
    join(p1, "waiter");
    CHECK(atomic_load(&sh->irrevocable) == 0, "the token is still held by %u", atomic_load(&sh->irrevocable));
    memset(flags, 0, sizeof *flags);
    p1 = spawn(runner);
    p0 = spawn(alone);
    join(p1, "runner");
    join(p0, "irrevocable alone");
}

/* --------------------------------------------------------------- opacity */

#define TOTAL 1000000u
#define WRITERS 2
#define READERS 2
static long iterations;
static ObjHdr *ox, *oy, *opair;

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void writer(int slot) {
    StmTx tx;
    tx_init(&tx, (uint32_t)slot);
    uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(slot + 1);
    for (long i = 0; i < iterations;) {
        stm_begin(&tx, TX_STM, 0);
        uint64_t *x = (uint64_t *)stm_open(&tx, ox, 8, 6, 0, OP_WRITE, 0);
        uint64_t *y = x ? (uint64_t *)stm_open(&tx, oy, 8, 6, 1, OP_WRITE, 0) : NULL;
        uint64_t *pair = y ? (uint64_t *)stm_open(&tx, opair, 16, 6, 2, OP_WRITE, 0) : NULL;
        if (!pair) {
            stm_abort(&tx);
            continue;
        }
        uint64_t amount = rnd(&seed) % 100;
        if (rnd(&seed) & 1) {
            if (*x >= amount) *x -= amount, *y += amount;
        } else if (*y >= amount) {
            *y -= amount, *x += amount;
        }
        pair[0] = pair[1] = pair[0] + 1;
        if (stm_commit(&tx) == 0) i++;
    }
    atomic_fetch_add(&flags->done, 1);
    stm_tx_free(&tx);
}

/* In place: the object's bytes into out, validated (0), or -1 (aborted). */
static int load_in_place(StmTx *tx, ObjHdr *o, uint32_t size, uint32_t index, void *out) {
    int32_t ent;
    for (;;) {
        char *p = stm_read_open(tx, o, size, 6, index, 0, &ent);
        if (!p) return -1;
        memcpy(out, p, size);
        int r = stm_read_check(tx, ent);
        if (r <= 0) return r;
    }
}

static void reader(int slot) {
    StmTx tx;
    tx_init(&tx, (uint32_t)slot);
    long reads = 0;
    int in_place = slot % 2;   /* half the readers copy (stm_open), half read in place */
    uint64_t bx, by, bpair[2];
    while (atomic_load(&flags->done) < WRITERS || reads < 1000) {
        stm_begin(&tx, TX_STM, 0);
        uint64_t *x, *y, *pair;
        if (in_place) {
            x = load_in_place(&tx, ox, 8, 0, &bx) == 0 ? &bx : NULL;
            if (x && (reads & 7) == 0) sched_yield();
            y = x && load_in_place(&tx, oy, 8, 1, &by) == 0 ? &by : NULL;
            pair = y && load_in_place(&tx, opair, 16, 2, bpair) == 0 ? bpair : NULL;
        } else {
            x = (uint64_t *)stm_open(&tx, ox, 8, 6, 0, OP_READ, 0);
            if (x && (reads & 7) == 0) sched_yield();   /* let a writer commit in between */
            y = x ? (uint64_t *)stm_open(&tx, oy, 8, 6, 1, OP_READ, 0) : NULL;
            pair = y ? (uint64_t *)stm_open(&tx, opair, 16, 6, 2, OP_READ, 0) : NULL;
        }
        if (x && y && *x + *y != TOTAL) {
            atomic_fetch_add(&flags->torn, 1);
            CHECK(0, "slot %d saw x=%llu y=%llu (sum %llu, want %u) in one transaction", slot,
                  (unsigned long long)*x, (unsigned long long)*y, (unsigned long long)(*x + *y), TOTAL);
        }
        if (pair && pair[0] != pair[1]) {
            atomic_fetch_add(&flags->torn, 1);
            CHECK(0, "slot %d saw a torn object: %llu != %llu", slot, (unsigned long long)pair[0],
                  (unsigned long long)pair[1]);
        }
        if (pair) stm_commit(&tx);
        else stm_abort(&tx);
        reads++;
    }
    stm_tx_free(&tx);
}

static int role_slot;
static void writer_main(void) { writer(role_slot); }
static void reader_main(void) { reader(role_slot); }

static void test_opacity(void) {
    ox = new_obj(8);
    oy = new_obj(8);
    opair = new_obj(16);
    *val(ox) = TOTAL;
    memset(flags, 0, sizeof *flags);
    pid_t pids[WRITERS + READERS];
    for (int i = 0; i < WRITERS + READERS; i++) {
        role_slot = i;
        pids[i] = spawn(i < WRITERS ? writer_main : reader_main);
    }
    for (int i = 0; i < WRITERS + READERS; i++) join(pids[i], i < WRITERS ? "writer" : "reader");
    CHECK(*val(ox) + *val(oy) == TOTAL, "final x=%llu y=%llu", (unsigned long long)*val(ox),
          (unsigned long long)*val(oy));
    CHECK(val(opair)[0] == (uint64_t)(WRITERS * iterations) && val(opair)[1] == val(opair)[0],
          "the pair counts %llu/%llu commits, want %ld", (unsigned long long)val(opair)[0],
          (unsigned long long)val(opair)[1], WRITERS * iterations);
    CHECK(flags->torn == 0, "%ld torn reads", flags->torn);
    uint64_t commits = 0, aborts = 0;
    for (int s = 0; s < WRITERS; s++) {
        commits += counters[s].commits[0];
        aborts += counters[s].aborts[0];
    }
    printf("opacity: %d writers x %ld commits (%llu aborts), %d readers: no torn state\n", WRITERS, iterations,
           (unsigned long long)aborts, READERS);
}

int main(int argc, char **argv) {
    iterations = argc > 1 ? atol(argv[1]) : 20000;
    CHECK(arena_map(&arena, 64u << 20) == 0, "arena_map: %s", strerror(errno));
    sh = stm_shared_create(&arena, NSLOTS);
    counters = arena_alloc(&arena, sizeof(SlotCounters) * NSLOTS, NFOS_CACHELINE);
    flags = arena_alloc(&arena, sizeof(Flags), NFOS_CACHELINE);
    CHECK(sh && counters && flags, "the test arena is too small");
    test_commit_abort();
    puts("commit/abort: ok");
    test_rollback();
    puts("rollback: ok");
    test_too_large();
    puts("too_large: ok");
    test_validation_and_snapshot();
    puts("validation/snapshot: ok");
    test_in_place_reads();
    puts("in-place reads: ok");
    test_death_and_recovery();
    puts("owner bits, death while WRITING, recovery: ok");
    test_irrevocable();
    puts("irrevocable token: ok");
    test_opacity();
    arena_unmap(&arena);
    puts("test_stm: all ok");
    return 0;
}
