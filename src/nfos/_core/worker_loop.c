/* The worker loop (hot path): RX -> parse -> packet set -> handlers in one
 * transaction per batch -> commit -> TX.  Packets come from and go to the
 * packet I/O of the process (pktio.h: the replay rings, or AF_PACKET live),
 * one call per batch.
 *
 * Batches: up to `batch` (<= 32) packets run in one transaction.  On an
 * abort the batch is retried; after SPLIT_AFTER aborts it is split in two
 * halves (each run the same way); a single packet that aborted
 * IRREVOCABLE_AFTER times runs irrevocably, so every packet commits.  A
 * transaction too large for the descriptor (`too_large`) splits at once, and
 * a single packet that is too large runs irrevocably at once.  A handler
 * that raises (not an abort) rolls back the batch, which is then re-run one
 * packet per transaction so that only the faulty packet is dropped and
 * counted.
 *
 * Time: a packet's handlers see now() = max(clock, packet time).  The clock
 * of an attempt is reset to the batch's starting clock, so a retry sees the
 * same times.  Expired packet sets are swept oldest-first between batches
 * (and on clock ticks, and while idle live) and also on lookup, so a set's
 * fate does not depend on when the sweep ran.
 *
 * Periodic handlers (sequential mode, and workers with `sync`: replay and the
 * test harness): before the first descriptor with time >= T, where T is the
 * next due time, the clock moves to T and expired sets are swept at T; then
 * the handlers due at T run.  With workers this is a barrier: each worker
 * publishes its progress (the time of its next descriptor; UINT64_MAX once
 * its ring is closed and drained) and that it has swept to T, and waits until
 * every worker has swept to T (or finished: a progress published at an earlier
 * barrier may already be >= T while that worker's clock is not); then the
 * lowest-numbered worker that still has input (progress finite) runs the handlers due at T alone, in direct mode (nothing else
 * runs: no STM, no retries), publishes their output through its own TX path
 * and releases the others.  So a periodic handler reads and writes exactly
 * what it does in the sequential run.  Every process keeps the schedule
 * (configured before the fork), so no one asks anyone when T is.
 *
 * Drift horizon (the same `sync`): before taking a descriptor with time t, a
 * worker waits until every other worker's progress is >= t - max_drift, so
 * no worker runs ahead of another by more than Δ of virtual time.  The
 * worker with the smallest progress never waits (no deadlock); the check is
 * per batch.  Live and paced runs have neither (real time has no barrier).
 *
 * Output: at commit, the packets' output decisions and the frames emitted by
 * nf.emit() (buffered here, discarded by an abort) go to the packet I/O, the
 * text the handlers printed (the runtime's sys.stdout / sys.stderr proxies,
 * nfos/runtime/streams.py) is written, and the counters (counters.def) move;
 * in paced mode the queue-to-commit latency of each packet is histogrammed.
 *
 * Stops: a stop request — the arena's stop flag (seen before each packet), a
 * signal whose Python handler raised (seen per batch: proc_poll_stop), the
 * parent gone — ends the loop at once.  The attempt in progress is rolled
 * back as if it never began (stm_rollback): its packets stay unprocessed,
 * neither dropped nor counted.  A KeyboardInterrupt or SystemExit out of a
 * handler is such a stop, not a handler error.  Each handler call updates
 * the slot's heartbeat (its handler's HB_CODE), which the watchdog
 * (watchdog.c) reads.
 */
#include "worker_loop.h"

#include <sched.h>
#include <unistd.h>

#define SPLIT_AFTER 2
#define IRREVOCABLE_AFTER 8
#define EMIT_BYTES (1u << 20)
#define TEXT_BYTES (64u << 10)

static const Pktio *io = &pktio_ring;

/* the NF (loop_configure) */
static PyObject *h_new, *h_packet, *h_expired, *h_orphan, *h_malformed, *h_error;
static Periodic periodics[LOOP_MAX_PERIODIC];
static int nperiodic;
static PyTypeObject *state_type;
static uint32_t state_size;
static uint64_t expiry_ns;
static int batch = NFOS_BATCH_MAX;
static int has_sets;

/* frames from nf.emit(), published at commit */
static char *emit_buf;
static size_t emit_used, emit_cap;
/* text printed by handlers, written at commit: records {stream, len, bytes} */
static char *text_buf;
static size_t text_used, text_cap;

/* The workers' meeting point in the arena (sync: replay, test harness). */
typedef struct {
    _Atomic uint64_t v;
    char pad[NFOS_CACHELINE - sizeof(uint64_t)];
} PaddedTime;
typedef struct {
    _Atomic uint64_t led;        /* the last barrier time a worker took the lead of */
    char pad0[NFOS_CACHELINE - sizeof(uint64_t)];
    _Atomic uint64_t released;   /* the last barrier time whose periodic handlers have run */
    _Atomic uint64_t next_event; /* at that barrier: the earliest next descriptor of any worker */
    _Atomic uint64_t leader;     /* the worker that took the lead of `led` */
    char pad1[NFOS_CACHELINE - 3 * sizeof(uint64_t)];
    /* per worker w: at[w] its progress (every descriptor before it is processed);
     * at[nworkers + w] the time it has swept to at a barrier (its clock moved
     * there and its sets expired by then swept: a barrier at T waits for that,
     * not for progress, which can reach T before the worker's clock does) */
    PaddedTime at[];
} LoopSync;
#define PROGRESS(w) (lsync->at[(w)].v)
#define SWEPT(w) (lsync->at[proc.nworkers + (w)].v)
static LoopSync *lsync;          /* NULL: no barriers (sequential, live, paced) */
static uint64_t max_drift;
static uint64_t my_progress;     /* what this worker last published */
static uint64_t last_rx_time;    /* the time of the last descriptor taken */

