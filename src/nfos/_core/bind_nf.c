/* Bindings: the NF API inside handlers (register, emit, now), the runtime's
 * transactions and handler runs, and the error-line log. */
#include "bind.h"

/* register(pkt) -> state: create the packet set of the packet being handled
 * by the new-packet-set handler.  Raises TableFull when the worker's table
 * is full. */
static PyObject *py_register(PyObject *self, PyObject *pkt) {
    PktSlot *s = packet_slot(pkt);
    if (!s) {
        PyErr_SetString(PyExc_TypeError, "register() takes the packet being handled");
        return NULL;
    }
    return loop_register(s);
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
    if (!proc.tx.active) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_RuntimeError, "emit() is called from a handler");
        return NULL;
    }
    int r = loop_emit(b.buf, (uint32_t)b.len, mask);
    PyBuffer_Release(&b);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

/* run_in_tx(fn, *args) -> fn(*args), run in one transaction (retried; after
 * an abort, irrevocably). */
static PyObject *py_run_in_tx(PyObject *self, PyObject *args) {
    if (PyTuple_GET_SIZE(args) < 1) {
        PyErr_SetString(PyExc_TypeError, "run_in_tx(fn, *args)");
        return NULL;
    }
    if (proc.tx.active) {
        PyErr_SetString(PyExc_RuntimeError, "a transaction is already running");
        return NULL;
    }
    PyObject *fn = PyTuple_GET_ITEM(args, 0);
    PyObject *rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    if (!rest) return NULL;
    PyObject *r = loop_run_in_tx(fn, rest, HANDLER_TRANSACT, 0);
    Py_DECREF(rest);
    return r;
}

/* run_exit(fn) -> fn(): once, alone, in direct mode (no STM, no retries); its
 * output is published.  An exception propagates (its effects rolled back). */
static PyObject *py_run_exit(PyObject *self, PyObject *fn) {
    if (proc.tx.active) {
        PyErr_SetString(PyExc_RuntimeError, "a transaction is already running");
        return NULL;
    }
    if (!proc.stm) {
        PyErr_SetString(PyExc_RuntimeError, "create the arena first");
        return NULL;
    }
    PyObject *empty = PyTuple_New(0);
    if (!empty) return NULL;
    PyObject *r = loop_run_alone(fn, empty, HANDLER_EXIT, 0);
    Py_DECREF(empty);
    return r;
}

/* tx_text(stream, text) -> True if buffered with the running transaction's
 * output (written at its commit, dropped by an abort), False if no
 * transaction that could abort runs: the caller writes it through. */
