/* Bindings: the RX side of the replay rings — traces, injected frames,
 * clock ticks, the paced generator — and software steering. */
#include "bind.h"

/* Fresh rings come with a fresh start/stop handshake. */
static void handshake_reset(void) {
    atomic_store(&proc.shared->start, 0);
    atomic_store(&proc.shared->ready, 0);
    atomic_store(&proc.shared->stop, 0);
    proc.shared->start_ns = 0;
}

#define STREAM_DATA_BYTES (8u << 20)   /* per slot: frames injected and not yet processed */

static int setup_rings(PyObject *caps, unsigned long long txbytes, unsigned long long data_bytes) {
    uint32_t nslots = proc.nslots;
    if (PyList_GET_SIZE(caps) != nslots) {
        PyErr_SetString(PyExc_ValueError, "one RX capacity per slot");
        return -1;
    }
    uint64_t c[NFOS_MAX_SLOTS];
    for (uint32_t s = 0; s < nslots; s++) {
        c[s] = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(caps, s));
        if (PyErr_Occurred()) return -1;
    }
    if (ring_setup(c, nslots, txbytes, data_bytes) < 0) return -1;
    handshake_reset();
    return 0;
}

/* rings_setup(rx_caps: list[int], tx_bytes): one RX and one TX ring per slot. */
static PyObject *py_rings_setup(PyObject *self, PyObject *args) {
    PyObject *caps;
    unsigned long long txbytes;
    if (!PyArg_ParseTuple(args, "O!K", &PyList_Type, &caps, &txbytes)) return NULL;
    if (!proc.shared) {
        PyErr_SetString(PyExc_RuntimeError, "create the arena first");
        return NULL;
    }
    if (setup_rings(caps, txbytes, STREAM_DATA_BYTES) < 0) return NULL;
    Py_RETURN_NONE;
}

static int check_dev(long dev) {
    if (dev < 0 || dev >= proc.ndevs) {
        PyErr_SetString(PyExc_ValueError, "bad device index");
        return -1;
    }
    return 0;
}

static int check_ring_slot(long slot) {
    if (!ring_ready() || slot < 0 || (uint32_t)slot >= proc.nslots) {
        PyErr_SetString(PyExc_ValueError, "bad slot (or no rings)");
        return -1;
    }
    return 0;
}

/* steer_frame(frame, dev) -> (worker, in_a_set, rss hash): the worker
 * software RSS picks (tests, checkers). */
static PyObject *py_steer_frame(PyObject *self, PyObject *args) {
    Py_buffer b;
    int dev;
    if (!PyArg_ParseTuple(args, "y*i", &b, &dev)) return NULL;
    if (check_dev(dev) < 0) {
        PyBuffer_Release(&b);
        return NULL;
    }
    PktSlot s;
    memset(&s, 0, sizeof s);
    s.data = b.buf;
    s.len = s.wire = (uint32_t)b.len;
    s.dev = (uint16_t)dev;
    pkt_parse(&s);
    set_key_extract(&s);
    PyObject *r = Py_BuildValue("(iiI)", steer_worker(&s), s.has_set, s.rss);
    PyBuffer_Release(&b);
    return r;
}

/* The clock ticks of a replay.  A tick every tick_ns of trace time lets an
 * idle worker expire its sets (and, sequentially, run periodic handlers on
 * time).  Ticks can change something only within `horizon_ns` of the latest
 * frame (the sets' expiry, plus slack): after that every set a frame created
 * has expired, so a jump forward in the capture gets one tick, the last grid
 * point before the jumping frame, not one per tick_ns of the jump.  The same
 * plan runs twice: to count the descriptors (the rings' sizes), then to push. */
typedef struct {
    uint64_t tick_ns, horizon_ns;
    uint64_t next;        /* the next tick due */
    uint64_t latest;      /* the latest frame time so far */
    int exhausted;        /* the grid ran past 2^64 ns */
} TickPlan;

static void plan_start(TickPlan *p, uint64_t tick_ns, uint64_t horizon_ns, uint64_t first) {
    p->tick_ns = tick_ns;
    p->horizon_ns = horizon_ns;
    p->latest = first;
    p->exhausted = !tick_ns || first > UINT64_MAX - tick_ns;
    p->next = p->exhausted ? UINT64_MAX : first + tick_ns;
}

