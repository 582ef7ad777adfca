/* The worker loop (hot path): RX -> parse -> packet set -> handlers in one
 * transaction per batch -> commit -> TX.  Packets come from and go to the
 * packet I/O of the process (pktio.h: the replay rings, or AF_PACKET live),
 * one call per batch.
 *
 * Batches: up to `batch` (<= 32) packets run in one transaction.  On an
 * abort the batch is retried; after SPLIT_AFTER aborts it is split in two
 * halves (each run the same way); a single packet that aborted
 * IRREVOCABLE_AFTER times runs irrevocably, so every packet commits.
 * A handler that raises (not an abort) rolls back the batch, which is then
 * re-run one packet per transaction so that only the faulty packet is
 * dropped and counted.
 *
 * Time: a packet's handlers see now() = max(clock, packet time).  The clock
 * of an attempt is reset to the batch's starting clock, so a retry sees the
 * same times.  Expired packet sets are swept oldest-first between batches
 * (and on clock ticks, and while idle live) and also on lookup, so a set's
 * fate does not depend on when the sweep ran.  In the sequential mode,
 * periodic handlers due before a packet run before it.
 *
 * Output: at commit, the packets' output decisions and the frames emitted by
 * nf.emit() (buffered here, discarded by an abort) go to the packet I/O, and
 * the counters (counters.def) move; in paced mode the queue-to-commit
 * latency of each packet is histogrammed.
 */
#include "worker_loop.h"

#include <sched.h>

#define SPLIT_AFTER 2
#define IRREVOCABLE_AFTER 8
#define EMIT_BYTES (1u << 20)

static const Pktio *io = &pktio_ring;

/* the NF (loop_configure) */
static PyObject *h_new, *h_packet, *h_expired, *h_orphan, *h_error;
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

static PktSlot *cur_new;          /* the packet in the new-packet-set handler */
typedef struct {
    uint64_t created, expired, table_full;
} Pending;
static Pending pend;              /* counts of the running attempt */

