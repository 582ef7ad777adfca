/* The worker loop (hot path): RX ring -> parse -> packet set -> handlers in
 * one transaction per batch -> commit -> TX ring.
 *
 * Batches: up to `batch` (<= 32) descriptors run in one transaction.  On an
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
 * and also on lookup, so a set's fate does not depend on when the sweep ran.
 *
 * Rings (in the arena): one RX ring of descriptors per slot (control ->
 * worker, single producer / single consumer) and one TX byte ring per slot
 * (worker -> control) holding output records when output is collected.
 */
#include "nfos_core.h"

#include <sched.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define SPLIT_AFTER 2
#define IRREVOCABLE_AFTER 8

Config g_cfg;

/* ------------------------------------------------------------------ rings */

enum { DESC_PACKET = 0, DESC_TICK = 1 };

typedef struct {
    uint64_t ptr;
    uint32_t len;
    uint16_t dev;
    uint16_t kind;
    uint64_t time;
    uint64_t enq_ns;   /* paced mode: when the generator queued it; 0 otherwise */
} RxDesc;

typedef struct {
    _Atomic uint64_t head;   /* written by the producer */
    char pad0[56];
    _Atomic uint64_t tail;   /* descriptors consumed and committed */
    char pad1[56];
    _Atomic uint32_t closed;
    _Atomic uint32_t finished;
    uint64_t mask;
    RxDesc *descs;
} RxRing;

typedef struct {
    _Atomic uint64_t head;
    char pad0[56];
    _Atomic uint64_t tail;
    char pad1[56];
    uint64_t cap;
    char *buf;
} TxRing;

typedef struct {
    uint32_t reclen, framelen, devmask, indev;
    uint64_t time, seq;
} TxRec;   /* 32 bytes; records are 32-byte aligned so a pad record always fits */

typedef struct {
    RxRing *rx;   /* per slot */
    TxRing *tx;
    _Atomic uint32_t start;
    _Atomic uint32_t ready;  /* workers set up and waiting for the start signal */
    _Atomic uint32_t stop;   /* the control process asks the workers to leave now */
    uint32_t nslots;
    uint64_t start_ns;       /* monotonic time of signal_start */
    char *pool_lo, *pool_hi; /* the replayed trace's frames */
} Rings;

static Rings *R;
static int g_local;          /* sequential mode: this process runs packets and periodic handlers */

extern int pst_alloc_all(uint32_t nslots, uint32_t capacity, uint32_t state_size);
extern void pst_select(int slot);
extern int dev_lookup(PyObject *dev);

int g_live;

uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void tx_ring_push(const uint8_t *frame, uint32_t len, uint32_t devmask, uint32_t indev, uint64_t time) {
    TxRing *t = &R->tx[g_slot];
    uint64_t rec = (sizeof(TxRec) + len + 31) & ~31ull;
    for (unsigned spins = 0;; spins++) {
        uint64_t head = atomic_load_explicit(&t->head, memory_order_relaxed);
        uint64_t tail = atomic_load_explicit(&t->tail, memory_order_acquire);
        uint64_t off = head % t->cap, room_end = t->cap - off;
        uint64_t need = rec <= room_end ? rec : room_end + rec;
        if (head + need - tail <= t->cap) {
            if (rec > room_end) {   /* pad to the end, wrap */
                TxRec *pad = (TxRec *)(t->buf + off);
                pad->reclen = (uint32_t)room_end;
                pad->framelen = UINT32_MAX;
                head += room_end;
                off = 0;
            }
            TxRec *r = (TxRec *)(t->buf + off);
            r->reclen = (uint32_t)rec;
            r->framelen = len;
            r->devmask = devmask;
            r->indev = indev;
            r->time = time;
            r->seq = 0;
            memcpy(r + 1, frame, len);
            atomic_store_explicit(&t->head, head + rec, memory_order_release);
            return;
        }
        if (spins > 64) usleep(50);   /* the control process drains the ring */
    }
}

/* ------------------------------------------------------------- handlers */

static PktSlot *g_cur_new;          /* the packet in the new-packet-set handler */
typedef struct {
    uint64_t created, expired, table_full;
} Pending;
static Pending pend;

static uint32_t all_devs_mask(void) { return g_cfg.ndevs >= 32 ? 0xffffffffu : (1u << g_cfg.ndevs) - 1; }

/* Call a handler; 0 ok, -1 abort (exception cleared), -2 handler error
 * (exception set). */
static int call(PyObject *h, PyObject **args, size_t nargs) {
    PyObject *r = PyObject_Vectorcall(h, args, nargs, NULL);
    if (r) {
        Py_DECREF(r);
        if (g_tx.doomed) return -1;   /* an abort was swallowed by NF code */
        return 0;
    }
    if (g_tx.doomed || PyErr_ExceptionMatches(TransactionAborted)) {
        PyErr_Clear();
        g_tx.doomed = 1;
        return -1;
    }
    if (PyErr_ExceptionMatches(TableFull)) pend.table_full++;
    return -2;
}

static PyObject *state_view(int32_t id) {
    if (!g_cfg.state_type) Py_RETURN_NONE;
    return record_view_new(g_cfg.state_type, pst_state(id), NULL, g_cfg.state_size, 0, (uint32_t)id, RV_PRIVATE);
}

static int run_expired_handler(int32_t id) {
    if (!g_cfg.h_expired) return 0;
    PyObject *st = state_view(id);
    if (!st) return -2;
    int r = call(g_cfg.h_expired, &st, 1);
    Py_DECREF(st);
    return r;
}

static inline int set_expired(int32_t id) {
    return g_cfg.expiry_ns && g_clock - pst_last_seen(id) >= g_cfg.expiry_ns && g_clock >= pst_last_seen(id);
}

