/* Packet I/O through rings in the arena: replay, the test harness and the
 * paced generator.
 *
 * One RX ring of descriptors per slot (control -> worker, single producer /
 * single consumer) and one TX byte ring per slot (worker -> control) holding
 * output records when output is collected.  The control process copies the
 * frames into the arena and steers each (software RSS) to its worker's RX
 * ring; clock ticks (DESC_TICK) let an idle worker expire its sets.  A
 * descriptor is consumed (the tail moves) only once its batch committed, so
 * rx_done() tells the control process what is finished.
 *
 * A process never waits on itself: when the TX ring of its own slot is full
 * and this process is also its consumer (the sequential mode's slot 0; the
 * control process's slot, where periodic and exit handlers publish), the
 * record goes to a private, growable spill buffer instead, and stays there
 * (with every later record, to keep the order) until the drain, which returns
 * the ring's records, then the spilled ones.  A worker waiting for room (the
 * control process drains) or the control process waiting for room in an RX
 * ring leaves on a stop request.
 *
 * Paced mode: the control process is the traffic generator: ring_pool_load()
 * copies and steers a trace once; ring_feed_paced() then queues it (cycling)
 * into the workers' RX rings at a fixed rate on the monotonic clock.  A full
 * ring is a loss, as a full NIC queue is.  Each descriptor carries its queue
 * time; workers histogram the queue-to-commit latency (worker_loop.c).
 */
#include "pktio_ring.h"

#include "pktset.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

typedef struct {
    uint64_t ptr;
    uint32_t len;      /* captured bytes */
    uint32_t wire;     /* length on the wire (> len: cut by a capture's snap length) */
    uint64_t time;     /* paced mode (DESC_TIMED): also when the generator queued it */
    uint16_t dev;
    uint16_t kind;     /* DESC_PACKET or DESC_TICK, | DESC_TIMED */
    uint32_t index;    /* a replayed trace's frame: its place in the trace */
    uint64_t dend;     /* the slot's data-ring position after this descriptor's frame */
} RxDesc;   /* 40 bytes */

typedef struct {
    _Atomic uint64_t head;   /* written by the producer */
    char pad0[56];
    _Atomic uint64_t tail;   /* descriptors consumed and committed */
    char pad1[56];
    _Atomic uint32_t closed;
    _Atomic uint32_t finished;
    uint64_t mask;
    RxDesc *descs;
    /* Streaming (inject): frames are copied into this byte ring, reused once their
     * descriptors are consumed, so a long stream does not grow the arena. */
    _Atomic uint64_t dtail;  /* written by the consumer: data before it is free */
    uint64_t dhead, dcap;    /* the producer's */
    uint8_t *data;           /* NULL: frames live in the pool (a replayed trace) */
    /* laps > 1 (ring_set_laps): the loaded, closed ring of lap_n descriptors is
     * walked `laps` times, each lap lap_ns later than the one before */
    uint64_t lap_n, lap_ns;
    uint32_t laps, pad;
    /* the batch in flight (respawn): the tail after it, and the slot's packets_in when taken */
    _Atomic uint64_t taken;
    uint64_t in_at_take;
} RxRing;

typedef struct {
    _Atomic uint64_t head;
    char pad0[56];
    _Atomic uint64_t tail;
    char pad1[56];
    uint64_t cap;
    char *buf;
    /* a worker's batch output staged before its commit (ring_stage): 1 staged,
     * 2 committed (publishing); the head and packets_in once it is published */
    _Atomic uint32_t stage_state;
    uint32_t pad2;
    uint64_t stage_head, stage_in;
    uint64_t stage_seq;   /* the slot's STM commit count once the staged batch commits */
} TxRing;

typedef struct {
    uint32_t reclen, framelen, devmask, indev;
    uint64_t time;
    uint32_t wire, pad;
} TxRec;   /* 32 bytes; records are 32-byte aligned so a pad record always fits */

typedef struct {
    RxRing *rx;   /* per slot */
    TxRing *tx;
    uint32_t nslots;
    char *pool_lo, *pool_hi; /* the replayed trace's frames */
} Rings;

static Rings *R;             /* in the arena */

/* RSS++ migration (ring_migration_setup): the plan and each worker's outboxes, in the arena. */
typedef struct {
    _Atomic uint64_t exported;   /* the last global epoch whose outgoing sets this worker handed over */
    char pad0[56];
    _Atomic uint64_t imported;   /* the last global epoch whose incoming sets it took */
    char pad1[56];
    uint32_t nout[2];            /* records in outbox[g & 1] */
    char *outbox[2];             /* `cap` records each: epochs alternate */
    uint64_t moved_in, dropped;
} MigSlot;