/* Commit records (worker_loop.h), per slot in the arena; NULL: off (one test per commit). */
typedef struct {
    _Atomic uint64_t n;
    uint64_t cap, lost;
    CommitRec *recs;
} CommitLog;
static CommitLog *clog;

static PktSlot *cur_new;          /* the packet in the new-packet-set handler */
typedef struct {
    uint64_t created, expired, table_full;
} Pending;
static Pending pend;              /* counts of the running attempt */

int loop_init(void) {
    emit_cap = EMIT_BYTES;
    emit_buf = PyMem_RawMalloc(emit_cap);
    text_cap = TEXT_BYTES;
    text_buf = PyMem_RawMalloc(text_cap);
    if (!emit_buf || !text_buf) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

void loop_set_io(const Pktio *p) { io = p; }

static void clear_periodics(void) {
    for (int i = 0; i < nperiodic; i++) Py_CLEAR(periodics[i].fn);
    nperiodic = 0;
}

static void set_ref(PyObject **field, PyObject *v) { Py_XSETREF(*field, v ? Py_NewRef(v) : NULL); }

int loop_configure(const LoopConfig *c) {
    set_ref(&h_new, c->h_new);
    set_ref(&h_packet, c->h_packet);
    set_ref(&h_expired, c->h_expired);
    set_ref(&h_orphan, c->h_orphan);
    set_ref(&h_malformed, c->h_malformed);
    set_ref(&h_error, c->h_error);
    clear_periodics();
    record_view_cache_clear();
    for (int i = 0; i < c->nperiodic && i < LOOP_MAX_PERIODIC; i++) {
        periodics[i] = c->periodics[i];
        Py_INCREF(periodics[i].fn);
        nperiodic++;
    }
    set_ref((PyObject **)&state_type, (PyObject *)c->state_type);
    state_size = c->state_size;
    expiry_ns = c->expiry_ns;
    batch = c->batch;
    has_sets = c->has_sets;
    lsync = NULL;
    my_progress = last_rx_time = 0;
    max_drift = c->max_drift_ns;
    if (c->sync && !proc.local && proc.nworkers > 0) {
        lsync = proc_alloc(sizeof(LoopSync) + sizeof(PaddedTime) * 2 * (size_t)proc.nworkers, NFOS_CACHELINE);
        if (!lsync) return -1;
    }
    return 0;
}

void loop_reset(void) {
    has_sets = 0;
    clog = NULL;
    lsync = NULL;
    Py_CLEAR(h_new);
    Py_CLEAR(h_packet);
    Py_CLEAR(h_expired);
    Py_CLEAR(h_orphan);
    Py_CLEAR(h_malformed);
    Py_CLEAR(h_error);
    Py_CLEAR(state_type);
    clear_periodics();
    record_view_cache_clear();
}

/* ------------------------------------------------------------- handlers */

/* The handler about to run (what a conflict record names, and the watchdog's heartbeat). */
static inline void running(int handler) { proc.tx.ctx = HANDLER_CTX(handler, 0); }

/* KeyboardInterrupt or SystemExit: a stop request, not a handler error. */
static int stop_exception(void) {
    return PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) || PyErr_ExceptionMatches(PyExc_SystemExit);
}

/* The watchdog's heartbeat: which handler runs (0: none), and one more call. */
static inline void heartbeat(uint32_t code) {
    SlotShared *me = proc.me;
    if (!me) return;
    atomic_store_explicit(&me->hb_handler, code, memory_order_relaxed);
    if (code)
        atomic_store_explicit(&me->hb_calls, atomic_load_explicit(&me->hb_calls, memory_order_relaxed) + 1,
                              memory_order_relaxed);
}

/* Call a handler; 0 ok, -1 abort (exception cleared), -2 handler error
 * (exception set), -3 a stop request (KeyboardInterrupt / SystemExit set). */
static int call(PyObject *h, PyObject **args, size_t nargs) {
    heartbeat(HB_CODE(proc.tx.ctx));
    PyObject *r = PyObject_Vectorcall(h, args, nargs, NULL);
    heartbeat(0);
    if (r) {
        Py_DECREF(r);
        if (proc.tx.doomed) return -1;   /* an abort was swallowed by NF code */
        return 0;
    }
    if (stop_exception()) return -3;
    if (proc.tx.doomed || PyErr_ExceptionMatches(proc.TransactionAborted)) {
        PyErr_Clear();
        proc.tx.doomed = 1;
        return -1;
    }
    if (PyErr_ExceptionMatches(proc.TableFull)) pend.table_full++;
    return -2;
}

static PyObject *state_view(int32_t id) {
    if (!state_type) Py_RETURN_NONE;
    return record_view_new(state_type, pst_state(id), NULL, state_size, 0, (uint32_t)id, RV_PRIVATE);
}

static int run_expired_handler(int32_t id) {
    if (!h_expired) return 0;
    running(HANDLER_EXPIRED);
    PyObject *st = state_view(id);
    if (!st) return -2;
    int r = call(h_expired, &st, 1);
    Py_DECREF(st);
    return r;
}

static inline int set_expired(int32_t id) {
    return expiry_ns && proc.clock - pst_last_seen(id) >= expiry_ns && proc.clock >= pst_last_seen(id);
}