static int process_packet(PktSlot *s) {
    s->out = -1;
    if (s->time > g_clock) g_clock = s->time;
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
                pst_touch(id, g_clock);
                if (g_cfg.h_packet) {
                    PyObject *args[2] = {pkt, state_view(id)};
                    if (!args[1]) r = -2;
                    else {
                        r = call(g_cfg.h_packet, args, 2);
                        Py_DECREF(args[1]);
                    }
                }
            } else if (g_cfg.h_new) {
                g_cur_new = s;
                r = call(g_cfg.h_new, &pkt, 1);
                g_cur_new = NULL;
            }
        }
    } else if (g_cfg.h_orphan) {
        r = call(g_cfg.h_orphan, &pkt, 1);
    }
    packet_invalidate(pkt);
    Py_DECREF(pkt);
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
    if (g_cfg.h_error && exc) {
        PyObject *r = PyObject_CallOneArg(g_cfg.h_error, exc);
        if (!r) PyErr_WriteUnraisable(g_cfg.h_error);
        Py_XDECREF(r);
    }
    Py_XDECREF(exc);
    PyErr_Clear();
}

static inline unsigned lat_bucket(uint64_t v) {
    if (v < 16) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned b = 16 + (e - 4) * 16 + (unsigned)((v >> (e - 4)) & 15);
    return b < LAT_BUCKETS ? b : LAT_BUCKETS - 1;
}

static void publish(Item *items, int n) {
    SlotStats *st = &my_shared()->stats;
    uint32_t all = all_devs_mask();
    uint64_t now = 0;
    for (int i = 0; i < n; i++) {
        PktSlot *s = items[i].pkt;
        if (!s) continue;
        if (s->enq_ns) {   /* paced mode: queue-to-commit latency */
            if (!now) now = mono_ns();
            my_shared()->lat_hist[lat_bucket(now > s->enq_ns ? now - s->enq_ns : 0)]++;
        }
        st->packets_in++;
        if (s->flags & PF_MALFORMED) {
            st->malformed++;
            st->dropped++;
            continue;
        }
        uint32_t mask = s->out == -1 ? 0 : s->out == -2 ? (all & ~(1u << s->dev)) : (1u << s->out);
        if (!mask) {
            st->dropped++;
            continue;
        }
        for (int d = 0; d < g_cfg.ndevs; d++)
            if (mask & (1u << d)) {
                st->out_per_dev[d]++;
                st->packets_out++;
            }
        if (g_live) live_tx(s->data, s->len, mask, s->dev);
        else if (g_cfg.collect_output) tx_ring_push(s->data, s->len, mask, s->dev, s->time);
    }
    for (size_t at = 0; at < g_tx.emit_used;) {
        uint32_t *h = (uint32_t *)(g_tx.emit + at);
        for (int d = 0; d < g_cfg.ndevs; d++)
            if (h[1] & (1u << d)) {
                st->out_per_dev[d]++;
                st->packets_out++;
            }
        if (g_live) live_tx((uint8_t *)(h + 2), h[0], h[1], UINT32_MAX);
        else if (g_cfg.collect_output) tx_ring_push((uint8_t *)(h + 2), h[0], h[1], UINT32_MAX, g_clock);
        at += 8 + ((h[0] + 7) & ~7u);
    }
    st->sets_created += pend.created;
    st->sets_expired += pend.expired;
    st->table_full += pend.table_full;
    st->sets_live = pst_count();
    if (g_live) live_tx_flush();
}

static int tx_mode(void) { return g_local ? TX_DIRECT : TX_STM; }

static void run_batch(Item *items, int n) {
    uint64_t start_clock = g_clock;
    for (int aborts = 0;;) {
        int irrevocable = !g_local && n == 1 && aborts >= IRREVOCABLE_AFTER;
        g_clock = start_clock;
        memset(&pend, 0, sizeof pend);
        tx_begin(irrevocable ? TX_DIRECT : tx_mode(), irrevocable);
        int r = 0, i;
        for (i = 0; i < n && r == 0; i++) r = process_item(&items[i]);
        if (r == -2) {
            if (n > 1) {   /* find the faulty packet: one transaction each */
                PyErr_Clear();
                g_tx.conflict_valid = 0;
                tx_raise_abort(ABORT_HANDLER_ERROR, NULL, 0, 0, OP_WRITE);
                PyErr_Clear();
                tx_abort();
                g_clock = start_clock;
                for (i = 0; i < n; i++) run_batch(&items[i], 1);
                return;
            }
            Pending keep = pend;
            report_handler_error();
            g_tx.conflict_valid = 0;
            tx_raise_abort(ABORT_HANDLER_ERROR, NULL, 0, 0, OP_WRITE);
            PyErr_Clear();
            tx_abort();
            SlotStats *st = &my_shared()->stats;
            st->handler_errors++;
            st->table_full += keep.table_full;
            if (items[0].pkt) {
                st->packets_in++;
                st->dropped++;
            } else {   /* a failing expiry handler: the set goes anyway */
                tx_begin(tx_mode(), 0);
                pst_remove(items[0].expire_id);
                tx_commit();
                st->sets_expired++;
                st->sets_live = pst_count();
            }
            return;
        }
        if (r == 0 && tx_commit() == 0) {
            publish(items, n);
            return;
        }
        if (r == -1) tx_abort();
        aborts++;
        if (n > 1 && aborts >= SPLIT_AFTER) {
            int h = n / 2;
            my_shared()->stats.splits++;
            g_clock = start_clock;
            run_batch(items, h);
            run_batch(items + h, n - h);
            return;
        }
        if (aborts > 4) sched_yield();
    }
}

/* ----------------------------------------------------------- expiry sweep */

static void sweep_expired(void) {
    if (!g_cfg.expiry_ns || !g_cfg.has_sets) return;
    Item items[NFOS_BATCH_MAX];
    for (;;) {
        int n = 0;
        int32_t id = pst_oldest();
        /* walk oldest-first; collect up to a batch of expired sets */
        while (id >= 0 && n < g_cfg.batch && set_expired(id)) {
            items[n].pkt = NULL;
            items[n].expire_id = id;
            n++;
            extern int32_t pst_next_lru(int32_t);
            id = pst_next_lru(id);
        }
        if (n == 0) return;
        run_batch(items, n);
    }
}

void loop_run_batch(Item *items, int n) { run_batch(items, n); }
void loop_sweep_expired(void) { sweep_expired(); }
int live_stopping(void) { return R && atomic_load_explicit(&R->stop, memory_order_relaxed); }