/* The ticks due at or before `t` (>= every earlier frame's time): each is
 * passed to `push` (NULL: only counted).  Returns how many, or -1 when push
 * failed (exception set).  plan_ticks then records a frame at t; plan_flush
 * does not (an RSS++ boundary at t: at most one tick more than without it). */
static long long plan_flush(TickPlan *p, uint64_t t, int (*push)(uint64_t, void *), void *arg) {
    long long n = 0;
    while (!p->exhausted && t >= p->next) {
        if (p->next - p->latest > p->horizon_ns) {   /* nothing can expire before t: skip to t's grid point */
            p->next += (t - p->next) / p->tick_ns * p->tick_ns;
        }
        if (push && push(p->next, arg) < 0) return -1;
        n++;
        if (p->next > UINT64_MAX - p->tick_ns) p->exhausted = 1;
        else p->next += p->tick_ns;
    }
    return n;
}

static long long plan_ticks(TickPlan *p, uint64_t t, int (*push)(uint64_t, void *), void *arg) {
    long long n = plan_flush(p, t, push, arg);
    p->latest = t;
    return n;
}

static int ring_overflow(int slot, uint64_t at) {
    PyErr_Format(PyExc_RuntimeError,
                 "internal error: the RX ring of slot %d is full at descriptor %llu (rings are sized from the "
                 "descriptors: please report this)", slot, (unsigned long long)at);
    return -1;
}

typedef struct {
    uint32_t nw;
    uint64_t pushed;
} TickPush;

static int push_tick(uint64_t t, void *arg) {
    TickPush *tp = arg;
    for (uint32_t s = 0; s < tp->nw; s++)
        if (ring_push((int)s, NULL, 0, 0, 0, DESC_TICK, t, 0, 0) < 0) return ring_overflow((int)s, tp->pushed);
    tp->pushed++;
    return 0;
}

/* Call progress(done) (if given); -1: it raised (e.g. KeyboardInterrupt). */
static int report(PyObject *progress, Py_ssize_t done) {
    if (progress == Py_None) return PyErr_CheckSignals();
    PyObject *r = PyObject_CallFunction(progress, "n", done);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

#define PROGRESS_EVERY 65536

/* Grow the boundary arrays to hold `need` boundaries: 0, or -1 (MemoryError). */
typedef struct {
    uint64_t *time;
    RsMove *moves;   /* [n][STEER_RETA] */
    uint8_t *nmoves;
    size_t n, cap;
} Boundaries;

static int boundaries_room(Boundaries *B, size_t need) {
    if (need <= B->cap) return 0;
    size_t cap = B->cap ? B->cap : 64;
    while (cap < need) cap *= 2;
    uint64_t *bt = PyMem_RawRealloc(B->time, sizeof(uint64_t) * cap);
    if (bt) B->time = bt;
    RsMove *mv = PyMem_RawRealloc(B->moves, sizeof(RsMove) * STEER_RETA * cap);
    if (mv) B->moves = mv;
    uint8_t *nm = PyMem_RawRealloc(B->nmoves, cap);
    if (nm) B->nmoves = nm;
    if (!bt || !mv || !nm) {
        PyErr_NoMemory();
        return -1;
    }
    B->cap = cap;
    return 0;
}

/* One pass of RSS++ over the trace's buckets and times, from `table` and the
 * loads `est` (have_est: from an earlier pass): the boundaries and moves, each
 * packet's worker in target[].  Leaves the last table and loads in table/est. */
static int rsspp_pass(const uint8_t *bucket, const uint64_t *times, Py_ssize_t n, uint64_t epoch_ns,
                      unsigned int max_moves, uint32_t nw, uint32_t *table, double *est, int have_est,
                      uint16_t *target, Boundaries *B) {
    uint64_t bcounts[STEER_RETA] = {0};
    uint64_t next_epoch = n ? times[0] + epoch_ns : UINT64_MAX;
    B->n = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        while (times[i] >= next_epoch) {   /* a boundary: the loads so far decide the next table */
            if (boundaries_room(B, B->n + 2) < 0) return -1;
            for (int b = 0; b < STEER_RETA; b++)
                est[b] = have_est ? RSS_EWMA * (double)bcounts[b] + (1 - RSS_EWMA) * est[b] : (double)bcounts[b];
            have_est = 1;
            B->nmoves[B->n] = (uint8_t)rsspp_plan(est, table, (int)nw, (int)max_moves, &B->moves[B->n * STEER_RETA]);
            B->time[B->n++] = next_epoch;
            memset(bcounts, 0, sizeof bcounts);
            next_epoch += epoch_ns;
        }
        bcounts[bucket[i]]++;
        target[i] = (uint16_t)(table[bucket[i]] % nw);
    }
    return 0;
}