typedef struct {
    uint32_t nworkers, nepochs, cap;
    uint8_t *nmoves;             /* [nepochs] */
    RsMove *moves;               /* [nepochs][STEER_RETA] */
    MigSlot *slots;              /* [nworkers] */
} MigPlan;

static MigPlan *M;
static int collect;          /* output goes to the TX rings */
/* When one frame is handled more than once (laps, the paced generator's
 * cycling pool), an NF that rewrites headers (the NAT) must find it as it
 * arrived: its first rewrite copies it to a buffer of the worker (copy on
 * write: PktSlot.copy_to), the arena's frame stays as it was. */
static int copy_frames;
static uint32_t max_frame;   /* the longest frame copied into the arena */
static uint8_t *frame_buf;   /* a worker's copies: NFOS_BATCH_MAX x frame_buf_max */
static uint32_t frame_buf_max;

/* This process's spill buffer: TxRecs back to back (no padding, no wrap) of
 * its own slot's TX ring, when it is also the ring's consumer. */
static struct {
    char *buf;
    uint64_t used, cap;
    int slot;
} spill = {.slot = -1};

static void spill_reset(void) {
    PyMem_RawFree(spill.buf);
    spill.buf = NULL;
    spill.used = spill.cap = 0;
    spill.slot = -1;
}

/* ------------------------------------------------------------ control side */

static uint64_t next_pow2(uint64_t x) {
    uint64_t p = 1;
    while (p < x) p <<= 1;
    return p;
}

int ring_setup(const uint64_t *rx_caps, uint32_t nslots, uint64_t txbytes, uint64_t data_bytes) {
    Rings *r = proc_alloc(sizeof(Rings), NFOS_CACHELINE);
    if (!r) return -1;
    r->nslots = nslots;
    r->rx = proc_alloc(sizeof(RxRing) * nslots, NFOS_CACHELINE);
    r->tx = proc_alloc(sizeof(TxRing) * nslots, NFOS_CACHELINE);
    if (!r->rx || !r->tx) return -1;
    txbytes = (txbytes + 31) & ~31ull;
    for (uint32_t s = 0; s < nslots; s++) {
        uint64_t cap = next_pow2(rx_caps[s] + 1);
        r->rx[s].mask = cap - 1;
        r->rx[s].descs = proc_alloc(sizeof(RxDesc) * cap, NFOS_CACHELINE);
        r->tx[s].cap = txbytes;
        r->tx[s].buf = proc_alloc(txbytes, NFOS_CACHELINE);
        if (!r->rx[s].descs || !r->tx[s].buf) return -1;
        if (data_bytes) {
            r->rx[s].dcap = data_bytes;
            r->rx[s].data = proc_alloc(data_bytes, NFOS_CACHELINE);
            if (!r->rx[s].data) return -1;
        }
    }
    R = r;
    spill_reset();
    return 0;
}

int ring_ready(void) { return R != NULL; }
void ring_reset(void) {
    R = NULL;
    spill_reset();
    M = NULL;
    copy_frames = 0;
    max_frame = 0;
    PyMem_RawFree(frame_buf);
    frame_buf = NULL;
    frame_buf_max = 0;
}
void ring_collect_output(int on) { collect = on; }

uint8_t *ring_pool_copy(const char *frame, size_t len) {
    uint8_t *p = proc_alloc(len ? len : 1, 8);
    if (p) {
        memcpy(p, frame, len);
        if (len > max_frame) max_frame = (uint32_t)len;
        if (R) {
            if (!R->pool_lo || (char *)p < R->pool_lo) R->pool_lo = (char *)p;
            if ((char *)p + len > R->pool_hi) R->pool_hi = (char *)p + len;
        }
    }
    return p;
}

int ring_steer(uint8_t *data, uint32_t len, uint32_t wire, uint16_t dev) {
    int bucket;
    return ring_steer_bucket(data, len, wire, dev, &bucket);
}

int ring_steer_bucket(uint8_t *data, uint32_t len, uint32_t wire, uint16_t dev, int *bucket) {
    *bucket = 0;
    if (proc.local || proc.nworkers <= 1) return 0;
    PktSlot s;
    s.data = data;
    s.len = len;
    s.wire = wire;
    s.dev = dev;
    pkt_parse(&s);
    set_key_extract(&s);
    *bucket = steer_bucket(&s);
    return steer_worker(&s);
}