static int process_packet(PktSlot *s) {
    s->out = -1;
    if (s->time > proc.clock) proc.clock = s->time;
    if ((s->flags & PF_MALFORMED) && !h_malformed) return 0;   /* the default: dropped (and counted) */
    PyObject *pkt = packet_new(s);
    if (!pkt) return -2;
    int r = 0;
    if (s->flags & PF_MALFORMED) {   /* @nf.malformed: the frame, no IP or L4 view */
        running(HANDLER_MALFORMED);
        r = call(h_malformed, &pkt, 1);
    } else if (s->has_set) {
        int32_t id = pst_lookup(s);
        if (id >= 0 && set_expired(id)) {
            r = run_expired_handler(id);
            if (r == 0) {
                pst_remove(id);
                pend.expired++;
            }
            id = -1;
        }
        if (r == 0) {
            if (id >= 0) {
                pst_touch(id, proc.clock);
                if (h_packet) {
                    running(HANDLER_PACKET);
                    PyObject *args[2] = {pkt, state_view(id)};
                    if (!args[1]) r = -2;
                    else {
                        r = call(h_packet, args, 2);
                        Py_DECREF(args[1]);
                    }
                }
            } else if (h_new) {
                running(HANDLER_NEW_PACKET_SET);
                cur_new = s;
                r = call(h_new, &pkt, 1);
                cur_new = NULL;
            }
        }
    } else if (h_orphan) {
        running(HANDLER_ORPHAN);
        r = call(h_orphan, &pkt, 1);
    }
    packet_release(pkt);
    return r;
}

static int process_item(Item *it) {
    if (it->pkt) return process_packet(it->pkt);
    int r = run_expired_handler(it->expire_id);
    if (r == 0) {
        pst_remove(it->expire_id);
        pend.expired++;
    }
    return r;
}

/* Log a handler error once per NF source line (across all processes): the
 * exception fetched before the attempt was rolled back (so the log is not
 * buffered with the attempt's text); steals the reference. */
static void report_handler_error(PyObject *exc) {
    if (h_error && exc) {
        PyObject *r = PyObject_CallOneArg(h_error, exc);
        if (!r) PyErr_WriteUnraisable(h_error);
        Py_XDECREF(r);
    }
    Py_XDECREF(exc);
    PyErr_Clear();
}

/* ------------------------------------------------------- commit records */

int loop_record_setup(uint64_t per_slot) {
    CommitLog *l = proc_alloc(sizeof(CommitLog) * proc.nslots, NFOS_CACHELINE);
    if (!l) return -1;
    for (uint32_t s = 0; s < proc.nslots; s++) {
        l[s].recs = proc_alloc(sizeof(CommitRec) * (per_slot ? per_slot : 1), NFOS_CACHELINE);
        if (!l[s].recs) return -1;
        l[s].cap = per_slot;
    }
    clog = l;
    return 0;
}

const CommitRec *loop_records(int slot, uint64_t *n, uint64_t *lost) {
    if (!clog || slot < 0 || (uint32_t)slot >= proc.nslots) return NULL;
    *n = atomic_load(&clog[slot].n);
    *lost = clog[slot].lost;
    return clog[slot].recs;
}

/* The transaction just ended (committed, or a handler error's): its record. */
static void record_tx(int handler, uint32_t index, uint64_t clock, const Item *items, int n) {
    CommitLog *l = &clog[proc.slot];
    uint64_t k = atomic_load_explicit(&l->n, memory_order_relaxed);
    if (k >= l->cap) {
        l->lost++;
        return;
    }
    CommitRec *r = &l->recs[k];
    r->writer = proc.tx.wv != 0;
    r->order = r->writer ? proc.tx.wv : proc.tx.rv;
    r->clock = clock;
    r->seq = k;
    r->handler = (uint8_t)handler;
    r->worker = (uint8_t)proc.slot;
    r->index = index;
    r->n = (uint8_t)n;
    for (int i = 0; i < n; i++)
        r->item[i] = items[i].pkt ? items[i].pkt->index : (uint32_t)items[i].expire_id;
    atomic_store_explicit(&l->n, k + 1, memory_order_release);
}

/* ------------------------------------------------------------- output */

static inline unsigned lat_bucket(uint64_t v) {
    if (v < 16) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned b = 16 + (e - 4) * 16 + (unsigned)((v >> (e - 4)) & 15);
    return b < LAT_BUCKETS ? b : LAT_BUCKETS - 1;
}

/* A packet received: counted once, whatever becomes of it. */
static inline void count_in(SlotCounters *c, const PktSlot *s) {
    c->packets_in[0]++;
    if (s->wire > s->len) c->cut[0]++;
}


static inline void count_out(SlotCounters *c, uint32_t mask) {
    for (int d = 0; d < proc.ndevs; d++)
        if (mask & (1u << d)) c->packets_out[d]++;
}

/* Write `len` bytes of UTF-8 text to sys.stdout or sys.stderr (stream 1, 2). */
static void write_stream(int stream, const char *text, size_t len) {
    PyObject *f = PySys_GetObject(stream == 2 ? "stderr" : "stdout");   /* borrowed */
    if (!f || f == Py_None || !len) return;
    PyObject *t = PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "surrogatepass");
    PyObject *r = t ? PyObject_CallMethod(f, "write", "O", t) : NULL;
    Py_XDECREF(t);
    if (!r) PyErr_WriteUnraisable(f);
    Py_XDECREF(r);
}

/* After a commit: the text the transaction printed, in order, to the
 * process's sys.stdout / sys.stderr (the runtime's proxies write it through
 * now that no transaction runs).  Consecutive text of one stream goes in one
 * write() and each stream written is then flushed, so a transaction's lines
 * leave in one system call even when the stream is unbuffered: lines of two
 * workers sharing the file do not mix.  A failing write is reported, not
 * raised. */
static void write_text(void) {
    if (!text_used) return;
    size_t used = text_used;
    text_used = 0;
    char *run = PyMem_RawMalloc(used);   /* the text without its record headers */
    size_t run_len = 0;
    int run_stream = 0, written = 0;
    for (size_t at = 0; at < used;) {
        uint32_t *h = (uint32_t *)(text_buf + at);
        int stream = (h[0] & 3) == 2 ? 2 : 1;
        if (run_len && stream != run_stream) {
            write_stream(run_stream, run, run_len);
            run_len = 0;
        }
        run_stream = stream;
        written |= stream;
        if (run) {
            memcpy(run + run_len, h + 2, h[1]);
            run_len += h[1];
        } else {
            write_stream(stream, (const char *)(h + 2), h[1]);   /* no memory: record by record */
        }
        at += 8 + ((h[1] + 7) & ~7u);
    }
    if (run_len) write_stream(run_stream, run, run_len);
    PyMem_RawFree(run);
    for (int stream = 1; stream <= 2; stream++) {
        PyObject *f = (written & stream) ? PySys_GetObject(stream == 2 ? "stderr" : "stdout") : NULL;
        if (!f || f == Py_None) continue;
        PyObject *r = PyObject_CallMethod(f, "flush", NULL);
        if (!r) PyErr_WriteUnraisable(f);
        Py_XDECREF(r);
    }
}