/* load_trace(frames, times, devs, tick_ns, tx_bytes, horizon_ns=0, progress=None, wire=None,
 *            epoch_ns=0, max_moves=16, warm=False)
 *   -> (per-worker packet counts, clock ticks per ring, frames whose time went back)
 * wire: None (every frame whole) or a buffer of unsigned 32-bit wire lengths
 * (array('I')), one per frame: a frame shorter than its wire length was cut
 * by the capture's snap length.
 * Copies the frames into the arena, steers each to its worker's RX ring
 * (allocated here, sized from the exact number of descriptors), inserts
 * clock ticks (plan_ticks) and an end tick at the last frame's time, and
 * closes the rings: saturation replay.
 *
 * Time never goes back: a frame earlier than the latest one before it is
 * queued at the latest time (its packet's now() and output time), and
 * counted (time_reordered, in this process's counters).  progress(done) is
 * called every PROGRESS_EVERY frames copied and steered.
 *
 * epoch_ns > 0 rebalances the indirection table as RSS++ does, online: at
 * each epoch boundary the per-bucket packet counts of the epochs so far
 * (smoothed: RSS_EWMA) decide up to max_moves bucket moves (rsspp_plan), the
 * next epoch's packets are steered with the new table, and a DESC_MIGRATE
 * descriptor in every worker's ring marks the boundary, where the moved
 * buckets' packet sets travel with them (pktio_ring.c).  After the last packet
 * the table goes back to the one the trace started with, so that the rings can
 * be walked again (laps).  warm: the trace starts with the table and loads a
 * first pass over it ended with (for laps: every lap starts where the one
 * before ended, instead of converging again from the round-robin table). */