int ring_push(int slot, const uint8_t *frame, uint32_t len, uint32_t wire, uint16_t dev, uint16_t kind,
              uint64_t time, uint32_t index, int wait) {
    RxRing *rx = &R->rx[slot];
    for (unsigned spins = 0;; spins++) {
        uint64_t head = atomic_load_explicit(&rx->head, memory_order_relaxed);
        uint64_t tail = atomic_load_explicit(&rx->tail, memory_order_acquire);
        if (head - tail <= rx->mask) {
            RxDesc *d = &rx->descs[head & rx->mask];
            d->ptr = (uint64_t)(uintptr_t)frame;
            d->len = len;
            d->wire = wire > len ? wire : len;
            d->dev = dev;
            d->kind = kind;
            d->time = time;
            d->dend = rx->dhead;
            d->index = index;
            atomic_store_explicit(&rx->head, head + 1, memory_order_release);
            return 0;
        }
        if (!wait) return -1;
        if (slot == proc.slot && proc.local) {   /* this process is the consumer: never wait on itself */
            PyErr_SetString(PyExc_RuntimeError, "the RX ring is full and its consumer is this process "
                                                "(sequential mode): process it before queueing more");
            return -2;
        }
        int ps = proc_poll_stop();   /* the worker may be gone or stuck: Ctrl-C still works */
        if (ps < 0) return -2;
        if (ps > 0) {
            PyErr_SetString(PyExc_RuntimeError, "stopped while waiting for room in an RX ring");
            return -2;
        }
        if (spins > 64) usleep(20);
    }
}

uint8_t *ring_data_copy(int slot, const void *frame, uint32_t len) {
    RxRing *rx = &R->rx[slot];
    if (!rx->data) return ring_pool_copy(frame, len);
    uint64_t need = (len + 7) & ~7ull;
    if (need > rx->dcap / 2) {
        PyErr_Format(PyExc_ValueError, "a %u-byte frame is larger than the RX data ring allows", len);
        return NULL;
    }
    uint64_t off = rx->dhead % rx->dcap, skip = off + need > rx->dcap ? rx->dcap - off : 0;
    for (unsigned spins = 0;; spins++) {   /* room: wait for the worker to consume (as ring_push) */
        uint64_t tail = atomic_load_explicit(&rx->dtail, memory_order_acquire);
        if (rx->dhead + skip + need - tail <= rx->dcap) break;
        if (slot == proc.slot && proc.local) {
            PyErr_SetString(PyExc_RuntimeError, "the RX data ring is full and its consumer is this process "
                                                "(sequential mode): process it before queueing more");
            return NULL;
        }
        int ps = proc_poll_stop();
        if (ps < 0) return NULL;
        if (ps > 0) {
            PyErr_SetString(PyExc_RuntimeError, "stopped while waiting for room in an RX ring");
            return NULL;
        }
        if (spins > 64) usleep(20);
    }
    rx->dhead += skip;
    uint8_t *p = rx->data + rx->dhead % rx->dcap;
    memcpy(p, frame, len);
    rx->dhead += need;
    return p;
}

void ring_set_laps(uint32_t laps, uint64_t lap_ns) {
    for (uint32_t s = 0; s < R->nslots; s++) {
        RxRing *rx = &R->rx[s];
        rx->lap_n = atomic_load(&rx->head);
        rx->laps = rx->lap_n && laps > 1 ? laps : 1;
        rx->lap_ns = lap_ns;
    }
    if (laps > 1) copy_frames = 1;
}

int ring_migration_setup(uint32_t nworkers, uint32_t nepochs, const RsMove *moves, const uint8_t *nmoves) {
    MigPlan *m = proc_alloc(sizeof(MigPlan), NFOS_CACHELINE);
    if (!m) return -1;
    m->nworkers = nworkers;
    m->nepochs = nepochs;
    m->cap = pst_table_capacity();
    m->nmoves = proc_alloc(nepochs ? nepochs : 1, 8);
    m->moves = proc_alloc(sizeof(RsMove) * STEER_RETA * (nepochs ? nepochs : 1), 8);
    m->slots = proc_alloc(sizeof(MigSlot) * nworkers, NFOS_CACHELINE);
    if (!m->nmoves || !m->moves || !m->slots) return -1;
    memcpy(m->nmoves, nmoves, nepochs);
    memcpy(m->moves, moves, sizeof(RsMove) * STEER_RETA * nepochs);
    size_t rec = pst_migrant_size();
    for (uint32_t w = 0; w < nworkers && m->cap; w++)   /* reserved, backed only as used */
        for (int k = 0; k < 2; k++)
            if (!(m->slots[w].outbox[k] = proc_alloc(rec * m->cap, NFOS_CACHELINE))) return -1;
    M = m;
    return 0;
}

void ring_migration_stats(int slot, uint64_t *moved_in, uint64_t *dropped) {
    *moved_in = *dropped = 0;
    if (M && slot >= 0 && (uint32_t)slot < M->nworkers) {
        *moved_in = M->slots[slot].moved_in;
        *dropped = M->slots[slot].dropped;
    }
}