int loop_text(int stream, const char *text, size_t len) {
    if (!proc.tx.active || proc.tx.mode == TX_UNLOGGED) return 0;
    size_t need = 8 + ((len + 7) & ~(size_t)7);
    if (len > UINT32_MAX || text_used + need > ((size_t)1 << 32)) {
        PyErr_SetString(PyExc_MemoryError, "too much text printed in one transaction");
        return -1;
    }
    if (text_used + need > text_cap) {
        size_t n = text_cap;
        while (n < text_used + need) n *= 2;
        char *p = PyMem_RawRealloc(text_buf, n);
        if (!p) {
            PyErr_NoMemory();
            return -1;
        }
        text_buf = p;
        text_cap = n;
    }
    uint32_t *h = (uint32_t *)(text_buf + text_used);
    h[0] = (uint32_t)stream;
    h[1] = (uint32_t)len;
    memcpy(h + 2, text, len);
    text_used += need;
    return 1;
}

/* The packets of a batch (expiry items have none). */
static uint64_t batch_packets(Item *items, int n) {
    uint64_t k = 0;
    for (int i = 0; i < n; i++) k += items[i].pkt != NULL;
    return k;
}

static inline uint32_t out_mask(const PktSlot *s) {
    return s->out == -1 ? 0 : s->out == -2 ? (all_devs_mask() & ~(1u << s->dev)) : (1u << s->out);
}

/* The frames of a transaction: the packets sent and the frames emitted. */
static void send_output(Item *items, int n) {
    PktOut out[NFOS_BATCH_MAX];
    int k = 0;
    for (int i = 0; i < n; i++) {
        PktSlot *s = items[i].pkt;
        uint32_t mask = s ? out_mask(s) : 0;
        if (!mask) continue;
        out[k++] = (PktOut){.data = s->data, .len = s->len, .wire = s->wire, .devmask = mask, .indev = s->dev,
                            .time = s->time, .vnet = &s->vnet};
    }
    if (k) io->send(out, k);
    k = 0;
    for (size_t at = 0; at < emit_used;) {
        uint32_t *h = (uint32_t *)(emit_buf + at);
        out[k++] = (PktOut){.data = (const uint8_t *)(h + 2), .len = h[0], .wire = h[0], .devmask = h[1],
                            .indev = UINT32_MAX, .time = proc.clock};
        if (k == NFOS_BATCH_MAX) {
            io->send(out, k);
            k = 0;
        }
        at += 8 + ((h[0] + 7) & ~7u);
    }
    if (k) io->send(out, k);
}

/* The counters of a committed transaction, but packets_in. */
static void count_output(Item *items, int n) {
    SlotShared *me = proc.me;
    SlotCounters *c = &me->counters;
    uint64_t now = 0;
    for (int i = 0; i < n; i++) {
        PktSlot *s = items[i].pkt;
        if (!s) continue;
        if (s->enq_ns) {   /* paced mode: queue-to-commit latency */
            if (!now) now = mono_ns();
            me->lat_hist[lat_bucket(now > s->enq_ns ? now - s->enq_ns : 0)]++;
        }
        if (s->wire > s->len) c->cut[0]++;
        if (s->flags & PF_MALFORMED) c->malformed[0]++;   /* dropped unless @nf.malformed sent it */
        uint32_t mask = out_mask(s);
        if (!mask) c->dropped[0]++;
        else count_out(c, mask);
    }
    for (size_t at = 0; at < emit_used;) {
        uint32_t *h = (uint32_t *)(emit_buf + at);
        count_out(c, h[1]);
        at += 8 + ((h[0] + 7) & ~7u);
    }
    c->packet_sets_created[0] += pend.created;
    c->packet_sets_expired[0] += pend.expired;
    c->table_full[0] += pend.table_full;
    c->packet_sets_live[0] = pst_count();
}

/* After a commit: output and counters of the committed transaction. */
static void publish(Item *items, int n) {
    count_output(items, n);
    send_output(items, n);
    if (io->flush) io->flush();
    proc.me->counters.packets_in[0] += batch_packets(items, n);
    write_text();
}

/* Commit a batch with its output: staged before the commit where the packet
 * I/O can (a worker's rings), so a worker that dies leaves the batch committed
 * with its output and counted, or neither (see pktio.h).  0, or -1 aborted. */
static int commit_publish(Item *items, int n) {
    int staged = io->stage && !proc.local && io->stage(1, 0) == 0;
    if (staged) {
        send_output(items, n);
        io->stage(2, batch_packets(items, n));
    }
    if (stm_commit(&proc.tx) < 0) {
        if (staged) io->stage(0, 0);
        return -1;
    }
    if (!staged || io->stage(3, 0) < 0) {
        publish(items, n);
        return 0;
    }
    count_output(items, n);
    write_text();
    return 0;
}

/* --------------------------------------------------------- transactions */

static int tx_mode(void) { return proc.local ? TX_DIRECT : TX_STM; }

static void begin(int mode, int irrevocable, int handler, uint32_t index) {
    emit_used = 0;
    text_used = 0;
    stm_begin(&proc.tx, mode, irrevocable);
    proc.tx.ctx = HANDLER_CTX(handler, index);
}