static PyObject *py_load_trace(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"frames", "times", "devs", "tick_ns", "tx_bytes", "horizon_ns", "progress", "wire",
                             "epoch_ns", "max_moves", "warm", NULL};
    PyObject *frames, *times, *devs, *progress = Py_None, *wire_obj = Py_None;
    unsigned long long tick_ns, txbytes, horizon_ns = 0, epoch_ns = 0;
    unsigned int max_moves = 16;
    int warm = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!KK|KOOKIp", kwlist, &PyList_Type, &frames, &PyList_Type,
                                     &times, &PyList_Type, &devs, &tick_ns, &txbytes, &horizon_ns, &progress,
                                     &wire_obj, &epoch_ns, &max_moves, &warm))
        return NULL;
    if (!proc.shared) {
        PyErr_SetString(PyExc_RuntimeError, "create the arena first");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(frames);
    if (PyList_GET_SIZE(times) != n || PyList_GET_SIZE(devs) != n) {
        PyErr_SetString(PyExc_ValueError, "frames, times and devs differ in length");
        return NULL;
    }
    if (progress != Py_None && !PyCallable_Check(progress)) {
        PyErr_SetString(PyExc_TypeError, "progress is a callable or None");
        return NULL;
    }
    Py_buffer wb = {0};
    const uint32_t *wire = NULL;
    if (wire_obj != Py_None) {
        if (PyObject_GetBuffer(wire_obj, &wb, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return NULL;
        if (wb.itemsize != 4 || !wb.format || (strcmp(wb.format, "I") && strcmp(wb.format, "=I") &&
                                               strcmp(wb.format, "<I")) || wb.len / 4 != n) {
            PyBuffer_Release(&wb);
            PyErr_SetString(PyExc_ValueError, "wire is array('I') of one wire length per frame, or None");
            return NULL;
        }
        wire = wb.buf;
    }
    uint32_t nslots = proc.nslots, nw = proc.local ? 1 : (uint32_t)proc.nworkers;
    int rebalance = epoch_ns > 0 && nw > 1 && !proc.local && n > 0;
    if (max_moves > STEER_RETA) max_moves = STEER_RETA;
    size_t cnt = n ? (size_t)n : 1;
    uint8_t **ptrs = PyMem_RawMalloc(sizeof(uint8_t *) * cnt);
    uint32_t *lens = PyMem_RawMalloc(sizeof(uint32_t) * cnt), *wires = PyMem_RawMalloc(sizeof(uint32_t) * cnt);
    uint64_t *when = PyMem_RawMalloc(sizeof(uint64_t) * cnt);
    uint16_t *target = PyMem_RawMalloc(sizeof(uint16_t) * cnt), *dev_of = PyMem_RawMalloc(sizeof(uint16_t) * cnt);
    uint8_t *bucket = PyMem_RawMalloc(cnt);
    uint64_t counts[NFOS_MAX_SLOTS] = {0};
    uint64_t latest = 0, reordered = 0;
    long long nticks = 0;
    PyObject *caps = NULL, *out = NULL;
    Boundaries B = {0};
    if (!ptrs || !lens || !wires || !when || !target || !dev_of || !bucket) {
        PyErr_NoMemory();
        goto done;
    }
    TickPlan plan = {0};
    for (Py_ssize_t i = 0; i < n; i++) {   /* copy, steer, clamp the time, count the descriptors */
        PyObject *f = PyList_GET_ITEM(frames, i);
        char *buf;
        Py_ssize_t len;
        if ((i & 4095) == 0 && proc_poll_stop() < 0) goto done;   /* Ctrl-C while loading 10^7 frames */
        if (PyBytes_AsStringAndSize(f, &buf, &len) < 0) goto done;
        long dev = PyLong_AsLong(PyList_GET_ITEM(devs, i));
        uint64_t t = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(times, i));
        if (PyErr_Occurred()) goto done;
        if (dev < 0 || dev >= proc.ndevs) {
            PyErr_Format(PyExc_ValueError, "packet %zd arrives on device %ld, which the NF does not have", i, dev);
            goto done;
        }
        if (i == 0) {
            latest = t;
            plan_start(&plan, tick_ns, horizon_ns, t);
        } else if (t < latest) {
            t = latest;
            reordered++;
        } else {
            latest = t;
        }
        ptrs[i] = ring_pool_copy(buf, (size_t)len);
        if (!ptrs[i]) goto done;
        lens[i] = (uint32_t)len;
        wires[i] = wire && wire[i] > (uint32_t)len ? wire[i] : (uint32_t)len;
        when[i] = t;
        dev_of[i] = (uint16_t)dev;
        int b;
        target[i] = (uint16_t)ring_steer_bucket(ptrs[i], (uint32_t)len, wires[i], (uint16_t)dev, &b);
        bucket[i] = (uint8_t)b;
        nticks += plan_ticks(&plan, t, NULL, NULL);
        if ((i + 1) % PROGRESS_EVERY == 0 && report(progress, i + 1) < 0) goto done;
    }
    if (rebalance) {
        uint32_t reta0[STEER_RETA], table[STEER_RETA], start[STEER_RETA];
        double est[STEER_RETA] = {0};
        steer_get_reta(reta0);
        memcpy(table, reta0, sizeof table);
        if (warm && rsspp_pass(bucket, when, n, epoch_ns, max_moves, nw, table, est, 0, target, &B) < 0) goto done;
        memcpy(start, table, sizeof start);
        if (rsspp_pass(bucket, when, n, epoch_ns, max_moves, nw, table, est, warm, target, &B) < 0) goto done;
        if (boundaries_room(&B, B.n + 1) < 0) goto done;
        int k = 0;   /* the last boundary: back to the table the trace started with */
        for (int b = 0; b < STEER_RETA; b++)
            if (table[b] != start[b])
                B.moves[B.n * STEER_RETA + k++] = (RsMove){(uint8_t)b, (uint8_t)table[b], (uint8_t)start[b], 0};
        B.nmoves[B.n] = (uint8_t)k;   /* (k <= STEER_RETA = 128) */
        B.time[B.n++] = when[n - 1];
    }
    for (Py_ssize_t i = 0; i < n; i++) counts[target[i]]++;
    caps = PyList_New(nslots);
    if (!caps) goto done;
    for (uint32_t s = 0; s < nslots; s++)   /* a boundary may split a skipped jump: one tick more each */
        PyList_SET_ITEM(caps, s, PyLong_FromUnsignedLongLong(s < nw ? counts[s] + (uint64_t)nticks + 2 * B.n + 1 : 0));
    if (setup_rings(caps, txbytes, 0) < 0) goto done;
    if (rebalance && ring_migration_setup(nw, (uint32_t)B.n, B.moves, B.nmoves) < 0) goto done;
    TickPush tp = {nw, 0};
    size_t kb = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t t = when[i];
        if (i == 0) plan_start(&plan, tick_ns, horizon_ns, t);
        /* the boundaries due before this packet (the last one: after the last packet),
         * each after the ticks before it */
        for (; kb + 1 < B.n && B.time[kb] <= t; kb++) {
            if (B.time[kb] && plan_flush(&plan, B.time[kb] - 1, push_tick, &tp) < 0) goto done;
            for (uint32_t s = 0; s < nw; s++)
                if (ring_push((int)s, NULL, (uint32_t)kb, 0, 0, DESC_MIGRATE, B.time[kb], 0, 0) < 0) {
                    ring_overflow((int)s, (uint64_t)i);
                    goto done;
                }
        }
        if (plan_ticks(&plan, t, push_tick, &tp) < 0) goto done;
        if (ring_push(target[i], ptrs[i], lens[i], wires[i], dev_of[i], DESC_PACKET, t, (uint32_t)i, 0) < 0) {
            ring_overflow(target[i], (uint64_t)i);
            goto done;
        }
    }
    /* The end tick: every worker's clock reaches the trace's last time and sweeps
     * what expired by then, as the sequential run's clock does with the last packet. */
    if (n && tick_ns)
        for (uint32_t s = 0; s < nw; s++)
            if (ring_push((int)s, NULL, 0, 0, 0, DESC_TICK, when[n - 1], 0, 0) < 0) {
                ring_overflow((int)s, (uint64_t)n);
                goto done;
            }
    for (; kb < B.n; kb++)   /* the last boundary (back to the first table) */
        for (uint32_t s = 0; s < nw; s++)
            if (ring_push((int)s, NULL, (uint32_t)kb, 0, 0, DESC_MIGRATE, B.time[kb], 0, 0) < 0) {
                ring_overflow((int)s, (uint64_t)n);
                goto done;
            }
    ring_close_all();
    if (proc.me) proc.me->counters.time_reordered[0] += reordered;
    PyObject *per = PyList_New(nw);
    if (!per) goto done;
    for (uint32_t s = 0; s < nw; s++) PyList_SET_ITEM(per, s, PyLong_FromUnsignedLongLong(counts[s]));
    out = Py_BuildValue("(NLK)", per, nticks, (unsigned long long)reordered);
done:
    Py_XDECREF(caps);
    PyMem_RawFree(ptrs);
    PyMem_RawFree(lens);
    PyMem_RawFree(wires);
    PyMem_RawFree(when);
    if (wire) PyBuffer_Release(&wb);
    PyMem_RawFree(target);
    PyMem_RawFree(dev_of);
    PyMem_RawFree(bucket);
    PyMem_RawFree(B.time);
    PyMem_RawFree(B.moves);
    PyMem_RawFree(B.nmoves);
    return out;
}