/* Spin until *v >= want (or the run is stopped: 0). */
static int wait_at_least(_Atomic uint64_t *v, uint64_t want) {
    for (unsigned spins = 0; atomic_load_explicit(v, memory_order_acquire) < want; spins++) {
        if (proc_stopping()) return 0;
        if (spins > 64) sched_yield();
    }
    return 1;
}

/* Boundary e (global epoch g >= 1) of the plan: hand over, then take. */
static void migrate(uint32_t e, uint64_t g) {
    uint32_t me = (uint32_t)proc.slot;
    if (!M || me >= M->nworkers || e >= M->nepochs) return;
    MigSlot *my = &M->slots[me];
    const RsMove *mv = &M->moves[(size_t)e * STEER_RETA];
    int nm = M->nmoves[e], out = 0;
    uint32_t dest[STEER_RETA];
    for (int b = 0; b < STEER_RETA; b++) dest[b] = UINT32_MAX;
    for (int k = 0; k < nm; k++)
        if (mv[k].from == me) {
            dest[mv[k].bucket] = mv[k].to;
            out = 1;
        }
    if (out) {
        /* This parity's outbox (and its count) was read at g - 2: wait until
         * every worker is past that boundary.  Only a worker that loses
         * buckets at g writes it, and only their new workers read it at g. */
        if (g > 2)
            for (uint32_t w = 0; w < M->nworkers; w++)
                if (!wait_at_least(&M->slots[w].imported, g - 2)) return;
        my->nout[g & 1] = M->cap && pst_count() ? pst_export(dest, my->outbox[g & 1], M->cap) : 0;
    }
    atomic_store_explicit(&my->exported, g, memory_order_release);
    uint8_t seen[NFOS_MAX_SLOTS] = {0};
    for (int k = 0; k < nm; k++) {
        uint32_t from = mv[k].from;
        if (mv[k].to != me || seen[from]) continue;
        seen[from] = 1;
        MigSlot *src = &M->slots[from];
        if (!wait_at_least(&src->exported, g)) return;
        uint32_t dropped = 0;
        if (src->nout[g & 1] && M->cap && pst_table_capacity())
            my->moved_in += pst_import(src->outbox[g & 1], src->nout[g & 1], me, &dropped);
        my->dropped += dropped;
    }
    atomic_store_explicit(&my->imported, g, memory_order_release);
}

void ring_close(uint32_t slot) { atomic_store(&R->rx[slot].closed, 1); }
void ring_close_all(void) {
    for (uint32_t s = 0; s < R->nslots; s++) ring_close(s);
}
uint64_t ring_rx_head(int slot) { return atomic_load(&R->rx[slot].head); }
uint64_t ring_rx_tail(int slot) { return atomic_load(&R->rx[slot].tail); }
int ring_rx_finished(int slot) { return (int)atomic_load(&R->rx[slot].finished); }

uint64_t ring_rx_recover(int slot, SlotCounters *c, int completed) {
    if (!R || slot < 0 || (uint32_t)slot >= R->nslots) return 0;
    TxRing *t = &R->tx[slot];
    uint32_t st = atomic_load(&t->stage_state);
    if (st == 1 && proc.stm && atomic_load(&proc.stm->slots[slot].commit_seq) >= t->stage_seq) completed = 1;
    if (st == 2 || (st == 1 && completed)) {   /* its batch committed: its staged output and count stand */
        if (atomic_load(&t->head) < t->stage_head) atomic_store(&t->head, t->stage_head);
        if (c->packets_in[0] < t->stage_in) c->packets_in[0] = t->stage_in;
    }
    atomic_store(&t->stage_state, 0);
    RxRing *rx = &R->rx[slot];
    uint64_t tail = atomic_load(&rx->tail), taken = atomic_load(&rx->taken);
    if (taken <= tail) return 0;
    uint64_t lap_n = rx->laps > 1 ? rx->lap_n : 0, packets = 0;
    for (uint64_t at = tail; at < taken; at++) {
        RxDesc *d = lap_n ? &rx->descs[at % lap_n] : &rx->descs[at & rx->mask];
        if (!(d->kind & (DESC_TICK | DESC_MIGRATE))) packets++;
    }
    uint64_t counted = c->packets_in[0] - rx->in_at_take;   /* committed (or dropped) before it died */
    if (rx->data) {
        RxDesc *d = lap_n ? &rx->descs[(taken - 1) % lap_n] : &rx->descs[(taken - 1) & rx->mask];
        atomic_store_explicit(&rx->dtail, d->dend, memory_order_release);
    }
    atomic_store_explicit(&rx->tail, taken, memory_order_release);
    c->rx_done[0] = taken;
    return packets > counted ? packets - counted : 0;
}