void loop_tx_begin(int mode, int irrevocable) {
    begin(mode, irrevocable, mode == TX_UNLOGGED ? HANDLER_INIT : HANDLER_TRANSACT, 0);
}

int loop_tx_commit(void) {
    if (stm_commit(&proc.tx) < 0) return -1;
    write_text();
    return 0;
}

/* Run `n` items in one transaction (split, retried, irrevocable, or one per
 * transaction after a handler error: see the top).  Returns how many leading
 * items are done: n, or fewer when a stop request interrupted it (the
 * interrupted attempt is rolled back as if it never began, and a
 * KeyboardInterrupt / SystemExit from a handler stays set). */
static int run_batch(Item *items, int n) {
    uint64_t start_clock = proc.clock;
    int too_large = 0;
    for (int aborts = 0;;) {
        int irrevocable = !proc.local && n == 1 && (aborts >= IRREVOCABLE_AFTER || too_large);
        proc.clock = start_clock;
        memset(&pend, 0, sizeof pend);
        begin(irrevocable ? TX_DIRECT : tx_mode(), irrevocable ? STM_IRREVOCABLE : 0, HANDLER_PACKET, 0);
        int r = 0, i;
        for (i = 0; i < n && r == 0; i++) {
            if (proc_stopping()) {   /* the control process asked: leave now, even mid-batch */
                r = -3;
                break;
            }
            r = process_item(&items[i]);
        }
        if (r == -3) {
            PyObject *exc = nfos_fetch_exc();
            stm_rollback(&proc.tx);
            nfos_restore_exc(exc);
            proc.clock = start_clock;
            return 0;
        }
        if (r == -2) {
            if (n > 1) {   /* find the faulty packet: one transaction each */
                PyErr_Clear();
                stm_abort_cause(&proc.tx, ABORT_HANDLER_ERROR);
                proc.clock = start_clock;
                for (i = 0; i < n; i++)
                    if (run_batch(&items[i], 1) == 0) return i;
                return n;
            }
            Pending keep = pend;
            PyObject *exc = nfos_fetch_exc();
            stm_abort_cause(&proc.tx, ABORT_HANDLER_ERROR);
            report_handler_error(exc);
            SlotCounters *c = &proc.me->counters;
            c->handler_errors[0]++;
            c->table_full[0] += keep.table_full;
            if (items[0].pkt) {
                count_in(c, items[0].pkt);
                if (items[0].pkt->flags & PF_MALFORMED) c->malformed[0]++;
                c->dropped[0]++;
            } else {   /* a failing expiry handler: the set goes anyway */
                begin(tx_mode(), 0, HANDLER_EXPIRED, 0);
                pst_remove(items[0].expire_id);
                stm_commit(&proc.tx);
                c->packet_sets_expired[0]++;
                c->packet_sets_live[0] = pst_count();
            }
            if (clog) record_tx(items[0].pkt ? HANDLER_PACKET : HANDLER_EXPIRED, 0, start_clock, items, 1);
            return 1;
        }
        if (r == 0 && commit_publish(items, n) == 0) {
            if (clog) record_tx(items[0].pkt ? HANDLER_PACKET : HANDLER_EXPIRED, 0, start_clock, items, n);
            return n;
        }
        if (r == -1) stm_abort(&proc.tx);
        aborts++;
        /* too large for one transaction: retrying cannot help; split, or run alone */
        too_large = proc.tx.fail_cause == ABORT_TOO_LARGE;
        if (n > 1 && (aborts >= SPLIT_AFTER || too_large)) {
            int h = n / 2;
            proc.me->counters.batch_splits[0]++;
            proc.clock = start_clock;
            int k = run_batch(items, h);
            if (k < h) return k;
            return h + run_batch(items + h, n - h);
        }
        if (aborts > 4) sched_yield();
    }
}

/* ----------------------------------------------------------- expiry sweep */

/* Real-time traffic (paced, live): a sweep runs at most this many batches of
 * expiry handlers before the packets waiting are handled; the rest when the
 * loop is idle or at the next advance (0: no limit, replay).  An expired set
 * is also caught at lookup, so a later sweep changes no set's fate. */
static int sweep_limit;
static int sweep_pending;

void loop_set_sweep_limit(int batches) { sweep_limit = batches > 0 ? batches : 0; }

/* 0, or -1 when a stop request interrupted it (an exception may be set). */
static int sweep_expired(void) {
    if (!expiry_ns || !has_sets) return 0;
    Item items[NFOS_BATCH_MAX];
    sweep_pending = 0;
    for (int rounds = 0;; rounds++) {
        int ps = proc_poll_stop();   /* many sets with no handler to run: no Python in between */
        if (ps) return -1;
        if (sweep_limit && rounds >= sweep_limit) {
            sweep_pending = 1;
            return 0;
        }
        int n = 0;
        int32_t id = pst_oldest();
        /* walk oldest-first; collect up to a batch of expired sets */
        while (id >= 0 && n < batch && set_expired(id)) {
            items[n].pkt = NULL;
            items[n].expire_id = id;
            n++;
            id = pst_next_lru(id);
        }
        if (n == 0) return 0;
        if (run_batch(items, n) < n) return -1;
    }
}

int loop_sweep(void) {
    sweep_expired();
    return PyErr_Occurred() ? -1 : 0;
}

/* ------------------------------------------------------------ periodic */

static uint64_t next_periodic_due(void) {
    uint64_t due = UINT64_MAX;
    for (int i = 0; i < nperiodic; i++)
        if (periodics[i].next < due) due = periodics[i].next;
    return due;
}