/* inject(frame, dev, time, wire=0) -> (slot, seq): one frame into its worker's
 * ring (streaming: the test harness), copied into the ring's data ring, which
 * is reused as the worker consumes (a long stream does not grow the arena).
 * seq is the ring position to wait for; wire > len(frame): the frame was cut
 * by a capture. */
static PyObject *py_inject(PyObject *self, PyObject *args) {
    Py_buffer b;
    int dev;
    unsigned long long t;
    unsigned int wire = 0;
    if (!PyArg_ParseTuple(args, "y*iK|I", &b, &dev, &t, &wire)) return NULL;
    if (check_dev(dev) < 0 || !ring_ready()) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "rings_setup() first");
        PyBuffer_Release(&b);
        return NULL;
    }
    uint32_t len = (uint32_t)b.len;
    if (wire < len) wire = len;
    int slot = ring_steer(b.buf, len, wire, (uint16_t)dev);   /* steering only reads the frame */
    uint8_t *p = ring_data_copy(slot, b.buf, len);
    PyBuffer_Release(&b);
    if (!p) return NULL;
    if (ring_push(slot, p, len, wire, (uint16_t)dev, DESC_PACKET, t, 0, 1) < 0) return NULL;
    return Py_BuildValue("(iK)", slot, (unsigned long long)ring_rx_head(slot));
}