uint64_t ring_rx_pending_packets(int slot) {
    RxRing *rx = &R->rx[slot];
    uint64_t n = 0, head = atomic_load(&rx->head);
    for (uint64_t at = atomic_load(&rx->tail); at < head; at++)
        if (rx->descs[at & rx->mask].kind == DESC_PACKET) n++;
    return n;
}

uint64_t ring_tx_spilled(int slot) { return spill.slot == slot ? spill.used : 0; }

int ring_tx_spill_next(int slot, uint64_t *at, RingFrame *f) {
    if (spill.slot != slot || *at >= spill.used) return 0;
    TxRec *r = (TxRec *)(spill.buf + *at);
    *at += r->reclen;
    f->frame = (const uint8_t *)(r + 1);
    f->len = r->framelen;
    f->devmask = r->devmask;
    f->indev = r->indev;
    f->time = r->time;
    f->wire = r->wire;
    return 1;
}

void ring_tx_spill_clear(int slot) {
    if (spill.slot != slot) return;
    spill.used = 0;
    if (spill.cap > (64u << 20)) {   /* a burst passed: give the memory back */
        PyMem_RawFree(spill.buf);
        spill.buf = NULL;
        spill.cap = 0;
    }
}

uint64_t ring_tx_tail(int slot) { return atomic_load_explicit(&R->tx[slot].tail, memory_order_relaxed); }
uint64_t ring_tx_head(int slot) { return atomic_load_explicit(&R->tx[slot].head, memory_order_acquire); }

int ring_tx_next(int slot, uint64_t *at, RingFrame *f) {
    TxRing *t = &R->tx[slot];
    TxRec *r = (TxRec *)(t->buf + *at % t->cap);
    *at += r->reclen;
    if (r->framelen == UINT32_MAX) return 0;
    f->frame = (const uint8_t *)(r + 1);
    f->len = r->framelen;
    f->wire = r->wire;
    f->devmask = r->devmask;
    f->indev = r->indev;
    f->time = r->time;
    return 1;
}

void ring_tx_release(int slot, uint64_t at) {
    atomic_store_explicit(&R->tx[slot].tail, at, memory_order_release);
}

/* A forked process does not inherit the page tables of a shared mapping, and
 * minor faults would otherwise be timed as processing. */
void ring_prefault(int slot) {
    long page = sysconf(_SC_PAGESIZE);
    char *spans[2][2] = {{R->pool_lo, R->pool_hi},
                         {(char *)R->rx[slot].descs, (char *)(R->rx[slot].descs + R->rx[slot].mask + 1)}};
    for (int i = 0; i < 2; i++) {
        char *lo = spans[i][0], *hi = spans[i][1];
        if (!lo || hi <= lo) continue;
        lo = (char *)((uintptr_t)lo & ~(uintptr_t)(page - 1));
        if (madvise(lo, (size_t)(hi - lo), MADV_POPULATE_READ) != 0) {
            for (char *p = lo; p < hi; p += page) (void)*(volatile char *)p;   /* older kernels */
        }
    }
}

/* ---------------------------------------------------------------- paced mode */

static struct {
    uint8_t **ptrs;
    uint32_t *lens;
    uint16_t *devs, *targets;
    size_t n;
} pool;

int ring_pool_load(uint8_t **frames, uint32_t *lens, uint16_t *devs, size_t n) {
    uint16_t *targets = PyMem_RawMalloc(sizeof(uint16_t) * (n ? n : 1));
    if (!targets) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < n; i++) targets[i] = (uint16_t)ring_steer(frames[i], lens[i], lens[i], devs[i]);
    PyMem_RawFree(pool.ptrs);
    PyMem_RawFree(pool.lens);
    PyMem_RawFree(pool.devs);
    PyMem_RawFree(pool.targets);
    pool.ptrs = frames;
    pool.lens = lens;
    pool.devs = devs;
    pool.targets = targets;
    pool.n = n;
    copy_frames = 1;   /* the pool cycles */
    return 0;
}

int ring_pool_loaded(void) { return pool.n > 0; }

void ring_feed_paced_begin(PacedFeed *f, double rate, double duration) {
    memset(f, 0, sizeof *f);
    f->t0 = mono_ns();
    f->end = f->t0 + (uint64_t)(duration * 1e9);
    f->gap = 1e9 / rate;
    /* the schedule's length: the first k due at or after the end */
    uint64_t k = (uint64_t)(duration * rate);
    while (k && f->t0 + (uint64_t)((k - 1) * f->gap) >= f->end) k--;
    while (f->t0 + (uint64_t)(k * f->gap) < f->end) k++;
    f->kend = k;
}