PyObject *loop_run_in_tx(PyObject *fn, PyObject *args, int handler, uint32_t index) {
    memset(&pend, 0, sizeof pend);
    for (int aborts = 0;; aborts++) {
        /* the control process: its transactions are rare and may be large (a scan); after an
         * abort of any cause, run alone rather than risk aborting again */
        int irrevocable = !proc.local && aborts >= 1;
        begin(irrevocable ? TX_DIRECT : tx_mode(), irrevocable ? STM_IRREVOCABLE : 0, handler, index);
        heartbeat(HB_CODE(proc.tx.ctx));
        PyObject *r = PyObject_Call(fn, args, NULL);
        heartbeat(0);
        if (!r && stop_exception()) {   /* Ctrl-C: the attempt never happened */
            PyObject *exc = nfos_fetch_exc();
            stm_rollback(&proc.tx);
            nfos_restore_exc(exc);
            return NULL;
        }
        if (!r && !proc.tx.doomed && !PyErr_ExceptionMatches(proc.TransactionAborted)) {
            PyObject *exc = nfos_fetch_exc();
            stm_abort_cause(&proc.tx, ABORT_HANDLER_ERROR);
            nfos_restore_exc(exc);
            return NULL;
        }
        if (r && stm_commit(&proc.tx) == 0) {
            publish(NULL, 0);
            return r;
        }
        Py_XDECREF(r);
        PyErr_Clear();
        if (proc.tx.active) stm_abort(&proc.tx);
    }
}

PyObject *loop_run_alone(PyObject *fn, PyObject *args, int handler, uint32_t index) {
    memset(&pend, 0, sizeof pend);
    begin(TX_DIRECT, STM_ALONE, handler, index);
    heartbeat(HB_CODE(proc.tx.ctx));
    PyObject *r = PyObject_Call(fn, args, NULL);
    heartbeat(0);
    if (!r && stop_exception()) {   /* Ctrl-C: the attempt never happened */
        PyObject *exc = nfos_fetch_exc();
        stm_rollback(&proc.tx);
        nfos_restore_exc(exc);
        return NULL;
    }
    if (r && !proc.tx.doomed && stm_commit(&proc.tx) == 0) {
        publish(NULL, 0);
        return r;
    }
    Py_XDECREF(r);
    PyObject *exc = r ? NULL : nfos_fetch_exc();
    if (proc.tx.active) stm_abort_cause(&proc.tx, ABORT_HANDLER_ERROR);
    if (exc) nfos_restore_exc(exc);
    else PyErr_SetString(PyExc_RuntimeError, "a transaction run alone aborted (out of memory for its undo log)");
    return NULL;
}

/* A schedule the clock would leave more than PERIODIC_MAX_BEHIND intervals
 * behind (a capture's clock jumped: years, not seconds) skips the runs in
 * between: each handler runs once, at its last due time before the next event,
 * and the runs skipped are counted (periodic_skipped), so a jump costs a
 * bounded number of runs and barriers. */
#define PERIODIC_MAX_BEHIND (1ull << 20)

/* Skip the schedule ahead as above, given the time of the next event `g` (the
 * same g gives the same schedule in every process); `count` in one process
 * only.  Returns the next due time. */
static uint64_t skip_behind(uint64_t g, int count) {
    for (int i = 0; i < nperiodic; i++) {
        Periodic *p = &periodics[i];
        uint64_t behind = g > p->next ? (g - p->next) / p->interval : 0;
        if (behind > PERIODIC_MAX_BEHIND) {
            p->next += behind * p->interval;
            if (count) proc.me->counters.periodic_skipped[0] += behind;
        }
    }
    return next_periodic_due();
}

/* Run the periodic handlers due at T (those whose next due time is T), in
 * schedule order, each alone in direct mode; or, `run` 0, only move the
 * schedule past T (another worker ran them).  The clock is T.  -1: a stop
 * request out of a handler (KeyboardInterrupt / SystemExit set; it is due
 * again). */
static int periodics_at(uint64_t T, int run) {
    if (T > proc.clock) proc.clock = T;
    for (int i = 0; i < nperiodic; i++) {
        Periodic *p = &periodics[i];
        if (p->next > T) continue;
        p->next += p->interval;
        if (!run) continue;
        PyObject *empty = PyTuple_New(0);
        PyObject *r = empty ? loop_run_alone(p->fn, empty, HANDLER_PERIODIC, (uint32_t)i) : NULL;
        Py_XDECREF(empty);
        if (!r) {
            if (stop_exception()) {
                p->next -= p->interval;
                return -1;
            }
            if (clog) record_tx(HANDLER_PERIODIC, (uint32_t)i, T, NULL, 0);
            proc.me->counters.handler_errors[0]++;
            report_handler_error(nfos_fetch_exc());
        } else if (clog) {
            record_tx(HANDLER_PERIODIC, (uint32_t)i, T, NULL, 0);
        }
        Py_XDECREF(r);
    }
    return 0;
}