int loop_init(void) {
    emit_cap = EMIT_BYTES;
    emit_buf = PyMem_RawMalloc(emit_cap);
    if (!emit_buf) {
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

void loop_configure(const LoopConfig *c) {
    set_ref(&h_new, c->h_new);
    set_ref(&h_packet, c->h_packet);
    set_ref(&h_expired, c->h_expired);
    set_ref(&h_orphan, c->h_orphan);
    set_ref(&h_error, c->h_error);
    clear_periodics();
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
}

void loop_reset(void) {
    has_sets = 0;
    Py_CLEAR(h_new);
    Py_CLEAR(h_packet);
    Py_CLEAR(h_expired);
    Py_CLEAR(h_orphan);
    Py_CLEAR(h_error);
    Py_CLEAR(state_type);
    clear_periodics();
}

/* ------------------------------------------------------------- handlers */

/* Call a handler; 0 ok, -1 abort (exception cleared), -2 handler error
 * (exception set). */
static int call(PyObject *h, PyObject **args, size_t nargs) {
    PyObject *r = PyObject_Vectorcall(h, args, nargs, NULL);
    if (r) {
        Py_DECREF(r);
        if (proc.tx.doomed) return -1;   /* an abort was swallowed by NF code */
        return 0;
    }
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
    if (s->flags & PF_MALFORMED) return 0;
    PyObject *pkt = packet_new(s);
    if (!pkt) return -2;
    int r = 0;
    if (s->has_set) {
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
                    PyObject *args[2] = {pkt, state_view(id)};
                    if (!args[1]) r = -2;
                    else {
                        r = call(h_packet, args, 2);
                        Py_DECREF(args[1]);
                    }
                }
            } else if (h_new) {
                cur_new = s;
                r = call(h_new, &pkt, 1);
                cur_new = NULL;
            }
        }
    } else if (h_orphan) {
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

/* Log a handler error once per NF source line (across all processes). */
static void report_handler_error(void) {
    PyObject *exc = nfos_fetch_exc();
    if (h_error && exc) {
        PyObject *r = PyObject_CallOneArg(h_error, exc);
        if (!r) PyErr_WriteUnraisable(h_error);
        Py_XDECREF(r);
    }
    Py_XDECREF(exc);
    PyErr_Clear();
}

/* ------------------------------------------------------------- output */

static inline unsigned lat_bucket(uint64_t v) {
    if (v < 16) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned b = 16 + (e - 4) * 16 + (unsigned)((v >> (e - 4)) & 15);
    return b < LAT_BUCKETS ? b : LAT_BUCKETS - 1;
}

static inline void count_out(SlotCounters *c, uint32_t mask) {
    for (int d = 0; d < proc.ndevs; d++)
        if (mask & (1u << d)) c->packets_out[d]++;
}

/* After a commit: output and counters of the committed transaction. */
static void publish(Item *items, int n) {
    SlotShared *me = proc.me;
    SlotCounters *c = &me->counters;
    uint32_t all = all_devs_mask();
    uint64_t now = 0;
    PktOut out[NFOS_BATCH_MAX];
    int k = 0;
    for (int i = 0; i < n; i++) {
        PktSlot *s = items[i].pkt;
        if (!s) continue;
        if (s->enq_ns) {   /* paced mode: queue-to-commit latency */
            if (!now) now = mono_ns();
            me->lat_hist[lat_bucket(now > s->enq_ns ? now - s->enq_ns : 0)]++;
        }
        c->packets_in[0]++;
        if (s->flags & PF_MALFORMED) {
            c->malformed[0]++;
            c->dropped[0]++;
            continue;
        }
        uint32_t mask = s->out == -1 ? 0 : s->out == -2 ? (all & ~(1u << s->dev)) : (1u << s->out);
        if (!mask) {
            c->dropped[0]++;
            continue;
        }
        count_out(c, mask);
        out[k++] = (PktOut){s->data, s->len, mask, s->dev, s->time};
    }
    if (k) io->send(out, k);
    k = 0;
    for (size_t at = 0; at < emit_used;) {
        uint32_t *h = (uint32_t *)(emit_buf + at);
        count_out(c, h[1]);
        out[k++] = (PktOut){(const uint8_t *)(h + 2), h[0], h[1], UINT32_MAX, proc.clock};
        if (k == NFOS_BATCH_MAX) {
            io->send(out, k);
            k = 0;
        }
        at += 8 + ((h[0] + 7) & ~7u);
    }
    if (k) io->send(out, k);
    c->packet_sets_created[0] += pend.created;
    c->packet_sets_expired[0] += pend.expired;
    c->table_full[0] += pend.table_full;
    c->packet_sets_live[0] = pst_count();
    if (io->flush) io->flush();
}

/* --------------------------------------------------------- transactions */

static int tx_mode(void) { return proc.local ? TX_DIRECT : TX_STM; }

static void begin(int mode, int irrevocable) {
    emit_used = 0;
    stm_begin(&proc.tx, mode, irrevocable);
}

void loop_tx_begin(int mode, int irrevocable) { begin(mode, irrevocable); }

static void run_batch(Item *items, int n) {
    uint64_t start_clock = proc.clock;
    for (int aborts = 0;;) {
        int irrevocable = !proc.local && n == 1 && aborts >= IRREVOCABLE_AFTER;
        proc.clock = start_clock;
        memset(&pend, 0, sizeof pend);
        begin(irrevocable ? TX_DIRECT : tx_mode(), irrevocable);
        int r = 0, i;
        for (i = 0; i < n && r == 0; i++) r = process_item(&items[i]);
        if (r == -2) {
            if (n > 1) {   /* find the faulty packet: one transaction each */
                PyErr_Clear();
                stm_abort_cause(&proc.tx, ABORT_HANDLER_ERROR);
                proc.clock = start_clock;
                for (i = 0; i < n; i++) run_batch(&items[i], 1);
                return;
            }
            Pending keep = pend;
            report_handler_error();
            stm_abort_cause(&proc.tx, ABORT_HANDLER_ERROR);
            SlotCounters *c = &proc.me->counters;
            c->handler_errors[0]++;
            c->table_full[0] += keep.table_full;
            if (items[0].pkt) {
                c->packets_in[0]++;
                c->dropped[0]++;
            } else {   /* a failing expiry handler: the set goes anyway */
                begin(tx_mode(), 0);
                pst_remove(items[0].expire_id);
                stm_commit(&proc.tx);
                c->packet_sets_expired[0]++;
                c->packet_sets_live[0] = pst_count();
            }
            return;
        }
        if (r == 0 && stm_commit(&proc.tx) == 0) {
            publish(items, n);
            return;
        }
        if (r == -1) stm_abort(&proc.tx);
        aborts++;
        if (n > 1 && aborts >= SPLIT_AFTER) {
            int h = n / 2;
            proc.me->counters.batch_splits[0]++;
            proc.clock = start_clock;
            run_batch(items, h);
            run_batch(items + h, n - h);
            return;
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

static void sweep_expired(void) {
    if (!expiry_ns || !has_sets) return;
    Item items[NFOS_BATCH_MAX];
    sweep_pending = 0;
    for (int rounds = 0;; rounds++) {
        if (sweep_limit && rounds >= sweep_limit) {
            sweep_pending = 1;
            return;
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
        if (n == 0) return;
        run_batch(items, n);
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

PyObject *loop_run_in_tx(PyObject *fn, PyObject *args) {
    memset(&pend, 0, sizeof pend);
    for (int aborts = 0;; aborts++) {
        int irrevocable = !proc.local && aborts >= IRREVOCABLE_AFTER;
        begin(irrevocable ? TX_DIRECT : tx_mode(), irrevocable);
        PyObject *r = PyObject_Call(fn, args, NULL);
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

static int run_due_periodics(uint64_t upto) {
    for (;;) {
        int best = -1;
        for (int i = 0; i < nperiodic; i++)
            if (periodics[i].next <= upto && (best < 0 || periodics[i].next < periodics[best].next)) best = i;
        if (best < 0) return 0;
        Periodic *p = &periodics[best];
        if (p->next > proc.clock) proc.clock = p->next;
        p->next += p->interval;
        PyObject *empty = PyTuple_New(0);
        PyObject *r = loop_run_in_tx(p->fn, empty);
        Py_DECREF(empty);
        if (!r) {
            proc.me->counters.handler_errors[0]++;
            report_handler_error();
        }
        Py_XDECREF(r);
    }
}

int loop_run_periodics(uint64_t upto) {
    run_due_periodics(upto);
    return PyErr_Occurred() ? -1 : 0;
}

/* ------------------------------------------------------------ main loop */

/* Advance the clock to `t` (expiring idle sets first).  -1: exception set. */
static int advance(uint64_t t) {
    if (t > proc.clock) {
        proc.clock = t;
        sweep_expired();
        proc.clock = t;
        if (PyErr_Occurred()) return -1;
    }
    return 0;
}

long long loop_run(long long budget, int spin) {
    int r = io->enter(spin);
    if (r < 0) return r == -1 ? -1 : -2;
    SlotCounters *c = &proc.me->counters;
    Item items[NFOS_BATCH_MAX];
    int max = batch > 0 ? batch : NFOS_BATCH_MAX;
    long long done = 0;
    while (done < budget) {
        PktioRx rx = {.items = items};
        switch (io->rx(&rx, max, proc.local ? next_periodic_due() : UINT64_MAX)) {
        case PKTIO_STOP:
            return -1;
        case PKTIO_END:
            if (io->leave) io->leave();
            return done ? done : -1;
        case PKTIO_PERIODIC:
            run_due_periodics(rx.time);
            if (PyErr_Occurred()) return -2;
            continue;
        case PKTIO_IDLE:
            if (rx.time) {
                if (advance(rx.time) < 0) return -2;
                c->clock_ns[0] = proc.clock;
            } else if (sweep_pending) {   /* the rest of a bounded sweep, while nothing waits */
                sweep_expired();
                if (PyErr_Occurred()) return -2;
            }
            r = io->wait();
            if (r < 0) return -2;
            if (r > 0) goto leave;
            continue;
        case PKTIO_TICK:
            if (rx.time > proc.clock) proc.clock = rx.time;
            sweep_expired();
            break;
        case PKTIO_BATCH:
            if (advance(rx.time) < 0) return -2;
            run_batch(items, rx.n);
            break;
        }
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