int ring_feed_paced_step(PacedFeed *f, uint64_t until) {
    for (;; f->k++) {
        uint64_t due = f->t0 + (uint64_t)(f->k * f->gap), now;
        if (due >= f->end) return 1;
        if (due > until) return 0;   /* back to the caller (a stop request?) before waiting */
        while ((now = mono_ns()) < due) {}
        if (now > due + PACED_SKIP_NS) {
            /* The generator itself was descheduled: the packets due meanwhile
             * are not offered (counted), rather than queued in one burst that
             * the worker would have to drain: a burst of the generator's own
             * making, not of the traffic's. */
            uint64_t behind = (uint64_t)((double)(now - due) / f->gap);
            if (behind >= f->kend - f->k) {   /* none past the schedule's end is counted */
                f->skipped += f->kend - f->k;
                return 1;
            }
            f->skipped += behind;
            f->k += behind;
            f->i = (f->i + behind) % pool.n;
        }
        size_t i = f->i;
        if (ring_push(pool.targets[i], pool.ptrs[i], pool.lens[i], pool.lens[i], pool.devs[i],
                      DESC_PACKET | DESC_TIMED, now, (uint32_t)i, 0) == 0)
            f->queued++;
        else
            f->lost++;
        if (++f->i == pool.n) f->i = 0;
    }
}

/* ------------------------------------------------------------ worker side */

static PktSlot slots[NFOS_BATCH_MAX];
static int call_spin;        /* idle polls left in this worker_run call */
static uint64_t call_t0;     /* when it began */

static uint64_t call_cpu0, call_minflt0, call_nivcsw0;

/* This thread's CPU time (ns), minor faults and involuntary switches so far. */
static void thread_usage(uint64_t *cpu, uint64_t *minflt, uint64_t *nivcsw) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    *cpu = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) == 0) {
        *minflt = (uint64_t)ru.ru_minflt;
        *nivcsw = (uint64_t)ru.ru_nivcsw;
    }
}

static int ring_enter(int spin) {
    if (!R || !proc.me) {
        PyErr_SetString(PyExc_RuntimeError, "no RX rings: load a trace (or rings_setup) first");
        return -2;
    }
    call_spin = spin;
    thread_usage(&call_cpu0, &call_minflt0, &call_nivcsw0);
    call_t0 = mono_ns();
    if (!proc.me->counters.begin_ns[0]) proc.me->counters.begin_ns[0] = call_t0;
    return 0;
}

static int ring_rx(PktioRx *b, int max, uint64_t due) {
    RxRing *rx = &R->rx[proc.slot];
    if (proc_stopping()) {
        atomic_store(&rx->finished, 1);
        return PKTIO_STOP;
    }
    uint64_t tail = atomic_load_explicit(&rx->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&rx->head, memory_order_acquire);
    uint64_t lap_n = rx->laps > 1 ? rx->lap_n : 0;
    if (lap_n) head = lap_n * rx->laps;
    if (head == tail) {
        if (atomic_load(&rx->closed) && (lap_n || atomic_load(&rx->head) == tail)) {
            if (!atomic_load(&rx->finished)) proc.me->counters.finish_ns[0] = mono_ns();
            atomic_store(&rx->finished, 1);
            return PKTIO_END;
        }
        b->time = 0;
        return PKTIO_IDLE;
    }
    int n = 0;
    uint64_t avail = head - tail, take = avail < (uint64_t)max ? avail : (uint64_t)max;
    uint64_t consumed = 0;
    if (copy_frames && frame_buf_max < max_frame) {   /* frames copied before the handlers see them */
        PyMem_RawFree(frame_buf);
        frame_buf = PyMem_RawMalloc((size_t)NFOS_BATCH_MAX * max_frame);
        frame_buf_max = frame_buf ? max_frame : 0;
    }
    for (uint64_t k = 0; k < take; k++) {
        uint64_t at = tail + k;
        RxDesc *d = lap_n ? &rx->descs[at % lap_n] : &rx->descs[at & rx->mask];
        uint64_t t = lap_n ? d->time + (at / lap_n) * rx->lap_ns : d->time;
        if (t >= due) {   /* periodic handlers come first (at a barrier with workers) */
            if (n == 0) {
                b->time = t;
                return PKTIO_PERIODIC;
            }
            break;
        }
        if (t > b->horizon) {   /* past the drift horizon: others are too far behind */
            if (n == 0) {
                b->time = t;
                return PKTIO_WAIT;
            }
            break;
        }
        if (d->kind & DESC_MIGRATE) {   /* an epoch boundary: outside any transaction */
            if (n == 0) {
                uint32_t e = d->len;
                uint64_t lap = lap_n ? at / lap_n : 0;
                if (b->at_wait) b->at_wait(t);   /* everything before it is done: others may go on */
                migrate(e, lap * (M ? M->nepochs : 0) + e + 1);
                b->time = t;
                b->count = 1;
                b->mark = tail;
                return PKTIO_TICK;
            }
            break;
        }
        if (d->kind & DESC_TICK) {
            if (n == 0) {
                b->time = t;
                b->count = 1;
                b->mark = tail;
                return PKTIO_TICK;
            }
            break;
        }
        PktSlot *s = &slots[n];
        s->data = (uint8_t *)(uintptr_t)d->ptr;
        s->copy_to = copy_frames && d->len <= frame_buf_max ? frame_buf + (size_t)n * frame_buf_max : NULL;
        s->len = d->len;
        s->wire = d->wire;
        s->dev = d->dev;
        s->time = t;
        s->index = d->index;
        s->enq_ns = (d->kind & DESC_TIMED) ? d->time : 0;
        memset(&s->vnet, 0, sizeof s->vnet);
        s->undo_serial = 0;
        pkt_parse(s);
        set_key_extract(s);
        b->items[n].pkt = s;
        b->items[n].expire_id = -1;
        n++;
        consumed++;
    }
    b->n = n;
    b->time = slots[0].time;
    b->last = slots[n - 1].time;
    b->count = consumed;
    b->mark = tail;
    rx->in_at_take = proc.me->counters.packets_in[0];
    atomic_store_explicit(&rx->taken, tail + consumed, memory_order_release);
    return PKTIO_BATCH;
}

