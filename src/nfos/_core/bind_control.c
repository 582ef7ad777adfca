/* Bindings: the arena, configuration, slots, the start/stop handshake,
 * crash recovery. */
#include "bind.h"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

int bind_slot_arg(PyObject *arg, long *slot) {
    long s = PyLong_AsLong(arg);
    if (s == -1 && PyErr_Occurred()) return -1;
    if (!proc.shared || s < 0 || (uint32_t)s >= proc.nslots) {
        PyErr_SetString(PyExc_ValueError, "bad slot");
        return -1;
    }
    *slot = s;
    return 0;
}

/* die_with_parent(parent_pid=0): a forked worker dies with its control
 * process (no orphans left behind).  A parent that died before the request
 * took effect is seen by the check that follows it (this process was
 * reparented): leave at once.  Long C loops also stop when the parent is
 * gone.  Call it again after a change of user (the request is cleared). */
static PyObject *py_die_with_parent(PyObject *self, PyObject *args) {
    long parent = 0;
    if (!PyArg_ParseTuple(args, "|l", &parent)) return NULL;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    if (parent) {
        if (getppid() != (pid_t)parent) _exit(1);
        proc_set_parent(parent);
    }
    Py_RETURN_NONE;
}

/* arena_create(size, nslots): one anonymous shared mapping, inherited by
 * fork at the same address, never named, backed only when touched. */
static PyObject *py_arena_create(PyObject *self, PyObject *args) {
    unsigned long long size;
    unsigned int nslots;
    if (!PyArg_ParseTuple(args, "KI", &size, &nslots)) return NULL;
    if (proc_arena_create(size, nslots) < 0) return NULL;
    Py_RETURN_NONE;
}

/* arena_destroy(): forget the NF and its arena (a test harness loads many
 * NFs in one process); its views and structures are refused afterwards. */
static PyObject *py_arena_destroy(PyObject *self, PyObject *noargs) {
    if (!proc.arena.base) Py_RETURN_NONE;
    if (proc.tx.active) {
        PyErr_SetString(PyExc_RuntimeError, "cannot destroy the arena inside a transaction");
        return NULL;
    }
    watchdog_stop();
    loop_reset();
    ring_reset();
    steer_reset();
    pst_select(-1);
    profile_configure(0, NULL);
    proc.local = 0;
    proc_arena_destroy();
    Py_RETURN_NONE;
}

static PyObject *py_arena_used(PyObject *self, PyObject *noargs) {
    return PyLong_FromUnsignedLongLong(arena_used(&proc.arena));
}

static PyObject *py_set_slot(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if (s == -1 && PyErr_Occurred()) return NULL;
    if (proc_set_slot(s) < 0) return NULL;
    Py_RETURN_NONE;
}

/* attach(slot): this process becomes `slot` (after fork), with its table.
 * Its thread name becomes "nfos-w<slot>", so perf, top and py-spy show the
 * workers apart from the control process. */
static PyObject *py_attach(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if (s == -1 && PyErr_Occurred()) return NULL;
    if (proc_set_slot(s) < 0) return NULL;
    pst_select(proc.slot);
    char name[16];
    snprintf(name, sizeof name, "nfos-w%ld", s);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    Py_RETURN_NONE;
}