int loop_replay_tx(int worker, int handler, uint32_t index, uint64_t clock, Item *items, int n) {
    if (proc_set_slot(worker) < 0) return -2;
    pst_select(worker);
    proc.clock = clock;
    if (handler == HANDLER_PERIODIC) {
        if ((int)index >= nperiodic) {
            PyErr_Format(PyExc_ValueError, "the NF has no periodic handler %u", index);
            return -2;
        }
        PyObject *empty = PyTuple_New(0);
        PyObject *r = empty ? loop_run_alone(periodics[index].fn, empty, HANDLER_PERIODIC, index) : NULL;
        Py_XDECREF(empty);
        if (!r) {
            if (!empty || stop_exception()) return -2;
            proc.me->counters.handler_errors[0]++;
            report_handler_error(nfos_fetch_exc());
        }
        Py_XDECREF(r);
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (!items[i].pkt && !set_expired(items[i].expire_id)) return 1;
    if (run_batch(items, n) < n) return -2;
    return PyErr_Occurred() ? -2 : 0;
}

/* The control process (live mode): the handlers due up to `upto`, each in a
 * transaction.  0, or -1 with KeyboardInterrupt / SystemExit set (a stop request). */
static int run_due_periodics(uint64_t upto) {
    for (;;) {
        int best = -1;
        for (int i = 0; i < nperiodic; i++)
            if (periodics[i].next <= upto && (best < 0 || periodics[i].next < periodics[best].next)) best = i;
        if (best < 0) return 0;
        Periodic *p = &periodics[best];
        uint64_t next = p->next;
        uint64_t behind = (upto - p->next) / p->interval;
        if (behind > PERIODIC_MAX_BEHIND) {
            p->next += behind * p->interval;
            proc.me->counters.periodic_skipped[0] += behind;
        }
        if (p->next > proc.clock) proc.clock = p->next;
        p->next += p->interval;
        PyObject *empty = PyTuple_New(0);
        PyObject *r = loop_run_in_tx(p->fn, empty, HANDLER_PERIODIC, (uint32_t)best);
        Py_DECREF(empty);
        if (!r) {
            if (stop_exception()) {   /* due again next time */
                p->next = next;
                return -1;
            }
            proc.me->counters.handler_errors[0]++;
            report_handler_error(nfos_fetch_exc());
        }
        Py_XDECREF(r);
    }
}

int loop_run_periodics(uint64_t upto) {
    run_due_periodics(upto);
    return PyErr_Occurred() ? -1 : 0;
}

/* ------------------------------------------------- barriers and the horizon */

void loop_recover(int w) {
    if (!lsync || w < 0 || w >= proc.nworkers) return;
    uint64_t rel = atomic_load(&lsync->released), led = atomic_load(&lsync->led);
    if (led > rel && atomic_load(&lsync->leader) == (uint64_t)w)   /* it died leading: the barrier is open again */
        atomic_store(&lsync->led, rel);
}

void loop_resume(void) {
    SlotCounters *c = &proc.me->counters;
    if (c->clock_ns[0] > proc.clock) proc.clock = c->clock_ns[0];
    if (!lsync) return;
    my_progress = atomic_load(&PROGRESS(proc.slot));
    if (my_progress == UINT64_MAX) my_progress = 0;
    last_rx_time = proc.clock;
    uint64_t rel = atomic_load(&lsync->released);
    for (int i = 0; i < nperiodic; i++) {   /* the barriers already released: the others ran them */
        Periodic *p = &periodics[i];
        if (p->interval && p->next <= rel) p->next += ((rel - p->next) / p->interval + 1) * p->interval;
    }
}

uint64_t loop_progress(int w) {
    return lsync && w >= 0 && w < proc.nworkers ? atomic_load(&PROGRESS(w)) : 0;
}

/* Everything of this worker before `t` is processed (t only grows). */
static inline void publish_progress(uint64_t t) {
    if (lsync && t > my_progress) {
        my_progress = t;
        atomic_store(&PROGRESS(proc.slot), t);
        if (t == UINT64_MAX) atomic_store(&SWEPT(proc.slot), t);   /* finished: at every later barrier */
    }
}

/* The latest time this worker may take: every other worker's progress + Δ. */
static uint64_t horizon(void) {
    uint64_t m = UINT64_MAX;
    for (int w = 0; w < proc.nworkers; w++) {
        if (w == proc.slot) continue;
        uint64_t p = atomic_load(&PROGRESS(w));
        if (p < m) m = p;
    }
    return m > UINT64_MAX - max_drift ? UINT64_MAX : m + max_drift;
}

/* Waiting for other workers: spin briefly, then yield, then sleep a little
 * (two cores may be shared by more processes than that). */
static void pause_waiting(unsigned spins) {
    if (spins < 16) return;
    if (spins < 2000) sched_yield();
    else usleep(spins < 20000 ? 10 : 100);
}

/* The periodic handlers due at T, before a descriptor at `next` >= T: the
 * clock moves to T and expired sets are swept at T; with workers, the
 * barrier (see the top of the file).  0, -1 the run stops, -2 exception set. */
static int advance(uint64_t t);
static int periodic_barrier(uint64_t T, uint64_t next) {
    if (advance(T) < 0) return -2;
    if (!lsync) {
        periodics_at(skip_behind(next, 1), 1);   /* a stop out of a handler: its exception is set */
        return PyErr_Occurred() ? -2 : 0;
    }
    publish_progress(next);
    atomic_store(&SWEPT(proc.slot), T);
    int leader = -1;
    for (unsigned spins = 0;; spins++) {
        if (atomic_load(&lsync->released) >= T) break;   /* led already */
        int all = 1;
        leader = -1;
        for (int w = 0; w < proc.nworkers; w++) {
            if (atomic_load(&SWEPT(w)) < T) {
                all = 0;
                break;
            }
            if (atomic_load(&PROGRESS(w)) != UINT64_MAX && leader < 0) leader = w;   /* the lowest with input left */
        }
        if (all) break;
        if (proc_stopping()) return -1;
        pause_waiting(spins);
    }
    if (leader == proc.slot) {   /* claim T: once (a late worker may see the leader finished since) */
        uint64_t led = atomic_load(&lsync->led);
        while (led < T && !atomic_compare_exchange_weak(&lsync->led, &led, T)) {}
        if (led < T) {
            atomic_store(&lsync->leader, (uint64_t)proc.slot);
            uint64_t g = UINT64_MAX;   /* the next event of any worker (all wait: it stays put) */
            for (int w = 0; w < proc.nworkers; w++) {
                uint64_t p = atomic_load(&PROGRESS(w));
                if (p < g) g = p;
            }
            atomic_store(&lsync->next_event, g);
            periodics_at(skip_behind(g, 1), 1);
            atomic_store(&lsync->released, T);
            return PyErr_Occurred() ? -2 : 0;
        }
    }
    for (unsigned spins = 0; atomic_load(&lsync->released) < T; spins++) {
        if (proc_stopping()) return -1;
        pause_waiting(spins);
    }
    periodics_at(skip_behind(atomic_load(&lsync->next_event), 0), 0);
    return 0;
}

/* ------------------------------------------------------------ main loop */

/* Advance the clock to `t` (expiring idle sets first).  -1: stopped (an
 * exception may be set). */
static int advance(uint64_t t) {
    if (t > proc.clock) {
        proc.clock = t;
        int r = sweep_expired();
        proc.clock = t;
        if (r < 0 || PyErr_Occurred()) return -1;
    }
    return 0;
}

long long loop_run(long long budget, int spin) {
    int r = io->enter(spin);
    if (r < 0) return r == -1 ? -1 : -2;
    SlotCounters *c = &proc.me->counters;
    Item items[NFOS_BATCH_MAX];
    int max = batch > 0 ? batch : NFOS_BATCH_MAX;
    int timed = proc.local || lsync;   /* periodic handlers run in this loop */
    unsigned waits = 0;
    long long done = 0;
    while (done < budget) {
        /* A stop request: a signal (Ctrl-C in the sequential mode: KeyboardInterrupt
         * raised here), or the parent gone; the arena's stop flag is the backend's STOP. */
        int ps = proc_poll_stop();
        if (ps < 0) return -2;
        if (ps > 0 && !proc_stopping()) {
            publish_progress(UINT64_MAX);
            return -1;
        }
        PktioRx rx = {.items = items, .horizon = lsync ? horizon() : UINT64_MAX, .at_wait = publish_progress};
        switch (io->rx(&rx, max, timed ? next_periodic_due() : UINT64_MAX)) {
        case PKTIO_STOP:
            publish_progress(UINT64_MAX);
            return -1;
        case PKTIO_END:
            publish_progress(UINT64_MAX);
            if (io->leave) io->leave();
            return done ? done : -1;
        case PKTIO_PERIODIC:
            r = periodic_barrier(next_periodic_due(), rx.time);
            if (r == -1) {
                publish_progress(UINT64_MAX);
                return -1;
            }
            if (r < 0 || PyErr_Occurred()) return -2;
            c->clock_ns[0] = proc.clock;
            continue;
        case PKTIO_WAIT:   /* others are more than Δ behind: let them catch up */
            publish_progress(rx.time);
            pause_waiting(waits++);
            continue;
        case PKTIO_IDLE:
            publish_progress(last_rx_time);
            if (rx.time) {
                if (advance(rx.time) < 0) {
                    if (PyErr_Occurred()) return -2;
                    continue;   /* the backend says STOP next */
                }
                c->clock_ns[0] = proc.clock;
            } else if (sweep_pending && sweep_expired() < 0) {   /* the rest of a bounded sweep, while nothing waits */
                if (PyErr_Occurred()) return -2;
                continue;   /* stopped: the backend says STOP next */
            }
            r = io->wait();
            if (r < 0) return -2;
            if (r > 0) goto leave;
            continue;
        case PKTIO_TICK:
            publish_progress(rx.time);
            if (rx.time > last_rx_time) last_rx_time = rx.time;
            if (rx.time > proc.clock) proc.clock = rx.time;
            if (sweep_expired() < 0) {
                if (PyErr_Occurred()) return -2;
                continue;
            }
            break;
        case PKTIO_BATCH: {
            publish_progress(rx.time);
            if (rx.last > last_rx_time) last_rx_time = rx.last;
            if (advance(rx.time) < 0) {
                if (PyErr_Occurred()) return -2;
                continue;
            }
            int k = run_batch(items, rx.n);
            if (k < rx.n) {   /* stopped mid-batch: the leading k packets are done */
                if (k) {
                    c->clock_ns[0] = proc.clock;
                    rx.count = (uint64_t)k;
                    io->done(&rx);
                    done += k;
                }
                if (PyErr_Occurred()) return -2;
                continue;
            }
            break;
        }
        }
        waits = 0;
        if (PyErr_Occurred()) return -2;
        c->clock_ns[0] = proc.clock;
        io->done(&rx);
        done += (long long)rx.count;
    }
leave:
    if (io->leave) io->leave();
    return done;
}

/* ------------------------------------------------------------- NF API */

/* register(pkt): create the packet set of the packet being handled by the
 * new-packet-set handler; raises TableFull when the worker's table is full. */
PyObject *loop_register(PktSlot *s) {
    if (!s->has_set) {
        PyErr_SetString(PyExc_ValueError, "this packet matches no packet-set definition (it is an orphan)");
        return NULL;
    }
    if (s != cur_new) {
        int32_t id = pst_lookup(s);
        if (id >= 0) return state_view(id);
        PyErr_SetString(PyExc_RuntimeError, "register() is called from the @nf.new_packet_set handler");
        return NULL;
    }
    int32_t id = pst_lookup(s);
    if (id < 0) {
        id = pst_insert(s);
        if (id == -2) return NULL;
        if (id < 0) {
            PyErr_Format(proc.TableFull, "the packet-set table of worker %d is full (capacity %u per worker)",
                         proc.slot, pst_capacity());
            return NULL;
        }
        pend.created++;
    }
    return state_view(id);
}

int loop_emit(const char *frame, uint32_t len, uint32_t devmask) {
    size_t need = 8 + ((len + 7) & ~7u);
    if (emit_used + need > emit_cap) {
        size_t n = emit_cap;
        while (n < emit_used + need) n *= 2;
        char *p = n <= ((size_t)1 << 32) ? PyMem_RawRealloc(emit_buf, n) : NULL;
        if (!p) {
            PyErr_SetString(PyExc_MemoryError, "too many frames emitted in one transaction");
            return -1;
        }
        emit_buf = p;
        emit_cap = n;
    }
    uint32_t *h = (uint32_t *)(emit_buf + emit_used);
    h[0] = len;
    h[1] = devmask;
    memcpy(h + 2, frame, len);
    emit_used += need;
    return 0;
}
