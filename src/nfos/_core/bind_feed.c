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

static int setup_rings(PyObject *caps, unsigned long long txbytes) {
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
    if (ring_setup(c, nslots, txbytes) < 0) return -1;
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
    if (setup_rings(caps, txbytes) < 0) return NULL;
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
    s.len = (uint32_t)b.len;
    s.dev = (uint16_t)dev;
    pkt_parse(&s);
    set_key_extract(&s);
    PyObject *r = Py_BuildValue("(iiI)", steer_worker(&s), s.has_set, s.rss);
    PyBuffer_Release(&b);
    return r;
}

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

/* load_trace(frames, times, devs, tick_ns, tx_bytes, epoch_ns=0, max_moves=16, warm=0)
 * -> per-worker packet counts.  Copies the frames into the arena, steers each
 * to its worker's RX ring (allocated here, sized to fit), inserts clock ticks
 * every tick_ns of trace time, and closes the rings: saturation replay.
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
static PyObject *py_load_trace(PyObject *self, PyObject *args) {
    PyObject *frames, *times, *devs;
    unsigned long long tick_ns, txbytes, epoch_ns = 0;
    unsigned int max_moves = 16;
    int warm = 0;
    if (!PyArg_ParseTuple(args, "O!O!O!KK|KIp", &PyList_Type, &frames, &PyList_Type, &times, &PyList_Type, &devs,
                          &tick_ns, &txbytes, &epoch_ns, &max_moves, &warm))
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
    uint32_t nslots = proc.nslots, nw = proc.local ? 1 : (uint32_t)proc.nworkers;
    int rebalance = epoch_ns > 0 && nw > 1 && !proc.local && n > 0;
    if (max_moves > STEER_RETA) max_moves = STEER_RETA;
    uint8_t **ptrs = PyMem_RawMalloc(sizeof(uint8_t *) * (n ? n : 1));
    uint16_t *target = PyMem_RawMalloc(sizeof(uint16_t) * (n ? n : 1));
    uint8_t *bucket = PyMem_RawMalloc(n ? n : 1);
    uint64_t *tms = PyMem_RawMalloc(sizeof(uint64_t) * (n ? n : 1));
    uint64_t counts[NFOS_MAX_SLOTS] = {0};
    uint64_t first = 0, last = 0;
    PyObject *caps = NULL, *out = NULL;
    Boundaries B = {0};
    if (!ptrs || !target || !bucket || !tms) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyList_GET_ITEM(frames, i);
        char *buf;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(f, &buf, &len) < 0) goto done;
        long dev = PyLong_AsLong(PyList_GET_ITEM(devs, i));
        uint64_t t = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(times, i));
        if (PyErr_Occurred()) goto done;
        if (dev < 0 || dev >= proc.ndevs) {
            PyErr_Format(PyExc_ValueError, "packet %zd arrives on device %ld, which the NF does not have", i, dev);
            goto done;
        }
        if (i == 0) first = t;
        ptrs[i] = ring_pool_copy(buf, (size_t)len);
        if (!ptrs[i]) goto done;
        int b;
        target[i] = (uint16_t)ring_steer_bucket(ptrs[i], (uint32_t)len, (uint16_t)dev, &b);
        bucket[i] = (uint8_t)b;
        tms[i] = t;
        last = t;
    }
    if (rebalance) {
        uint32_t reta0[STEER_RETA], table[STEER_RETA], start[STEER_RETA];
        double est[STEER_RETA] = {0};
        steer_get_reta(reta0);
        memcpy(table, reta0, sizeof table);
        if (warm && rsspp_pass(bucket, tms, n, epoch_ns, max_moves, nw, table, est, 0, target, &B) < 0) goto done;
        memcpy(start, table, sizeof start);
        if (rsspp_pass(bucket, tms, n, epoch_ns, max_moves, nw, table, est, warm, target, &B) < 0) goto done;
        if (boundaries_room(&B, B.n + 1) < 0) goto done;
        int k = 0;   /* the last boundary: back to the table the trace started with */
        for (int b = 0; b < STEER_RETA; b++)
            if (table[b] != start[b])
                B.moves[B.n * STEER_RETA + k++] = (RsMove){(uint8_t)b, (uint8_t)table[b], (uint8_t)start[b], 0};
        B.nmoves[B.n] = (uint8_t)k;   /* (k <= STEER_RETA = 128) */
        B.time[B.n++] = last;
    }
    for (Py_ssize_t i = 0; i < n; i++) counts[target[i]]++;
    uint64_t nticks = tick_ns && n ? (last - first) / tick_ns + 2 : 0;
    caps = PyList_New(nslots);
    if (!caps) goto done;
    for (uint32_t s = 0; s < nslots; s++)
        PyList_SET_ITEM(caps, s, PyLong_FromUnsignedLongLong(s < nw ? counts[s] + nticks + B.n + 1 : 1));
    if (setup_rings(caps, txbytes) < 0) goto done;
    if (rebalance && ring_migration_setup(nw, (uint32_t)B.n, B.moves, B.nmoves) < 0) goto done;
    uint64_t next_tick = tick_ns ? first + tick_ns : UINT64_MAX;
    size_t kb = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t t = tms[i];
        for (;;) {   /* the ticks and boundaries due before this packet, in time order */
            uint64_t tb = kb + 1 < B.n ? B.time[kb] : UINT64_MAX;   /* (the last boundary: after the last packet) */
            if (t < (tb < next_tick ? tb : next_tick)) break;
            if (tb <= next_tick) {
                for (uint32_t s = 0; s < nw; s++) ring_push((int)s, NULL, (uint32_t)kb, 0, DESC_MIGRATE, tb, 0, 0);
                kb++;
            } else {
                for (uint32_t s = 0; s < nw; s++) ring_push((int)s, NULL, 0, 0, DESC_TICK, next_tick, 0, 0);
                next_tick += tick_ns;
            }
        }
        PyObject *f = PyList_GET_ITEM(frames, i);
        ring_push(target[i], ptrs[i], (uint32_t)PyBytes_GET_SIZE(f), (uint16_t)PyLong_AsLong(PyList_GET_ITEM(devs, i)),
                  DESC_PACKET, t, 0, 0);
    }
    for (; kb < B.n; kb++)   /* the last boundary (back to the first table) */
        for (uint32_t s = 0; s < nw; s++) ring_push((int)s, NULL, (uint32_t)kb, 0, DESC_MIGRATE, B.time[kb], 0, 0);
    ring_close_all();
    out = PyList_New(nw);
    if (!out) goto done;
    for (uint32_t s = 0; s < nw; s++) PyList_SET_ITEM(out, s, PyLong_FromUnsignedLongLong(counts[s]));