static void ring_done(PktioRx *b) {
    RxRing *rx = &R->rx[proc.slot];
    if (b->count && rx->data) {   /* the data of what was consumed is free */
        uint64_t dend = rx->descs[(b->mark + b->count - 1) & rx->mask].dend;
        atomic_store_explicit(&rx->dtail, dend, memory_order_release);
    }
    atomic_store_explicit(&rx->tail, b->mark + b->count, memory_order_release);
    proc.me->counters.rx_done[0] = b->mark + b->count;
}

/* Real-time traffic (paced): the worker busy-polls its CPU and never yields
 * it: a yield hands the CPU to any other runnable task for its whole slice
 * (milliseconds), and the packets that arrive meanwhile wait for it. */
static int busy_poll;
void ring_set_busy_poll(int on) { busy_poll = on; }

static int ring_wait(void) {
    if (call_spin-- <= 0) return 1;
    if (!busy_poll && call_spin % 64 == 0) sched_yield();
    return 0;
}

static void ring_leave(void) {
    SlotCounters *c = &proc.me->counters;
    c->busy_ns[0] += mono_ns() - call_t0;
    uint64_t cpu = call_cpu0, minflt = call_minflt0, nivcsw = call_nivcsw0;
    thread_usage(&cpu, &minflt, &nivcsw);
    c->cpu_ns[0] += cpu - call_cpu0;
    c->minor_faults[0] += minflt - call_minflt0;
    c->preempted[0] += nivcsw - call_nivcsw0;
}

/* Is this process the consumer of its own slot's TX ring? */
static inline int self_drained(void) { return proc.local || proc.slot == proc.nworkers; }

static void write_rec(TxRec *r, uint64_t rec, const uint8_t *frame, uint32_t len, uint32_t wire, uint32_t devmask,
                      uint32_t indev, uint64_t time) {
    r->reclen = (uint32_t)rec;
    r->framelen = len;
    r->devmask = devmask;
    r->indev = indev;
    r->time = time;
    r->wire = wire > len ? wire : len;
    r->pad = 0;
    memcpy(r + 1, frame, len);
}

/* Append to the spill buffer; 0, or -1 (out of memory: the frame is lost). */
static int spill_push(const uint8_t *frame, uint32_t len, uint32_t wire, uint32_t devmask, uint32_t indev,
                      uint64_t time) {
    uint64_t rec = (sizeof(TxRec) + len + 31) & ~31ull;
    if (spill.used + rec > spill.cap) {
        uint64_t n = spill.cap ? spill.cap : (1u << 20);
        while (n < spill.used + rec) n *= 2;
        char *p = PyMem_RawRealloc(spill.buf, n);
        if (!p) return -1;
        spill.buf = p;
        spill.cap = n;
    }
    spill.slot = proc.slot;
    write_rec((TxRec *)(spill.buf + spill.used), rec, frame, len, wire, devmask, indev, time);
    spill.used += rec;
    return 0;
}