static PyObject *py_set_devices(PyObject *self, PyObject *names) {
    if (!PyTuple_Check(names) || PyTuple_GET_SIZE(names) < 1 || PyTuple_GET_SIZE(names) > NFOS_MAX_DEVS) {
        PyErr_Format(PyExc_ValueError, "devices: a tuple of 1..%d names", NFOS_MAX_DEVS);
        return NULL;
    }
    if (proc_set_devices(names) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *handler(PyObject *handlers, const char *name) {
    PyObject *h = PyDict_GetItemString(handlers, name);
    return h && h != Py_None ? h : NULL;
}

/* configure(...): the NF's runtime configuration, before the fork. */
static PyObject *py_configure(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"nworkers", "defs", "proto_mask", "state_type", "state_size", "capacity",
                             "expiry_ns", "batch", "handlers", "collect_output", "local", "rss_key",
                             "profile", "nf_file", "sync", "max_drift_ns", NULL};
    int nworkers, batch, collect, local, profile = 0, sync = 0;
    PyObject *defs, *state_type, *handlers, *rss_key, *nf_file = Py_None;
    unsigned int proto_mask, state_size, capacity;
    unsigned long long expiry, max_drift = 1000000;
    int ok = PyArg_ParseTupleAndKeywords(args, kw, "iO!IOIIKiO!ppO|pOpK", kwlist, &nworkers, &PyList_Type, &defs,
                                         &proto_mask, &state_type, &state_size, &capacity, &expiry, &batch,
                                         &PyDict_Type, &handlers, &collect, &local, &rss_key, &profile,
                                         &nf_file, &sync, &max_drift);
    if (!ok) return NULL;
    if (!proc.shared) {
        PyErr_SetString(PyExc_RuntimeError, "create the arena first");
        return NULL;
    }
    if (batch < 1 || batch > NFOS_BATCH_MAX) {
        PyErr_Format(PyExc_ValueError, "batch size must be 1..%d", NFOS_BATCH_MAX);
        return NULL;
    }
    if (PyList_GET_SIZE(defs) != proc.ndevs) {
        PyErr_SetString(PyExc_ValueError, "one packet-set definition (or None) per device");
        return NULL;
    }
    if (state_type != Py_None && !PyType_Check(state_type)) {
        PyErr_SetString(PyExc_TypeError, "state_type is a Record type or None");
        return NULL;
    }
    DevSetDef sets[NFOS_MAX_DEVS];
    memset(sets, 0, sizeof sets);
    int has_sets = 0;
    for (int d = 0; d < proc.ndevs; d++) {
        PyObject *fl = PyList_GET_ITEM(defs, d);
        if (fl == Py_None) continue;
        if (!PyList_Check(fl) || PyList_GET_SIZE(fl) > STEER_MAX_FIELDS) {
            PyErr_Format(PyExc_ValueError, "a definition is a list of at most %d field ids", STEER_MAX_FIELDS);
            return NULL;
        }
        sets[d].defined = 1;
        sets[d].nfields = (int)PyList_GET_SIZE(fl);
        for (int i = 0; i < sets[d].nfields; i++) {
            long f = PyLong_AsLong(PyList_GET_ITEM(fl, i));
            if (f == -1 && PyErr_Occurred()) return NULL;
            sets[d].fields[i] = (uint8_t)f;
        }
        has_sets = 1;
    }
    LoopConfig lc;
    memset(&lc, 0, sizeof lc);
    lc.h_new = handler(handlers, "new_packet_set");
    lc.h_packet = handler(handlers, "packet");
    lc.h_expired = handler(handlers, "expired");
    lc.h_orphan = handler(handlers, "orphan");
    lc.h_malformed = handler(handlers, "malformed");
    lc.h_error = handler(handlers, "error");
    PyObject *per = handler(handlers, "periodic");
    if (per) {
        if (!PyList_Check(per)) {
            PyErr_SetString(PyExc_TypeError, "handlers['periodic'] is a list of (fn, interval, first)");
            return NULL;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(per) && i < LOOP_MAX_PERIODIC; i++) {
            PyObject *fn;
            unsigned long long interval, first;
            if (!PyArg_ParseTuple(PyList_GET_ITEM(per, i), "OKK", &fn, &interval, &first)) return NULL;
            lc.periodics[lc.nperiodic].fn = fn;
            lc.periodics[lc.nperiodic].interval = interval ? interval : 1;
            lc.periodics[lc.nperiodic].next = first;
            lc.nperiodic++;
        }
    }
    lc.state_type = state_type == Py_None ? NULL : (PyTypeObject *)state_type;
    lc.state_size = state_size;
    lc.expiry_ns = expiry;
    lc.batch = batch;
    lc.has_sets = has_sets;
    lc.sync = sync;
    lc.max_drift_ns = max_drift;
    Py_buffer key = {0};
    if (rss_key != Py_None) {
        if (PyObject_GetBuffer(rss_key, &key, PyBUF_SIMPLE) < 0) return NULL;
        if (key.len < 4) {
            PyBuffer_Release(&key);
            PyErr_SetString(PyExc_ValueError, "an RSS key has at least 4 bytes");
            return NULL;
        }
    }
    proc.nworkers = nworkers;
    proc.local = local;
    steer_configure(sets, proc.ndevs, proto_mask, rss_key != Py_None ? key.buf : NULL, (int)key.len, nworkers);
    if (rss_key != Py_None) PyBuffer_Release(&key);
    if (loop_configure(&lc) < 0) return NULL;
    ring_collect_output(collect);
    profile_configure(profile, nf_file);
    if (has_sets && pst_alloc_all(proc.nslots, capacity, state_size) < 0) return NULL;
    pst_select(proc.slot);
    Py_RETURN_NONE;
}

/* worker_run(budget, spin=1000) -> input processed, or -1 once the input is
 * finished or the run stopped. */
static PyObject *py_worker_run(PyObject *self, PyObject *args) {
    long long budget;
    int spin = 1000;
    if (!PyArg_ParseTuple(args, "L|i", &budget, &spin)) return NULL;
    long long r = loop_run(budget, spin);
    if (r == -2) return NULL;
    return PyLong_FromLongLong(r);
}

/* prefault(): map this process's view of the trace, its RX ring and every
 * other backed page of the arena before the clock starts. */
static PyObject *py_prefault(PyObject *self, PyObject *noargs) {
    if (ring_ready()) ring_prefault(proc.slot);
    return PyLong_FromSize_t(arena_prefault(&proc.arena));   /* and whatever else is backed */
}

/* realtime(on): this worker serves traffic as it comes (paced, live): bounded
 * expiry sweeps (one batch of handlers per advance, the rest when idle), and
 * an idle poll never yields its CPU (replay rings). */
static PyObject *py_realtime(PyObject *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    loop_set_sweep_limit(on ? 1 : 0);
    ring_set_busy_poll(on);
    Py_RETURN_NONE;
}

static PyObject *py_start_ns(PyObject *self, PyObject *noargs) {
    return PyLong_FromUnsignedLongLong(proc.shared ? proc.shared->start_ns : 0);
}

static PyObject *py_wait_start(PyObject *self, PyObject *noargs) {
    ProcShared *sh = proc.shared;
    if (!sh) Py_RETURN_NONE;
    /* Yield rather than sleep: the start signal is timed, a sleeping worker
     * would add its wake-up latency to the measured processing time. */
    Py_BEGIN_ALLOW_THREADS
    atomic_fetch_add(&sh->ready, 1);
    uint64_t t0 = mono_ns();
    for (unsigned spins = 0; !atomic_load(&sh->start); spins++) {
        if (spins % 256 == 255 && proc_stop_nogil()) break;   /* the control process is gone */
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
    ProcShared *sh = proc.shared;
    if (!sh) Py_RETURN_NONE;
    uint64_t t0 = mono_ns();
    while (atomic_load(&sh->ready) < n && mono_ns() - t0 < 10000000000ull) {
        Py_BEGIN_ALLOW_THREADS
        for (int i = 0; i < 20 && atomic_load(&sh->ready) < n; i++) usleep(100);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) return NULL;   /* Ctrl-C while a worker is slow to start */
    }
    sh->start_ns = mono_ns();
    atomic_store(&sh->start, 1);
    Py_RETURN_NONE;
}

static PyObject *py_stop_workers(PyObject *self, PyObject *noargs) {
    if (proc.shared && ring_ready()) {
        atomic_store(&proc.shared->stop, 1);
        atomic_store(&proc.shared->start, 1);   /* a worker still waiting to start leaves too */
    }
    Py_RETURN_NONE;
}

/* recover_slot(slot): finish a dead slot's commit from its redo log, release
 * its locks and irrevocable token -> objects replayed. */
/* A dead slot: roll back its transaction's private writes (its packet-set
 * table selected while its undo callbacks run), release its locks, complete
 * or discard its commit, reopen a barrier it was leading.  -2: its undo log
 * had overflowed into its private memory (not rolled back). */
static long recover(long s) {
    pst_select((int)s);
    int undo = stm_recover_undo(proc.stm, (uint32_t)s, proc.arena.base, proc.arena.end);
    pst_select(proc.slot);
    long replayed = stm_recover_slot(proc.stm, (uint32_t)s);
    loop_recover((int)s);
    return undo < 0 ? -2 : replayed;
}

static PyObject *py_recover_slot(PyObject *self, PyObject *arg) {
    long s;
    if (bind_slot_arg(arg, &s) < 0) return NULL;
    long r = recover(s);
    return PyLong_FromLong(r < 0 ? 0 : r);
}

/* respawn(slot) -> packets lost: before a dead worker's replacement is forked:
 * recover the slot (above), skip the batch it had taken on its RX ring (the
 * packets of it not committed are lost) and count them and the respawn. */
static PyObject *py_respawn(PyObject *self, PyObject *arg) {
    long s;
    if (bind_slot_arg(arg, &s) < 0) return NULL;
    int completed = atomic_load(&proc.stm->slots[s].redo_state) == REDO_WRITING;
    if (recover(s) == -2)
        return PyErr_Format(PyExc_RuntimeError, "worker %ld died in a transaction whose undo log outgrew the "
                            "shared arena's %u bytes: its private writes cannot be rolled back", s,
                            (unsigned)UNDO_SHARED_BYTES);
    SlotCounters *c = &proc.shared->slots[s].counters;
    uint64_t lost = ring_ready() ? ring_rx_recover((int)s, c, completed) : 0;
    if (afp_active()) lost += afp_recover((int)s);
    c->packets_lost[0] += lost;
    c->respawns[0]++;
    atomic_store(&proc.shared->slots[s].hb_handler, 0);
    return PyLong_FromUnsignedLongLong(lost);
}

/* _die_in_commit(n) (an internal test hook): this process SIGKILLs itself in
 * the write-back of its n-th writing commit from now, after the first object
 * is written back and before the others (0: off).  Inherited by fork. */
static long die_after;
static void die_hook(StmTx *tx, void *arg) {
    (void)tx;
    (void)arg;
    if (die_after > 0 && --die_after == 0) kill(getpid(), SIGKILL);
}

static PyObject *py_die_in_commit(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    die_after = n > 0 ? n : 0;
    proc.tx.fault_hook = die_after ? die_hook : NULL;
    Py_RETURN_NONE;
}

/* resume(): a replacement worker, after attach(): go on where the dead one stopped. */
static PyObject *py_resume(PyObject *self, PyObject *noargs) {
    loop_resume();
    Py_RETURN_NONE;
}

/* heartbeat(slot) -> (handler code, handler calls): what the watchdog reads. */
static PyObject *py_heartbeat(PyObject *self, PyObject *arg) {
    long s;
    if (bind_slot_arg(arg, &s) < 0) return NULL;
    SlotShared *me = &proc.shared->slots[s];
    return Py_BuildValue("(IK)", (unsigned)atomic_load(&me->hb_handler), (unsigned long long)atomic_load(&me->hb_calls));
}

/* watchdog_start(seconds, nslots, names: dict[code, str]): name on stderr a
 * slot stuck in one handler call for `seconds` (watchdog.c). */
static PyObject *py_watchdog_start(PyObject *self, PyObject *args) {
    double seconds;
    int nslots;
    PyObject *names;
    if (!PyArg_ParseTuple(args, "diO!", &seconds, &nslots, &PyDict_Type, &names)) return NULL;
    if (!(seconds > 0)) return PyErr_Format(PyExc_ValueError, "the watchdog's time is > 0 s");
    const char *cn[WATCHDOG_CODES] = {0};
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(names, &pos, &k, &v)) {
        long code = PyLong_AsLong(k);
        if (code == -1 && PyErr_Occurred()) return NULL;
        if (code < 0 || code >= WATCHDOG_CODES) return PyErr_Format(PyExc_ValueError, "bad handler code %ld", code);
        cn[code] = PyUnicode_AsUTF8(v);
        if (!cn[code]) return NULL;
    }
    if (watchdog_start((uint64_t)(seconds * 1e9), nslots, cn) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_watchdog_stop(PyObject *self, PyObject *noargs) {
    Py_BEGIN_ALLOW_THREADS
    watchdog_stop();
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_watchdog_reports(PyObject *self, PyObject *noargs) {
    return PyLong_FromUnsignedLongLong(watchdog_reports());
}

PyMethodDef bind_control_methods[] = {
    {"die_with_parent", py_die_with_parent, METH_VARARGS, "die_with_parent(parent_pid=0)"},
    {"heartbeat", py_heartbeat, METH_O, "heartbeat(slot) -> (handler code, handler calls)"},
    {"watchdog_start", py_watchdog_start, METH_VARARGS, "watchdog_start(seconds, nslots, names)"},
    {"watchdog_stop", py_watchdog_stop, METH_NOARGS, NULL},
    {"watchdog_reports", py_watchdog_reports, METH_NOARGS, NULL},
    {"arena_create", py_arena_create, METH_VARARGS, "arena_create(size, nslots)"},
    {"arena_destroy", py_arena_destroy, METH_NOARGS, "unmap the arena (after the run)"},
    {"arena_used", py_arena_used, METH_NOARGS, "bytes of the arena in use"},
    {"set_slot", py_set_slot, METH_O, "set this process's slot"},
    {"attach", py_attach, METH_O, NULL},
    {"set_devices", py_set_devices, METH_O, "set the NF's device names (tuple)"},
    {"configure", (PyCFunction)(void (*)(void))py_configure, METH_VARARGS | METH_KEYWORDS, NULL},
    {"worker_run", py_worker_run, METH_VARARGS, NULL},
    {"wait_start", py_wait_start, METH_NOARGS, NULL},
    {"signal_start", py_signal_start, METH_VARARGS, "signal_start(workers=0): start them once they are ready"},
    {"prefault", py_prefault, METH_NOARGS, "map the trace, the RX ring and every backed arena page: pages mapped"},
    {"realtime", py_realtime, METH_O, "realtime(on): bounded expiry sweeps (paced, live)"},
    {"start_ns", py_start_ns, METH_NOARGS, NULL},
    {"stop_workers", py_stop_workers, METH_NOARGS, "ask every worker to stop after its current batch"},
    {"recover_slot", py_recover_slot, METH_O, "finish a dead slot's commit, release its locks"},
    {"respawn", py_respawn, METH_O, "respawn(slot) -> packets lost: recover a dead worker's slot for its replacement"},
    {"_die_in_commit", py_die_in_commit, METH_O, NULL},
    {"resume", py_resume, METH_NOARGS, "a replacement worker continues where the dead one stopped"},
    {NULL, NULL, 0, NULL}};