/* tick(slot, time) -> seq: advance a worker's clock (runs its expiries). */
static PyObject *py_tick(PyObject *self, PyObject *args) {
    int slot;
    unsigned long long t;
    if (!PyArg_ParseTuple(args, "iK", &slot, &t)) return NULL;
    if (check_ring_slot(slot) < 0) return NULL;
    if (ring_push(slot, NULL, 0, 0, 0, DESC_TICK, t, 0, 1) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(ring_rx_head(slot));
}

static PyObject *py_rx_done(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if ((s == -1 && PyErr_Occurred()) || check_ring_slot(s) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(ring_rx_tail((int)s));
}

static PyObject *py_rx_finished(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if ((s == -1 && PyErr_Occurred()) || check_ring_slot(s) < 0) return NULL;
    return PyBool_FromLong(ring_rx_finished((int)s));
}

/* rx_pending(slot) -> packets queued and not processed (an interrupted run's "unprocessed"). */
static PyObject *py_rx_pending(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if ((s == -1 && PyErr_Occurred()) || check_ring_slot(s) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(ring_rx_pending_packets((int)s));
}

static PyObject *py_close_rx(PyObject *self, PyObject *noargs) {
    if (ring_ready()) ring_close_all();
    Py_RETURN_NONE;
}

/* load_pool(frames, devs): the paced generator's trace, copied and steered once. */
static PyObject *py_load_pool(PyObject *self, PyObject *args) {
    PyObject *frames, *devs;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &frames, &PyList_Type, &devs)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(frames);
    if (n == 0 || PyList_GET_SIZE(devs) != n) return PyErr_Format(PyExc_ValueError, "empty or mismatched trace");
    uint8_t **ptrs = PyMem_RawMalloc(sizeof(uint8_t *) * n);
    uint32_t *lens = PyMem_RawMalloc(sizeof(uint32_t) * n);
    uint16_t *ds = PyMem_RawMalloc(sizeof(uint16_t) * n);
    if (!ptrs || !lens || !ds) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char *buf;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(PyList_GET_ITEM(frames, i), &buf, &len) < 0) goto fail;
        long dev = PyLong_AsLong(PyList_GET_ITEM(devs, i));
        if (dev < 0 || dev >= proc.ndevs) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "bad device %ld", dev);
            goto fail;
        }
        ptrs[i] = ring_pool_copy(buf, (size_t)len);
        if (!ptrs[i]) goto fail;
        lens[i] = (uint32_t)len;
        ds[i] = (uint16_t)dev;
    }
    if (ring_pool_load(ptrs, lens, ds, (size_t)n) < 0) goto fail;
    Py_RETURN_NONE;
fail:
    PyMem_RawFree(ptrs);
    PyMem_RawFree(lens);
    PyMem_RawFree(ds);
    return NULL;
}