/* A worker's records of the batch being published are written from tx_pend
 * and made visible together by ring_flush (one store of the head): a worker
 * that dies while publishing leaves all of the batch's frames or none. */
static uint64_t tx_pend;
static int tx_pend_on;
static int staging, stage_failed;   /* ring_stage: records staged before the commit; no room for them */

static void tx_publish_pending(TxRing *t) {
    if (tx_pend_on) {
        atomic_store_explicit(&t->head, tx_pend, memory_order_release);
        tx_pend_on = 0;
    }
}

static void tx_ring_push(const uint8_t *frame, uint32_t len, uint32_t wire, uint32_t devmask, uint32_t indev,
                         uint64_t time) {
    TxRing *t = &R->tx[proc.slot];
    uint64_t rec = (sizeof(TxRec) + len + 31) & ~31ull;
    int self = self_drained();
    if (self && spill.used && spill.slot == proc.slot) {   /* keep the order: after what spilled */
        spill_push(frame, len, wire, devmask, indev, time);
        return;
    }
    for (unsigned spins = 0;; spins++) {
        uint64_t head = tx_pend_on ? tx_pend : atomic_load_explicit(&t->head, memory_order_relaxed);
        uint64_t tail = atomic_load_explicit(&t->tail, memory_order_acquire);
        uint64_t off = head % t->cap, room_end = t->cap - off;
        uint64_t need = rec <= room_end ? rec : room_end + rec;
        if (rec <= t->cap && head + need - tail <= t->cap) {
            if (rec > room_end) {   /* pad to the end, wrap */
                TxRec *pad = (TxRec *)(t->buf + off);
                pad->reclen = (uint32_t)room_end;
                pad->framelen = UINT32_MAX;
                head += room_end;
                off = 0;
            }
            write_rec((TxRec *)(t->buf + off), rec, frame, len, wire, devmask, indev, time);
            if (self) {
                atomic_store_explicit(&t->head, head + rec, memory_order_release);
            } else {
                tx_pend = head + rec;
                tx_pend_on = 1;
            }
            return;
        }
        if (self) {   /* nobody else will make room: spill */
            spill_push(frame, len, wire, devmask, indev, time);
            return;
        }
        if (staging) {   /* no room to stage before the commit: sent after it (ring_stage) */
            stage_failed = 1;
            tx_pend_on = 0;
            return;
        }
        /* a worker: the control process drains the ring (what is pending first); unless the run is stopping */
        tx_publish_pending(t);
        if (rec > t->cap || (spins % 64 == 63 && proc_stop_nogil())) return;
        if (spins > 64) usleep(50);
    }
}

static void ring_flush(void) {
    if (R && tx_pend_on) tx_publish_pending(&R->tx[proc.slot]);
}

static int ring_stage(int step, uint64_t packets) {
    if (!R || !proc.me) return -1;
    TxRing *t = &R->tx[proc.slot];
    SlotCounters *c = &proc.me->counters;
    switch (step) {
    case 1:
        staging = 1;
        stage_failed = 0;
        return 0;
    case 2:
        t->stage_head = tx_pend_on ? tx_pend : atomic_load_explicit(&t->head, memory_order_relaxed);
        t->stage_in = c->packets_in[0] + packets;
        t->stage_seq = proc.stm ? atomic_load(&proc.stm->slots[proc.slot].commit_seq) + 1 : UINT64_MAX;
        atomic_store_explicit(&t->stage_state, stage_failed ? 0 : 1, memory_order_release);
        return 0;
    case 3:
        staging = 0;
        if (stage_failed) {
            tx_pend_on = 0;
            atomic_store(&t->stage_state, 0);
            return -1;
        }
        atomic_store(&t->stage_state, 2);
        tx_publish_pending(t);
        c->packets_in[0] = t->stage_in;
        atomic_store_explicit(&t->stage_state, 0, memory_order_release);
        return 0;
    default:
        staging = 0;
        tx_pend_on = 0;
        atomic_store(&t->stage_state, 0);
        return 0;
    }
}

static void ring_send(const PktOut *out, int n) {
    if (staging && stage_failed) return;
    if (!collect || !R) return;
    for (int i = 0; i < n; i++)
        tx_ring_push(out[i].data, out[i].len, out[i].wire, out[i].devmask, out[i].indev, out[i].time);
}

const Pktio pktio_ring = {
    .name = "ring",
    .enter = ring_enter,
    .rx = ring_rx,
    .done = ring_done,
    .wait = ring_wait,
    .leave = ring_leave,
    .send = ring_send,
    .flush = ring_flush,
    .stage = ring_stage,
};