/* ------------------------------------------------------------ periodic */

typedef struct {
    PyObject *fn;
    uint64_t interval, next;
} Periodic;
static Periodic periodics[16];
static int nperiodic;

static uint64_t next_periodic_due(void) {
    uint64_t due = UINT64_MAX;
    for (int i = 0; i < nperiodic; i++)
        if (periodics[i].next < due) due = periodics[i].next;
    return due;
}

/* Run `fn(*args)` in one transaction, retrying on conflicts (irrevocably
 * after IRREVOCABLE_AFTER aborts).  Returns the result, or NULL with the
 * handler's exception. */
static PyObject *run_in_tx(PyObject *fn, PyObject *args) {
    memset(&pend, 0, sizeof pend);
    for (int aborts = 0;; aborts++) {
        int irrevocable = !g_local && aborts >= IRREVOCABLE_AFTER;
        tx_begin(irrevocable ? TX_DIRECT : tx_mode(), irrevocable);
        PyObject *r = PyObject_Call(fn, args, NULL);
        if (!r && !g_tx.doomed && !PyErr_ExceptionMatches(TransactionAborted)) {
            PyObject *exc = nfos_fetch_exc();
            g_tx.conflict_valid = 0;
            tx_raise_abort(ABORT_HANDLER_ERROR, NULL, 0, 0, OP_WRITE);
            PyErr_Clear();
            tx_abort();
            nfos_restore_exc(exc);
            return NULL;
        }
        if (r && tx_commit() == 0) {
            publish(NULL, 0);
            return r;
        }
        Py_XDECREF(r);
        PyErr_Clear();
        if (g_tx.active) tx_abort();
    }
}

static int run_due_periodics(uint64_t upto) {
    for (;;) {
        int best = -1;
        for (int i = 0; i < nperiodic; i++)
            if (periodics[i].next <= upto && (best < 0 || periodics[i].next < periodics[best].next)) best = i;
        if (best < 0) return 0;
        Periodic *p = &periodics[best];
        if (p->next > g_clock) g_clock = p->next;
        p->next += p->interval;
        PyObject *empty = PyTuple_New(0);
        PyObject *r = run_in_tx(p->fn, empty);
        Py_DECREF(empty);
        if (!r) {
            my_shared()->stats.handler_errors++;
            report_handler_error();
        }
        Py_XDECREF(r);
    }
}

/* ------------------------------------------------------------ main loop */

static PktSlot slots[NFOS_BATCH_MAX];

/* Process up to `budget` descriptors from this slot's RX ring.  Returns the
 * number processed, or -1 when the ring is closed and fully processed. */
static PyObject *py_worker_run(PyObject *self, PyObject *args) {
    long long budget;
    int spin = 1000;
    if (!PyArg_ParseTuple(args, "L|i", &budget, &spin)) return NULL;
    if (g_live) return live_run(budget);
    RxRing *rx = &R->rx[g_slot];
    long long done = 0;
    uint64_t t0 = mono_ns();
    if (!my_shared()->stats.begin_ns) my_shared()->stats.begin_ns = t0;
    Item items[NFOS_BATCH_MAX];
    while (done < budget) {
        if (atomic_load_explicit(&R->stop, memory_order_relaxed)) {
            atomic_store(&rx->finished, 1);
            return PyLong_FromLong(-1);
        }
        uint64_t tail = atomic_load_explicit(&rx->tail, memory_order_relaxed);
        uint64_t head = atomic_load_explicit(&rx->head, memory_order_acquire);
        if (head == tail) {
            if (atomic_load(&rx->closed) && atomic_load(&rx->head) == tail) {
                if (!atomic_load(&rx->finished)) my_shared()->stats.finish_ns = mono_ns();
                atomic_store(&rx->finished, 1);
                my_shared()->stats.busy_ns += mono_ns() - t0;
                if (done == 0) return PyLong_FromLong(-1);
                return PyLong_FromLongLong(done);
            }
            if (spin-- <= 0) break;
            if (spin % 64 == 0) sched_yield();
            continue;
        }
        int n = 0;
        uint64_t avail = head - tail, take = avail < (uint64_t)g_cfg.batch ? avail : (uint64_t)g_cfg.batch;
        uint64_t due = g_local ? next_periodic_due() : UINT64_MAX;
        RxDesc *tick = NULL;
        uint64_t consumed = 0;
        uint64_t periodic_upto = 0;
        for (uint64_t k = 0; k < take; k++) {
            RxDesc *d = &rx->descs[(tail + k) & rx->mask];
            if (d->time >= due) {   /* sequential mode: periodic handlers come first */
                if (n == 0) periodic_upto = d->time;
                break;
            }
            if (d->kind == DESC_TICK) {
                if (n == 0) {
                    tick = d;
                    consumed = 1;
                }
                break;
            }
            PktSlot *s = &slots[n];
            s->data = (uint8_t *)(uintptr_t)d->ptr;
            s->len = d->len;
            s->dev = d->dev;
            s->time = d->time;
            s->enq_ns = d->enq_ns;
            s->undo_serial = 0;
            pkt_parse(s);
            set_key_extract(s);
            items[n].pkt = s;
            items[n].expire_id = -1;
            n++;
            consumed++;
        }
        if (periodic_upto) {
            run_due_periodics(periodic_upto);
            if (PyErr_Occurred()) return NULL;
            continue;
        }
        if (tick) {
            if (tick->time > g_clock) g_clock = tick->time;
            sweep_expired();
        } else {
            uint64_t first = slots[0].time;
            if (first > g_clock) {
                g_clock = first;
                sweep_expired();
                g_clock = first;
            }
            run_batch(items, n);
        }
        if (PyErr_Occurred()) return NULL;
        my_shared()->stats.clock_ns = g_clock;
        atomic_store_explicit(&rx->tail, tail + consumed, memory_order_release);
        my_shared()->stats.rx_done = tail + consumed;
        done += (long long)consumed;
    }
    my_shared()->stats.busy_ns += mono_ns() - t0;
    return PyLong_FromLongLong(done);
}

