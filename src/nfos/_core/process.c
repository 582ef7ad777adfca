/* The per-process state (see process.h): the one struct several files share,
 * and its life cycle: module init, arena create / destroy, slot binding. */
#include "process.h"

#include <unistd.h>

Process proc = {.arena_gen = 1};

int proc_init(PyObject *m) {
    if (stm_tx_init(&proc.tx) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    proc.TransactionAborted = PyErr_NewExceptionWithDoc(
        "nfos.TransactionAborted",
        "Raised inside a handler when its transaction conflicts; the runtime retries it.  "
        "It derives from BaseException so that `except Exception` in NF code does not catch it.",
        PyExc_BaseException, NULL);
    proc.TableFull =
        PyErr_NewExceptionWithDoc("nfos.TableFull", "A fixed-capacity table is full.", PyExc_Exception, NULL);
    if (!proc.TransactionAborted || !proc.TableFull) return -1;
    if (PyModule_AddObjectRef(m, "TransactionAborted", proc.TransactionAborted) < 0) return -1;
    if (PyModule_AddObjectRef(m, "TableFull", proc.TableFull) < 0) return -1;
    return 0;
}

static void bind_slot(int s) {
    proc.slot = s;
    proc.me = proc.shared ? &proc.shared->slots[s] : NULL;
    stm_tx_bind(&proc.tx, proc.stm, (uint32_t)s, proc.me ? &proc.me->counters : NULL);
}

/* One anonymous shared mapping: inherited by fork at the same address. */
int proc_arena_create(unsigned long long size, unsigned int nslots) {
    if (proc.arena.base) {
        PyErr_SetString(PyExc_RuntimeError, "the arena already exists in this process");
        return -1;
    }
    if (nslots < 1 || nslots > NFOS_MAX_SLOTS) {
        PyErr_Format(PyExc_ValueError, "at most %d workers are supported", NFOS_MAX_SLOTS - 1);
        return -1;
    }
    if (arena_map(&proc.arena, (size_t)size) < 0) {
        PyErr_Format(PyExc_MemoryError, "cannot map a %llu-byte shared arena", size);
        return -1;
    }
    proc.shared = arena_alloc(&proc.arena, sizeof(ProcShared) + (size_t)nslots * sizeof(SlotShared), 4096);
    proc.stm = stm_shared_create(&proc.arena, nslots);
    if (!proc.shared || !proc.stm) {
        arena_unmap(&proc.arena);
        proc.shared = NULL;
        proc.stm = NULL;
        PyErr_Format(PyExc_MemoryError, "a %llu-byte arena is too small for %u slots", size, nslots);
        return -1;
    }
    proc.shared->nslots = nslots;
    proc.nslots = nslots;
    bind_slot(proc.slot < (int)nslots ? proc.slot : 0);
    return 0;
}

/* Forget the arena (a test harness loads many NFs in one process).  Views
 * and structures of the old NF are refused afterwards (arena generation). */
void proc_arena_destroy(void) {
    arena_unmap(&proc.arena);
    proc.shared = NULL;
    proc.stm = NULL;
    stm_tx_bind(&proc.tx, NULL, 0, NULL);   /* its undo log was in the arena */
    proc.nslots = 0;
    proc.arena_gen++;
    proc.clock = 0;
    bind_slot(0);
}

int proc_set_slot(long s) {
    if (!proc.shared || s < 0 || (uint32_t)s >= proc.nslots) {
        PyErr_SetString(PyExc_ValueError, "bad slot");
        return -1;
    }
    bind_slot((int)s);
    return 0;
}

void *proc_alloc(size_t size, size_t align) {
    if (!proc.arena.base) {
        PyErr_SetString(PyExc_RuntimeError, "nfos structures must be created while an NF is loaded");
        return NULL;
    }
    void *p = arena_alloc(&proc.arena, size, align);
    if (!p)
        PyErr_Format(PyExc_MemoryError,
                     "the shared arena is full: %zu more bytes requested, %llu of its %zu bytes in use "
                     "(structures, packet-set tables, rings and the replayed trace share it)",
                     size, (unsigned long long)arena_used(&proc.arena), arena_size(&proc.arena));
    return p;
}

int proc_set_devices(PyObject *names) {
    PyObject *index = PyDict_New();
    if (!index) return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *v = PyLong_FromSsize_t(i);
        if (!v || PyDict_SetItem(index, PyTuple_GET_ITEM(names, i), v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(index);
            return -1;
        }
        Py_DECREF(v);
    }
    Py_INCREF(names);
    Py_XSETREF(proc.dev_names, names);
    Py_XSETREF(proc.dev_index, index);
    proc.ndevs = (int)PyTuple_GET_SIZE(names);
    return 0;
}

/* Device name or index -> index; one dict lookup for names. */
int dev_lookup(PyObject *dev) {
    if (PyLong_Check(dev)) {
        long i = PyLong_AsLong(dev);
        if (i >= 0 && i < proc.ndevs) return (int)i;
    } else if (proc.dev_index) {
        PyObject *i = PyDict_GetItemWithError(proc.dev_index, dev);
        if (i) return (int)PyLong_AsLong(i);
        if (PyErr_Occurred()) return -1;
    }
    PyErr_Format(PyExc_ValueError, "unknown device %R (the NF's devices are %R)", dev,
                 proc.dev_names ? proc.dev_names : Py_None);
    return -1;
}

PyObject *proc_stm_error(void) {
    switch (proc.tx.fail) {
    case STM_INACTIVE:
        PyErr_SetString(PyExc_RuntimeError, "nfos structures can only be used inside a handler or @nf.init");
        break;
    case STM_DOOMED:
        PyErr_SetString(proc.TransactionAborted, "transaction already aborted");
        break;
    default:
        PyErr_SetString(proc.TransactionAborted, abort_cause_names[proc.tx.fail_cause]);
        break;
    }
    return NULL;
}

/* ------------------------------------------------------------ stop requests */

static uint64_t last_poll_ns;
static long parent_pid;

void proc_set_parent(long pid) { parent_pid = pid; }

int proc_stop_nogil(void) {
    if (proc_stopping()) return 1;
    return parent_pid && getppid() != (pid_t)parent_pid;
}

int proc_poll_stop(void) {
    if (proc_stopping()) return 1;
    uint64_t now = mono_ns();
    if (now - last_poll_ns < 1000000ull) return 0;
    last_poll_ns = now;
    if (parent_pid && getppid() != (pid_t)parent_pid) return 1;
    return PyErr_CheckSignals() < 0 ? -1 : 0;
}