done:
    Py_XDECREF(caps);
    PyMem_RawFree(ptrs);
    PyMem_RawFree(target);
    PyMem_RawFree(bucket);
    PyMem_RawFree(tms);
    PyMem_RawFree(B.time);
    PyMem_RawFree(B.moves);
    PyMem_RawFree(B.nmoves);
    return out;
}

/* inject(frame, dev, time) -> (slot, seq): one frame into its worker's ring
 * (streaming: the test harness).  seq is the ring position to wait for. */
static PyObject *py_inject(PyObject *self, PyObject *args) {
    Py_buffer b;
    int dev;
    unsigned long long t;
    if (!PyArg_ParseTuple(args, "y*iK", &b, &dev, &t)) return NULL;
    if (check_dev(dev) < 0 || !ring_ready()) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "rings_setup() first");
        PyBuffer_Release(&b);
        return NULL;
    }
    uint8_t *p = ring_pool_copy(b.buf, (size_t)b.len);
    uint32_t len = (uint32_t)b.len;
    PyBuffer_Release(&b);
    if (!p) return NULL;
    int slot = ring_steer(p, len, (uint16_t)dev);
    ring_push(slot, p, len, (uint16_t)dev, DESC_PACKET, t, 0, 1);
    return Py_BuildValue("(iK)", slot, (unsigned long long)ring_rx_head(slot));
}

/* tick(slot, time) -> seq: advance a worker's clock (runs its expiries). */
static PyObject *py_tick(PyObject *self, PyObject *args) {
    int slot;
    unsigned long long t;
    if (!PyArg_ParseTuple(args, "iK", &slot, &t)) return NULL;
    if (check_ring_slot(slot) < 0) return NULL;
    ring_push(slot, NULL, 0, 0, DESC_TICK, t, 0, 1);
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
    uint64_t queued = 0, lost = 0, skipped = 0;
    Py_BEGIN_ALLOW_THREADS
    ring_feed_paced(rate, duration, &queued, &lost, &skipped);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(KKK)", (unsigned long long)queued, (unsigned long long)lost, (unsigned long long)skipped);
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

PyMethodDef bind_feed_methods[] = {
    {"migrated", py_migrated, METH_O, "migrated(slot) -> (packet sets moved in, dropped)"},
    {"set_laps", py_set_laps, METH_VARARGS, "set_laps(laps, lap_ns): walk the loaded trace `laps` times"},
    {"rings_setup", py_rings_setup, METH_VARARGS, NULL},
    {"load_trace", py_load_trace, METH_VARARGS, NULL},
    {"inject", py_inject, METH_VARARGS, NULL},
    {"tick", py_tick, METH_VARARGS, NULL},
    {"rx_done", py_rx_done, METH_O, NULL},
    {"rx_finished", py_rx_finished, METH_O, NULL},
    {"close_rx", py_close_rx, METH_NOARGS, NULL},
    {"load_pool", py_load_pool, METH_VARARGS, "load_pool(frames, devs): the paced generator's trace"},
    {"feed_paced", py_feed_paced, METH_VARARGS, "feed_paced(rate_pps, duration_s) -> (queued, lost, skipped)"},
    {"steer_frame", py_steer_frame, METH_VARARGS, "steer_frame(frame, dev) -> (worker, in_a_set, rss hash)"},
    {NULL, NULL, 0, NULL}};