void loop_reset(void) {
    R = NULL;
    g_local = 0;
    g_cfg.configured = 0;
    g_cfg.has_sets = 0;
    Py_CLEAR(g_cfg.h_new);
    Py_CLEAR(g_cfg.h_packet);
    Py_CLEAR(g_cfg.h_expired);
    Py_CLEAR(g_cfg.h_orphan);
    Py_CLEAR(g_cfg.h_error);
    Py_CLEAR(g_cfg.state_type);
    Py_CLEAR(g_cfg.nf_file);
    g_cfg.profile = 0;
    for (int i = 0; i < nperiodic; i++) Py_CLEAR(periodics[i].fn);
    nperiodic = 0;
    pst_select(-1);
}

/* ----------------------------------------------------- control functions */

static uint64_t next_pow2(uint64_t x) {
    uint64_t p = 1;
    while (p < x) p <<= 1;
    return p;
}

/* rings_setup(rx_caps: list[int], tx_bytes): one RX ring per slot. */
static PyObject *py_rings_setup(PyObject *self, PyObject *args) {
    PyObject *caps;
    unsigned long long txbytes;
    if (!PyArg_ParseTuple(args, "O!K", &PyList_Type, &caps, &txbytes)) return NULL;
    uint32_t nslots = g_arena->nslots;
    if (PyList_GET_SIZE(caps) != nslots) {
        PyErr_SetString(PyExc_ValueError, "one RX capacity per slot");
        return NULL;
    }
    R = arena_alloc(sizeof(Rings), NFOS_CACHELINE);
    if (!R) return NULL;
    R->nslots = nslots;
    R->rx = arena_alloc(sizeof(RxRing) * nslots, NFOS_CACHELINE);
    R->tx = arena_alloc(sizeof(TxRing) * nslots, NFOS_CACHELINE);
    if (!R->rx || !R->tx) return NULL;
    txbytes = (txbytes + 31) & ~31ull;
    for (uint32_t s = 0; s < nslots; s++) {
        uint64_t cap = next_pow2(PyLong_AsUnsignedLongLong(PyList_GET_ITEM(caps, s)) + 1);
        R->rx[s].mask = cap - 1;
        R->rx[s].descs = arena_alloc(sizeof(RxDesc) * cap, NFOS_CACHELINE);
        R->tx[s].cap = txbytes;
        R->tx[s].buf = arena_alloc(txbytes, NFOS_CACHELINE);
        if (!R->rx[s].descs || !R->tx[s].buf) return NULL;
    }
    Py_RETURN_NONE;
}

static int rx_push_timed(int slot, uint64_t ptr, uint32_t len, uint16_t dev, uint16_t kind, uint64_t time,
                         uint64_t enq, int wait) {
    RxRing *rx = &R->rx[slot];
    for (unsigned spins = 0;; spins++) {
        uint64_t head = atomic_load_explicit(&rx->head, memory_order_relaxed);
        uint64_t tail = atomic_load_explicit(&rx->tail, memory_order_acquire);
        if (head - tail <= rx->mask) {
            RxDesc *d = &rx->descs[head & rx->mask];
            d->ptr = ptr;
            d->len = len;
            d->dev = dev;
            d->kind = kind;
            d->time = time;
            d->enq_ns = enq;
            atomic_store_explicit(&rx->head, head + 1, memory_order_release);
            return 0;
        }
        if (!wait) return -1;
        if (spins > 64) usleep(20);
    }
}

static int rx_push(int slot, uint64_t ptr, uint32_t len, uint16_t dev, uint16_t kind, uint64_t time, int wait) {
    return rx_push_timed(slot, ptr, len, dev, kind, time, 0, wait);
}

static uint8_t *pool_copy(const char *frame, Py_ssize_t len) {
    uint8_t *p = arena_alloc(len ? (size_t)len : 1, 8);
    if (p) {
        memcpy(p, frame, len);
        if (R) {
            if (!R->pool_lo || (char *)p < R->pool_lo) R->pool_lo = (char *)p;
            if ((char *)p + len > R->pool_hi) R->pool_hi = (char *)p + len;
        }
    }
    return p;
}

static int steer_slot(uint8_t *data, uint32_t len, uint16_t dev) {
    if (g_local || g_cfg.nworkers <= 1) return 0;
    PktSlot s;
    s.data = data;
    s.len = len;
    s.dev = dev;
    pkt_parse(&s);
    set_key_extract(&s);
    return (int)(g_cfg.reta[s.rss & 127] % (uint32_t)g_cfg.nworkers);
}

/* steer_frame(frame, dev) -> the worker software RSS picks (tests, checkers). */
static PyObject *py_steer_frame(PyObject *self, PyObject *args) {
    Py_buffer b;
    int dev;
    if (!PyArg_ParseTuple(args, "y*i", &b, &dev)) return NULL;
    if (dev < 0 || dev >= g_cfg.ndevs) {
        PyBuffer_Release(&b);
        return PyErr_Format(PyExc_ValueError, "bad device index");
    }
    PktSlot s;
    memset(&s, 0, sizeof s);
    s.data = b.buf;
    s.len = (uint32_t)b.len;
    s.dev = (uint16_t)dev;
    pkt_parse(&s);
    set_key_extract(&s);
    int w = g_cfg.nworkers > 0 ? (int)(g_cfg.reta[s.rss & 127] % (uint32_t)g_cfg.nworkers) : 0;
    PyObject *r = Py_BuildValue("(iiI)", w, s.has_set, s.rss);
    PyBuffer_Release(&b);
    return r;
}

/* load_trace(frames, times, devs, tick_ns) -> per-worker packet counts.
 * Copies the frames into the arena, steers each to its worker's RX ring
 * (allocated here, sized to fit), inserts clock ticks every tick_ns of
 * trace time, and closes the rings: saturation replay. */