/* feed_paced(rate_pps, duration_s) -> (queued, lost, skipped: due while the generator was descheduled) */
static PyObject *py_feed_paced(PyObject *self, PyObject *args) {
    double rate, duration;
    if (!PyArg_ParseTuple(args, "dd", &rate, &duration)) return NULL;
    if (!ring_pool_loaded() || !ring_ready() || rate <= 0)
        return PyErr_Format(PyExc_ValueError, "load_pool() first, and a rate > 0");
    PacedFeed f;
    ring_feed_paced_begin(&f, rate, duration);
    for (int finished = 0; !finished;) {   /* 5 ms at a time: Ctrl-C is seen in between */
        Py_BEGIN_ALLOW_THREADS
        finished = ring_feed_paced_step(&f, mono_ns() + 5000000ull);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) return NULL;
    }
    return Py_BuildValue("(KKK)", (unsigned long long)f.queued, (unsigned long long)f.lost,
                         (unsigned long long)f.skipped);
}

/* set_laps(laps, lap_ns): walk the loaded RX rings `laps` times (replay). */
static PyObject *py_set_laps(PyObject *self, PyObject *args) {
    unsigned int laps;
    unsigned long long lap_ns;
    if (!PyArg_ParseTuple(args, "IK", &laps, &lap_ns)) return NULL;
    if (!ring_ready() || laps < 1) return PyErr_Format(PyExc_ValueError, "load_trace() first, and laps >= 1");
    ring_set_laps(laps, lap_ns);
    Py_RETURN_NONE;
}

/* migrated(slot) -> (packet sets moved in, dropped: its table was full), RSS++ rebalancing. */
static PyObject *py_migrated(PyObject *self, PyObject *arg) {
    long slot;
    if (bind_slot_arg(arg, &slot) < 0) return NULL;
    uint64_t in, dropped;
    ring_migration_stats((int)slot, &in, &dropped);
    return Py_BuildValue("(KK)", (unsigned long long)in, (unsigned long long)dropped);
}

/* ---------------------------------------------- commit records, nfos verify */

/* record_commits(per_slot): record every slot's committed transactions (before the fork). */
static PyObject *py_record_commits(PyObject *self, PyObject *arg) {
    unsigned long long n = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (!proc.arena.base) {
        PyErr_SetString(PyExc_RuntimeError, "no NF is loaded");
        return NULL;
    }
    if (loop_record_setup(n) < 0) return NULL;
    Py_RETURN_NONE;
}

/* commit_records(slot) -> (bytes of its CommitRecs, lost), or None when not recording. */
static PyObject *py_commit_records(PyObject *self, PyObject *arg) {
    long slot;
    if (bind_slot_arg(arg, &slot) < 0) return NULL;
    uint64_t n = 0, lost = 0;
    const CommitRec *r = loop_records((int)slot, &n, &lost);
    if (!r) Py_RETURN_NONE;
    return Py_BuildValue("(NK)", PyBytes_FromStringAndSize((const char *)r, (Py_ssize_t)(n * sizeof(CommitRec))),
                         (unsigned long long)lost);
}

/* Output of replayed transactions (replay_io): (devmask, frame) in publish order. */
static PyObject *replay_out;
static void replay_send(const PktOut *out, int n) {
    for (int i = 0; i < n; i++) {
        PyObject *t = Py_BuildValue("(Iy#)", out[i].devmask, (const char *)out[i].data, (Py_ssize_t)out[i].len);
        if (!t || !replay_out || PyList_Append(replay_out, t) < 0) PyErr_WriteUnraisable(NULL);
        Py_XDECREF(t);
    }
}
static const Pktio pktio_replay = {.name = "replay", .send = replay_send};

/* replay_io(on) -> the output collected since the last call: [(devmask, frame)].
 * on: this process's transactions publish into that list (nfos verify); off: the rings again. */
static PyObject *py_replay_io(PyObject *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    PyObject *was = replay_out ? replay_out : PyList_New(0);
    replay_out = on ? PyList_New(0) : NULL;
    loop_set_io(on ? &pktio_replay : &pktio_ring);
    return was;
}

/* replay_tx(worker, handler, index, clock, items) -> 0 done, 1 an expiry item's set is not
 * expired here.  items: [(frame, dev, wire, time, trace index)] for packets, [set id] for expiry. */