static PyObject *py_tx_text(PyObject *self, PyObject *args) {
    int stream;
    PyObject *text;
    if (!PyArg_ParseTuple(args, "iU", &stream, &text)) return NULL;
    if (!proc.tx.active || proc.tx.mode == TX_UNLOGGED) Py_RETURN_FALSE;
    PyObject *b = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
    if (!b) return NULL;
    int r = loop_text(stream, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

/* progress(worker) -> the worker's published progress (replay barriers), 0 without. */
static PyObject *py_progress(PyObject *self, PyObject *arg) {
    long w = PyLong_AsLong(arg);
    if (w == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromUnsignedLongLong(loop_progress((int)w));
}

static PyObject *py_run_periodics(PyObject *self, PyObject *arg) {
    unsigned long long upto = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (loop_run_periodics(upto) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_sweep(PyObject *self, PyObject *noargs) {
    if (loop_sweep() < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_now(PyObject *self, PyObject *noargs) { return PyLong_FromUnsignedLongLong(proc.clock); }

static PyObject *py_set_clock(PyObject *self, PyObject *arg) {
    unsigned long long t = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (t > proc.clock) proc.clock = t;
    if (proc.me) proc.me->counters.clock_ns[0] = proc.clock;
    Py_RETURN_NONE;
}

static PyObject *py_tx_begin(PyObject *self, PyObject *args) {
    int mode = TX_DIRECT, irrevocable = 0;
    if (!PyArg_ParseTuple(args, "|ii", &mode, &irrevocable)) return NULL;
    if (proc.tx.active) {
        PyErr_SetString(PyExc_RuntimeError, "a transaction is already running");
        return NULL;
    }
    if (mode < TX_DIRECT || mode > TX_UNLOGGED) {
        PyErr_SetString(PyExc_ValueError, "mode is TX_DIRECT, TX_STM or TX_UNLOGGED");
        return NULL;
    }
    if (mode == TX_STM && !proc.stm) {
        PyErr_SetString(PyExc_RuntimeError, "create the arena first");
        return NULL;
    }
    loop_tx_begin(mode, irrevocable);
    Py_RETURN_NONE;
}

static PyObject *py_tx_commit(PyObject *self, PyObject *noargs) {
    if (!proc.tx.active) Py_RETURN_FALSE;
    return PyBool_FromLong(loop_tx_commit() == 0);
}

static PyObject *py_tx_abort(PyObject *self, PyObject *noargs) {
    if (proc.tx.active) stm_abort(&proc.tx);
    Py_RETURN_NONE;
}

static PyObject *py_tx_active(PyObject *self, PyObject *noargs) { return PyBool_FromLong(proc.tx.active); }

static PyObject *py_tx_doomed(PyObject *self, PyObject *noargs) { return PyBool_FromLong(proc.tx.doomed); }

static PyObject *py_set_site(PyObject *self, PyObject *arg) {
    proc.tx.site = (uint32_t)PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* first_error_at(key) -> True the first time an error at this site (a hash
 * of file:line) is seen by any process of the run. */
static PyObject *py_first_error_at(PyObject *self, PyObject *arg) {
    uint64_t h = PyLong_AsUnsignedLongLongMask(arg) | 1;
    if (PyErr_Occurred()) return NULL;
    if (!proc.shared) Py_RETURN_TRUE;
    for (unsigned i = 0; i < ERROR_SITES; i++) {
        _Atomic uint64_t *cell = &proc.shared->error_sites[(h + i) % ERROR_SITES];
        uint64_t cur = atomic_load(cell);
        if (cur == h) Py_RETURN_FALSE;
        if (cur == 0) {
            uint64_t zero = 0;
            if (atomic_compare_exchange_strong(cell, &zero, h)) Py_RETURN_TRUE;
            if (zero == h) Py_RETURN_FALSE;
        }
    }
    Py_RETURN_FALSE;
}

/* probe(frame, dev, fn) -> (fn's result, frame after, out, flags, in_a_set, key, worker,
 * (l3, l4, payload offsets)):
 * INTERNAL, a test hook (the fuzzers, tests/fuzz): the frame is copied into a
 * buffer of exactly its length (so a sanitizer sees any read past its end),
 * parsed, its key extracted and steered as the configured NF would, and
 * fn(pkt) runs on its packet view in one direct transaction, committed. */
static PyObject *py_probe(PyObject *self, PyObject *args) {
    Py_buffer b;
    int dev;
    PyObject *fn;
    if (!PyArg_ParseTuple(args, "y*iO", &b, &dev, &fn)) return NULL;
    if (dev < 0 || dev >= proc.ndevs || proc.tx.active) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, proc.tx.active ? "probe() runs outside a transaction" : "bad device index");
        return NULL;
    }
    uint8_t *buf = PyMem_RawMalloc(b.len ? (size_t)b.len : 1);
    if (!buf) {
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    memcpy(buf, b.buf, (size_t)b.len);
    PktSlot s;
    memset(&s, 0, sizeof s);
    s.data = buf;
    s.len = (uint32_t)b.len;
    s.dev = (uint16_t)dev;
    s.out = -1;
    PyBuffer_Release(&b);
    pkt_parse(&s);
    set_key_extract(&s);
    int worker = steer_worker(&s);
    PyObject *r = NULL, *out = NULL;
    if (!(s.flags & PF_MALFORMED) && fn != Py_None) {
        loop_tx_begin(TX_DIRECT, 0);
        PyObject *pkt = packet_new(&s);
        if (pkt) {
            r = PyObject_CallOneArg(fn, pkt);
            packet_invalidate(pkt);
            Py_DECREF(pkt);
        }
        if (!r) {
            PyObject *exc = nfos_fetch_exc();
            stm_abort(&proc.tx);
            nfos_restore_exc(exc);
            goto done;
        }
        stm_commit(&proc.tx);
    } else {
        r = Py_NewRef(Py_None);
    }
    out = Py_BuildValue("(Oy#iiiy#i(iii))", r, (const char *)buf, (Py_ssize_t)s.len, (int)s.out, (int)s.flags,
                        (int)s.has_set, (const char *)s.key, (Py_ssize_t)s.keylen, worker, (int)s.l3, (int)s.l4,
                        (int)s.payload);
done:
    Py_XDECREF(r);
    PyMem_RawFree(buf);
    return out;
}

/* own_methods(cls): give the structure class `cls` (a Python subclass of a
 * C structure type) its own descriptors of the C type's methods.  CPython's
 * specialised call of a C method (3.11: PRECALL_NO_KW_METHOD_DESCRIPTOR_*)
 * requires the instance's type to be exactly the type the descriptor was
 * made for; with the C base's descriptors every `table.get(k)` on a Map
 * instance falls back to the generic call.  Methods the class (or a Python
 * class between it and the C type) defines itself are left alone. */
static PyObject *py_own_methods(PyObject *self, PyObject *cls) {
    if (!PyType_Check(cls)) return PyErr_Format(PyExc_TypeError, "own_methods(cls): a class");
    PyTypeObject *t = (PyTypeObject *)cls;
    PyObject *mro = t->tp_mro;
    for (Py_ssize_t i = 1; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (base == &PyBaseObject_Type || !base->tp_methods) continue;   /* Python classes have none */
        for (PyMethodDef *d = base->tp_methods; d->ml_name; d++) {
            if (d->ml_flags & (METH_CLASS | METH_STATIC)) continue;
            PyObject *name = PyUnicode_FromString(d->ml_name);
            if (!name) return NULL;
            PyObject *found = _PyType_Lookup(t, name);   /* borrowed */
            int inherited = found && Py_IS_TYPE(found, &PyMethodDescr_Type) &&
                            ((PyMethodDescrObject *)found)->d_method == d;
            int r = 0;
            if (inherited) {
                PyObject *descr = PyDescr_NewMethod(t, d);
                r = descr ? PyObject_SetAttr(cls, name, descr) : -1;
                Py_XDECREF(descr);
            }
            Py_DECREF(name);
            if (r < 0) return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* record_type_ready(cls): a Record class's instances leave the cyclic GC (record.c). */
static PyObject *py_record_type_ready(PyObject *self, PyObject *cls) {
    if (!PyType_Check(cls)) return PyErr_Format(PyExc_TypeError, "record_type_ready(cls): a class");
    int r = record_type_untrack((PyTypeObject *)cls);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

PyMethodDef bind_nf_methods[] = {
    {"probe", py_probe, METH_VARARGS, "INTERNAL test hook: probe(frame, dev, fn) (tests/fuzz)"},
    {"record_type_ready", py_record_type_ready, METH_O, "a Record class's views leave the cyclic GC"},
    {"own_methods", py_own_methods, METH_O, "own_methods(cls): cls gets its own descriptors of its C base's methods"},
    {"register", py_register, METH_O, NULL},
    {"emit", py_emit, METH_VARARGS, NULL},
    {"run_in_tx", py_run_in_tx, METH_VARARGS, NULL},
    {"run_exit", py_run_exit, METH_O, "run_exit(fn): fn() once, alone, in direct mode"},
    {"tx_text", py_tx_text, METH_VARARGS, "tx_text(stream, text) -> buffered with the transaction?"},
    {"progress", py_progress, METH_O, "progress(worker) -> its published progress (ns)"},
    {"run_periodics", py_run_periodics, METH_O, NULL},
    {"sweep", py_sweep, METH_NOARGS, NULL},
    {"now", py_now, METH_NOARGS, "virtual or monotonic time of this process, in ns"},
    {"set_clock", py_set_clock, METH_O, "advance this process's clock (ns)"},
    {"tx_begin", py_tx_begin, METH_VARARGS, "tx_begin(mode=DIRECT, irrevocable=0)"},
    {"tx_commit", py_tx_commit, METH_NOARGS, "commit; False if it aborted"},
    {"tx_abort", py_tx_abort, METH_NOARGS, "roll back the running transaction"},
    {"tx_active", py_tx_active, METH_NOARGS, NULL},
    {"tx_doomed", py_tx_doomed, METH_NOARGS, NULL},
    {"set_site", py_set_site, METH_O, NULL},
    {"first_error_at", py_first_error_at, METH_O, NULL},
    {NULL, NULL, 0, NULL}};