static PyObject *py_load_trace(PyObject *self, PyObject *args) {
    PyObject *frames, *times, *devs;
    unsigned long long tick_ns, txbytes;
    if (!PyArg_ParseTuple(args, "O!O!O!KK", &PyList_Type, &frames, &PyList_Type, &times, &PyList_Type, &devs,
                          &tick_ns, &txbytes))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(frames);
    if (PyList_GET_SIZE(times) != n || PyList_GET_SIZE(devs) != n) {
        PyErr_SetString(PyExc_ValueError, "frames, times and devs differ in length");
        return NULL;
    }
    uint32_t nslots = g_arena->nslots, nw = g_local ? 1 : (uint32_t)g_cfg.nworkers;
    uint8_t **ptrs = PyMem_RawMalloc(sizeof(uint8_t *) * (n ? n : 1));
    uint16_t *target = PyMem_RawMalloc(sizeof(uint16_t) * (n ? n : 1));
    uint64_t counts[NFOS_MAX_SLOTS] = {0};
    uint64_t first = 0, last = 0;
    if (!ptrs || !target) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyList_GET_ITEM(frames, i);
        char *buf;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(f, &buf, &len) < 0) goto fail;
        long dev = PyLong_AsLong(PyList_GET_ITEM(devs, i));
        uint64_t t = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(times, i));
        if (PyErr_Occurred()) goto fail;
        if (dev < 0 || dev >= g_cfg.ndevs) {
            PyErr_Format(PyExc_ValueError, "packet %zd arrives on device %ld, which the NF does not have", i, dev);
            goto fail;
        }
        ptrs[i] = pool_copy(buf, len);
        if (!ptrs[i]) goto fail;
        target[i] = (uint16_t)steer_slot(ptrs[i], (uint32_t)len, (uint16_t)dev);
        counts[target[i]]++;
        if (i == 0) first = t;
        last = t;
    }
    uint64_t nticks = tick_ns && n ? (last - first) / tick_ns + 2 : 0;
    PyObject *caps = PyList_New(nslots);
    for (uint32_t s = 0; s < nslots; s++)
        PyList_SET_ITEM(caps, s, PyLong_FromUnsignedLongLong(s < nw ? counts[s] + nticks + 1 : 1));
    PyObject *targs = Py_BuildValue("(NK)", caps, txbytes);
    PyObject *r = py_rings_setup(NULL, targs);
    Py_DECREF(targs);
    if (!r) goto fail;
    Py_DECREF(r);
    uint64_t next_tick = tick_ns ? first + tick_ns : UINT64_MAX;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t t = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(times, i));
        while (t >= next_tick) {
            for (uint32_t s = 0; s < nw; s++) rx_push((int)s, 0, 0, 0, DESC_TICK, next_tick, 0);
            next_tick += tick_ns;
        }
        PyObject *f = PyList_GET_ITEM(frames, i);
        rx_push(target[i], (uint64_t)(uintptr_t)ptrs[i], (uint32_t)PyBytes_GET_SIZE(f),
                (uint16_t)PyLong_AsLong(PyList_GET_ITEM(devs, i)), DESC_PACKET, t, 0);
    }
    for (uint32_t s = 0; s < nslots; s++) atomic_store(&R->rx[s].closed, 1);
    PyMem_RawFree(ptrs);
    PyMem_RawFree(target);
    PyObject *out = PyList_New(nw);
    for (uint32_t s = 0; s < nw; s++) PyList_SET_ITEM(out, s, PyLong_FromUnsignedLongLong(counts[s]));
    return out;
fail:
    PyMem_RawFree(ptrs);
    PyMem_RawFree(target);
    return NULL;
}

/* ------------------------------------------------------------- paced mode
 * The control process is the traffic generator: load_pool() copies and
 * steers a trace once; feed_paced() then queues it (cycling) into the
 * workers' RX rings at a fixed rate on the monotonic clock.  A full ring is
 * a loss, as a full NIC queue is.  Each descriptor carries its queue time;
 * workers histogram the queue-to-commit latency. */
typedef struct {
    uint8_t **ptrs;
    uint32_t *lens;
    uint16_t *devs, *targets;
    Py_ssize_t n;
} Pool;
static Pool pool;

static PyObject *py_load_pool(PyObject *self, PyObject *args) {
    PyObject *frames, *devs;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &frames, &PyList_Type, &devs)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(frames);
    if (n == 0 || PyList_GET_SIZE(devs) != n) return PyErr_Format(PyExc_ValueError, "empty or mismatched trace");
    PyMem_RawFree(pool.ptrs);
    PyMem_RawFree(pool.lens);
    PyMem_RawFree(pool.devs);
    PyMem_RawFree(pool.targets);
    pool.ptrs = PyMem_RawMalloc(sizeof(uint8_t *) * n);
    pool.lens = PyMem_RawMalloc(sizeof(uint32_t) * n);
    pool.devs = PyMem_RawMalloc(sizeof(uint16_t) * n);
    pool.targets = PyMem_RawMalloc(sizeof(uint16_t) * n);
    if (!pool.ptrs || !pool.lens || !pool.devs || !pool.targets) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        char *buf;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(PyList_GET_ITEM(frames, i), &buf, &len) < 0) return NULL;
        long dev = PyLong_AsLong(PyList_GET_ITEM(devs, i));
        if (dev < 0 || dev >= g_cfg.ndevs) return PyErr_Format(PyExc_ValueError, "bad device %ld", dev);
        pool.ptrs[i] = pool_copy(buf, len);
        if (!pool.ptrs[i]) return NULL;
        pool.lens[i] = (uint32_t)len;
        pool.devs[i] = (uint16_t)dev;
        pool.targets[i] = (uint16_t)steer_slot(pool.ptrs[i], (uint32_t)len, (uint16_t)dev);
    }
    pool.n = n;
    Py_RETURN_NONE;
}