static PyObject *py_replay_tx(PyObject *self, PyObject *args) {
    int worker, handler;
    unsigned int index;
    unsigned long long clock;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "iiIKO!", &worker, &handler, &index, &clock, &PyList_Type, &list)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > NFOS_BATCH_MAX || worker < 0 || worker >= (proc.nworkers ? proc.nworkers : 1)) {
        PyErr_SetString(PyExc_ValueError, "replay_tx: bad worker or too many items");
        return NULL;
    }
    PktSlot slots[NFOS_BATCH_MAX];
    Item items[NFOS_BATCH_MAX];
    uint8_t *bufs[NFOS_BATCH_MAX] = {0};
    PyObject *res = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(list, i);
        if (PyLong_Check(o)) {
            items[i].pkt = NULL;
            items[i].expire_id = (int32_t)PyLong_AsLong(o);
            if (PyErr_Occurred()) goto done;
            continue;
        }
        const char *buf;
        Py_ssize_t len;
        int dev;
        unsigned int wire, tindex;
        unsigned long long t;
        if (!PyArg_ParseTuple(o, "y#iIKI", &buf, &len, &dev, &wire, &t, &tindex)) goto done;
        if (check_dev(dev) < 0) goto done;
        bufs[i] = PyMem_RawMalloc(len ? (size_t)len : 1);
        if (!bufs[i]) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(bufs[i], buf, (size_t)len);
        PktSlot *s = &slots[i];
        memset(s, 0, sizeof *s);
        s->data = bufs[i];
        s->len = (uint32_t)len;
        s->wire = wire > (uint32_t)len ? wire : (uint32_t)len;
        s->dev = (uint16_t)dev;
        s->time = t;
        s->index = tindex;
        pkt_parse(s);
        set_key_extract(s);
        items[i].pkt = s;
        items[i].expire_id = -1;
    }
    int r = loop_replay_tx(worker, handler, index, clock, items, (int)n);
    if (r >= 0) res = PyLong_FromLong(r);
done:
    for (Py_ssize_t i = 0; i < n; i++) PyMem_RawFree(bufs[i]);
    return res;
}

static PyObject *py_struct_dump(PyObject *self, PyObject *noargs) { return struct_dump(); }

PyMethodDef bind_feed_methods[] = {
    {"record_commits", py_record_commits, METH_O, "record_commits(per_slot): record each slot's commits"},
    {"commit_records", py_commit_records, METH_O, "commit_records(slot) -> (records, lost) or None"},
    {"replay_io", py_replay_io, METH_O, "replay_io(on) -> [(devmask, frame)] published since the last call"},
    {"replay_tx", py_replay_tx, METH_VARARGS, "replay_tx(worker, handler, index, clock, items) -> 0, or 1"},
    {"struct_dump", py_struct_dump, METH_NOARGS, "struct_dump() -> [(structure id, payload bytes)]"},
    {"migrated", py_migrated, METH_O, "migrated(slot) -> (packet sets moved in, dropped)"},
    {"set_laps", py_set_laps, METH_VARARGS, "set_laps(laps, lap_ns): walk the loaded trace `laps` times"},
    {"rings_setup", py_rings_setup, METH_VARARGS, NULL},
    {"load_trace", (PyCFunction)(void (*)(void))py_load_trace, METH_VARARGS | METH_KEYWORDS, NULL},
    {"inject", py_inject, METH_VARARGS, NULL},
    {"tick", py_tick, METH_VARARGS, NULL},
    {"rx_done", py_rx_done, METH_O, NULL},
    {"rx_finished", py_rx_finished, METH_O, NULL},
    {"rx_pending", py_rx_pending, METH_O, "rx_pending(slot) -> packets queued and not processed"},
    {"close_rx", py_close_rx, METH_NOARGS, NULL},
    {"load_pool", py_load_pool, METH_VARARGS, "load_pool(frames, devs): the paced generator's trace"},
    {"feed_paced", py_feed_paced, METH_VARARGS, "feed_paced(rate_pps, duration_s) -> (queued, lost, skipped)"},
    {"steer_frame", py_steer_frame, METH_VARARGS, "steer_frame(frame, dev) -> (worker, in_a_set, rss hash)"},
    {NULL, NULL, 0, NULL}};