/* feed_paced(rate_pps, duration_s) -> (queued, lost) */
static PyObject *py_feed_paced(PyObject *self, PyObject *args) {
    double rate, duration;
    if (!PyArg_ParseTuple(args, "dd", &rate, &duration)) return NULL;
    if (!pool.n || rate <= 0) return PyErr_Format(PyExc_ValueError, "load_pool() first, and a rate > 0");
    uint64_t queued = 0, lost = 0;
    Py_BEGIN_ALLOW_THREADS
    uint64_t t0 = mono_ns(), end = t0 + (uint64_t)(duration * 1e9);
    double gap = 1e9 / rate;
    Py_ssize_t i = 0;
    for (uint64_t k = 0;; k++) {
        uint64_t due = t0 + (uint64_t)(k * gap), now;
        if (due >= end) break;
        while ((now = mono_ns()) < due) {}
        if (rx_push_timed(pool.targets[i], (uint64_t)(uintptr_t)pool.ptrs[i], pool.lens[i], pool.devs[i],
                          DESC_PACKET, now, now, 0) == 0)
            queued++;
        else
            lost++;
        if (++i == pool.n) i = 0;
    }
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(KK)", (unsigned long long)queued, (unsigned long long)lost);
}

static PyObject *py_latency_hist(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if (PyErr_Occurred()) return NULL;
    PyObject *out = PyList_New(LAT_BUCKETS);
    for (int b = 0; b < LAT_BUCKETS; b++)
        PyList_SET_ITEM(out, b, PyLong_FromUnsignedLongLong(g_arena->slots[s].lat_hist[b]));
    return out;
}

/* inject(frame, dev, time) -> (slot, seq): one frame into its worker's ring
 * (streaming: the test harness).  seq is the ring position to wait for. */
static PyObject *py_inject(PyObject *self, PyObject *args) {
    Py_buffer b;
    int dev;
    unsigned long long t;
    if (!PyArg_ParseTuple(args, "y*iK", &b, &dev, &t)) return NULL;
    if (dev < 0 || dev >= g_cfg.ndevs) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "bad device index");
        return NULL;
    }
    uint8_t *p = pool_copy(b.buf, b.len);
    uint32_t len = (uint32_t)b.len;
    PyBuffer_Release(&b);
    if (!p) return NULL;
    int slot = steer_slot(p, len, (uint16_t)dev);
    rx_push(slot, (uint64_t)(uintptr_t)p, len, (uint16_t)dev, DESC_PACKET, t, 1);
    return Py_BuildValue("(iK)", slot, (unsigned long long)atomic_load(&R->rx[slot].head));
}

/* tick(slot, time) -> seq: advance a worker's clock (runs its expiries). */
static PyObject *py_tick(PyObject *self, PyObject *args) {
    int slot;
    unsigned long long t;
    if (!PyArg_ParseTuple(args, "iK", &slot, &t)) return NULL;
    rx_push(slot, 0, 0, 0, DESC_TICK, t, 1);
    return PyLong_FromUnsignedLongLong(atomic_load(&R->rx[slot].head));
}

static PyObject *py_rx_done(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    return PyLong_FromUnsignedLongLong(atomic_load(&R->rx[s].tail));
}

static PyObject *py_rx_finished(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    return PyBool_FromLong(atomic_load(&R->rx[s].finished));
}

static PyObject *py_close_rx(PyObject *self, PyObject *noargs) {
    for (uint32_t s = 0; s < R->nslots; s++) atomic_store(&R->rx[s].closed, 1);
    Py_RETURN_NONE;
}

/* drain_tx(slot) -> list of (devmask, frame bytes, time, indev) */
static PyObject *py_drain_tx(PyObject *self, PyObject *arg) {
    long slot = PyLong_AsLong(arg);
    if (PyErr_Occurred()) return NULL;
    TxRing *t = &R->tx[slot];
    PyObject *out = PyList_New(0);
    uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&t->head, memory_order_acquire);
    while (tail < head) {
        TxRec *r = (TxRec *)(t->buf + tail % t->cap);
        if (r->framelen != UINT32_MAX) {
            PyObject *item = Py_BuildValue("(Iy#KI)", r->devmask, (char *)(r + 1), (Py_ssize_t)r->framelen,
                                           (unsigned long long)r->time, r->indev);
            PyList_Append(out, item);
            Py_DECREF(item);
        }
        tail += r->reclen;
    }
    atomic_store_explicit(&t->tail, tail, memory_order_release);
    return out;
}

/* drain_tx_pcap(slot, ndevs) -> list of bytes per device: ready-made pcap
 * records (nanosecond format), so the control process writes each device's
 * output with one write() instead of one Python call per frame. */
static PyObject *py_drain_tx_pcap(PyObject *self, PyObject *args) {
    int slot, ndevs;
    if (!PyArg_ParseTuple(args, "ii", &slot, &ndevs)) return NULL;
    if (ndevs < 1 || ndevs > NFOS_MAX_DEVS) return PyErr_Format(PyExc_ValueError, "bad device count");
    TxRing *t = &R->tx[slot];
    uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&t->head, memory_order_acquire);
    size_t need[NFOS_MAX_DEVS] = {0};
    for (uint64_t at = tail; at < head;) {
        TxRec *r = (TxRec *)(t->buf + at % t->cap);
        if (r->framelen != UINT32_MAX)
            for (int d = 0; d < ndevs; d++)
                if (r->devmask >> d & 1) need[d] += 16 + r->framelen;
        at += r->reclen;
    }
    PyObject *out = PyList_New(ndevs);
    char *w[NFOS_MAX_DEVS];
    for (int d = 0; d < ndevs; d++) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)need[d]);
        if (!b) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, d, b);
        w[d] = PyBytes_AS_STRING(b);
    }
    for (uint64_t at = tail; at < head;) {
        TxRec *r = (TxRec *)(t->buf + at % t->cap);
        if (r->framelen != UINT32_MAX) {
            uint32_t hdr[4] = {(uint32_t)(r->time / 1000000000ull), (uint32_t)(r->time % 1000000000ull),
                               r->framelen, r->framelen};
            for (int d = 0; d < ndevs; d++)
                if (r->devmask >> d & 1) {
                    memcpy(w[d], hdr, 16);
                    memcpy(w[d] + 16, r + 1, r->framelen);
                    w[d] += 16 + r->framelen;
                }
        }
        at += r->reclen;
    }
    atomic_store_explicit(&t->tail, head, memory_order_release);
    return out;
}

/* prefault(): map this process's view of the trace and of its RX ring before
 * the clock starts: a forked process does not inherit the page tables of a
 * shared mapping, and minor faults would otherwise be timed as processing. */
static PyObject *py_prefault(PyObject *self, PyObject *noargs) {
    long page = sysconf(_SC_PAGESIZE);
    char *spans[2][2] = {{R->pool_lo, R->pool_hi}, {(char *)R->rx[g_slot].descs,
                         (char *)(R->rx[g_slot].descs + R->rx[g_slot].mask + 1)}};
    for (int i = 0; i < 2; i++) {
        char *lo = spans[i][0], *hi = spans[i][1];
        if (!lo || hi <= lo) continue;
        lo = (char *)((uintptr_t)lo & ~(uintptr_t)(page - 1));
        if (madvise(lo, (size_t)(hi - lo), MADV_POPULATE_READ) != 0) {
            for (char *p = lo; p < hi; p += page) (void)*(volatile char *)p;   /* older kernels */
        }
    }
    Py_RETURN_NONE;
}

static PyObject *py_start_ns(PyObject *self, PyObject *noargs) {
    return PyLong_FromUnsignedLongLong(R ? R->start_ns : 0);
}

static PyObject *py_wait_start(PyObject *self, PyObject *noargs) {
    /* Yield rather than sleep: the start signal is timed, a sleeping worker
     * would add its wake-up latency to the measured processing time. */
    Py_BEGIN_ALLOW_THREADS
    atomic_fetch_add(&R->ready, 1);
    uint64_t t0 = mono_ns();
    while (!atomic_load(&R->start)) {
        if (mono_ns() - t0 < 2000000000ull) sched_yield();
        else usleep(1000);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* signal_start(workers=0): start the workers, once `workers` of them are ready
 * (set up, page tables filled) or after 10 s, so none starts late. */
static PyObject *py_signal_start(PyObject *self, PyObject *args) {
    unsigned int n = 0;
    if (!PyArg_ParseTuple(args, "|I", &n)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    uint64_t t0 = mono_ns();
    while (atomic_load(&R->ready) < n && mono_ns() - t0 < 10000000000ull) usleep(100);
    Py_END_ALLOW_THREADS
    R->start_ns = mono_ns();
    atomic_store(&R->start, 1);
    Py_RETURN_NONE;
}

static PyObject *py_stop_workers(PyObject *self, PyObject *noargs) {
    if (R) {
        atomic_store(&R->stop, 1);
        atomic_store(&R->start, 1);   /* a worker still waiting to start leaves too */
    }
    Py_RETURN_NONE;
}

/* attach(slot): this process becomes `slot` (after fork). */
static PyObject *py_attach(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (s < 0 || (uint32_t)s >= g_arena->nslots) {
        PyErr_SetString(PyExc_ValueError, "bad slot");
        return NULL;
    }
    g_slot = (int)s;
    pst_select(g_slot);
    Py_RETURN_NONE;
}

/* configure(dict): the NF's runtime configuration, before the fork. */
static PyObject *py_configure(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"nworkers", "defs", "proto_mask", "state_type", "state_size", "capacity",
                             "expiry_ns", "batch", "handlers", "collect_output", "local", "rss_key",
                             "profile", "nf_file", NULL};
    int nworkers, batch, collect, local, profile = 0;
    PyObject *defs, *state_type, *handlers, *rss_key, *nf_file = Py_None;
    unsigned int proto_mask, state_size, capacity;
    unsigned long long expiry;
    int ok = PyArg_ParseTupleAndKeywords(args, kw, "iO!IOIIKiO!ppO|pO", kwlist, &nworkers, &PyList_Type, &defs,
                                         &proto_mask, &state_type, &state_size, &capacity, &expiry, &batch,
                                         &PyDict_Type, &handlers, &collect, &local, &rss_key, &profile,
                                         &nf_file);
    if (!ok) return NULL;
    if (!g_arena) {
        PyErr_SetString(PyExc_RuntimeError, "create the arena first");
        return NULL;
    }
    if (batch < 1 || batch > NFOS_BATCH_MAX) {
        PyErr_Format(PyExc_ValueError, "batch size must be 1..%d", NFOS_BATCH_MAX);
        return NULL;
    }
    if (PyList_GET_SIZE(defs) != g_cfg.ndevs) {
        PyErr_SetString(PyExc_ValueError, "one packet-set definition (or None) per device");
        return NULL;
    }
    g_cfg.nworkers = nworkers;
    g_local = local;
    g_cfg.has_sets = 0;
    for (int d = 0; d < g_cfg.ndevs; d++) {
        PyObject *fl = PyList_GET_ITEM(defs, d);
        DevSetDef *def = &g_cfg.defs[d];
        memset(def, 0, sizeof *def);
        if (fl == Py_None) continue;
        if (!PyList_Check(fl) || PyList_GET_SIZE(fl) > 12) {
            PyErr_SetString(PyExc_ValueError, "a definition is a list of at most 12 field ids");
            return NULL;
        }
        def->defined = 1;
        def->nfields = (int)PyList_GET_SIZE(fl);
        for (int i = 0; i < def->nfields; i++) def->fields[i] = (uint8_t)PyLong_AsLong(PyList_GET_ITEM(fl, i));
        g_cfg.has_sets = 1;
    }
    g_cfg.proto_mask = proto_mask;
    Py_XSETREF(g_cfg.state_type, state_type == Py_None ? NULL : (PyTypeObject *)Py_NewRef(state_type));
    g_cfg.state_size = state_size;
    g_cfg.capacity = capacity;
    g_cfg.expiry_ns = expiry;
    g_cfg.batch = batch;
    g_cfg.collect_output = collect;
    g_cfg.profile = profile;
    Py_XSETREF(g_cfg.nf_file, nf_file == Py_None ? NULL : Py_NewRef(nf_file));
#define HANDLER(field, name)                                                    \
    do {                                                                        \
        PyObject *h = PyDict_GetItemString(handlers, name);                     \
        Py_XSETREF(g_cfg.field, h && h != Py_None ? Py_NewRef(h) : NULL);       \
    } while (0)
    HANDLER(h_new, "new_packet_set");
    HANDLER(h_packet, "packet");
    HANDLER(h_expired, "expired");
    HANDLER(h_orphan, "orphan");
    HANDLER(h_error, "error");
    for (int i = 0; i < nperiodic; i++) Py_CLEAR(periodics[i].fn);
    nperiodic = 0;
    PyObject *per = PyDict_GetItemString(handlers, "periodic");
    if (per && per != Py_None) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(per) && i < 16; i++) {
            PyObject *fn;
            unsigned long long interval, first;
            if (!PyArg_ParseTuple(PyList_GET_ITEM(per, i), "OKK", &fn, &interval, &first)) return NULL;
            periodics[nperiodic].fn = Py_NewRef(fn);
            periodics[nperiodic].interval = interval ? interval : 1;
            periodics[nperiodic].next = first;
            nperiodic++;
        }
    }
    if (rss_key == Py_None) {
        toeplitz_setup(NULL, 0);
    } else {
        Py_buffer k;
        if (PyObject_GetBuffer(rss_key, &k, PyBUF_SIMPLE) < 0) return NULL;
        if (k.len < 4) {
            PyBuffer_Release(&k);
            PyErr_SetString(PyExc_ValueError, "an RSS key has at least 4 bytes");
            return NULL;
        }
        toeplitz_setup(k.buf, (int)k.len);
        PyBuffer_Release(&k);
    }
    for (int i = 0; i < 128; i++) g_cfg.reta[i] = nworkers > 0 ? (uint32_t)(i % nworkers) : 0;
    if (g_cfg.has_sets && pst_alloc_all(g_arena->nslots, capacity, state_size) < 0) return NULL;
    g_cfg.configured = 1;
    pst_select(g_slot);
    Py_RETURN_NONE;
}

/* register(pkt) -> state: create the packet set of the packet being handled
 * by the new-packet-set handler.  Raises TableFull when the worker's table
 * is full. */
static PyObject *py_register(PyObject *self, PyObject *pkt) {
    if (!PyObject_TypeCheck(pkt, Packet_Type) || !((Packet *)pkt)->slot) {
        PyErr_SetString(PyExc_TypeError, "register() takes the packet being handled");
        return NULL;
    }
    PktSlot *s = ((Packet *)pkt)->slot;
    if (!s->has_set) {
        PyErr_SetString(PyExc_ValueError, "this packet matches no packet-set definition (it is an orphan)");
        return NULL;
    }
    if (s != g_cur_new) {
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
            PyErr_Format(TableFull, "the packet-set table of worker %d is full (capacity %u per worker)", g_slot,
                         g_cfg.capacity);
            return NULL;
        }
        pend.created++;
    }
    return state_view(id);
}

/* emit(frame, dev): send a new frame at commit; dev is a name, an index or
 * None (all devices). */
static PyObject *py_emit(PyObject *self, PyObject *args) {
    Py_buffer b;
    PyObject *dev;
    if (!PyArg_ParseTuple(args, "y*O", &b, &dev)) return NULL;
    uint32_t mask;
    if (dev == Py_None) mask = all_devs_mask();
    else {
        int d = dev_lookup(dev);
        if (d < 0) {
            PyBuffer_Release(&b);
            return NULL;
        }
        mask = 1u << d;
    }
    if (!g_tx.active) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_RuntimeError, "emit() is called from a handler");
        return NULL;
    }
    int r = tx_emit(b.buf, (uint32_t)b.len, mask);
    PyBuffer_Release(&b);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_run_in_tx(PyObject *self, PyObject *args) {
    PyObject *fn = PyTuple_GET_ITEM(args, 0);
    PyObject *rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    PyObject *r = run_in_tx(fn, rest);
    Py_DECREF(rest);
    return r;
}

static PyObject *py_run_periodics(PyObject *self, PyObject *arg) {
    unsigned long long upto = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    run_due_periodics(upto);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_sweep(PyObject *self, PyObject *noargs) {
    sweep_expired();
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

PyMethodDef loop_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))py_configure, METH_VARARGS | METH_KEYWORDS, NULL},
    {"rings_setup", py_rings_setup, METH_VARARGS, NULL},
    {"load_trace", py_load_trace, METH_VARARGS, NULL},
    {"inject", py_inject, METH_VARARGS, NULL},
    {"load_pool", py_load_pool, METH_VARARGS, "load_pool(frames, devs): the paced generator's trace"},
    {"feed_paced", py_feed_paced, METH_VARARGS, "feed_paced(rate_pps, duration_s) -> (queued, lost)"},
    {"latency_hist", py_latency_hist, METH_O, "latency_hist(slot) -> counts per log-linear bucket"},
    {"steer_frame", py_steer_frame, METH_VARARGS, "steer_frame(frame, dev) -> (worker, in_a_set, rss hash)"},
    {"tick", py_tick, METH_VARARGS, NULL},
    {"rx_done", py_rx_done, METH_O, NULL},
    {"rx_finished", py_rx_finished, METH_O, NULL},
    {"close_rx", py_close_rx, METH_NOARGS, NULL},
    {"drain_tx", py_drain_tx, METH_O, NULL},
    {"drain_tx_pcap", py_drain_tx_pcap, METH_VARARGS, NULL},
    {"worker_run", py_worker_run, METH_VARARGS, NULL},
    {"wait_start", py_wait_start, METH_NOARGS, NULL},
    {"signal_start", py_signal_start, METH_VARARGS, "signal_start(workers=0): start them once they are ready"},
    {"prefault", py_prefault, METH_NOARGS, NULL},
    {"start_ns", py_start_ns, METH_NOARGS, NULL},
    {"stop_workers", py_stop_workers, METH_NOARGS, "ask every worker to stop after its current batch"},
    {"attach", py_attach, METH_O, NULL},
    {"register", py_register, METH_O, NULL},
    {"emit", py_emit, METH_VARARGS, NULL},
    {"run_in_tx", py_run_in_tx, METH_VARARGS, NULL},
    {"run_periodics", py_run_periodics, METH_O, NULL},
    {"sweep", py_sweep, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};
