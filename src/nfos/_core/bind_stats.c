/* Bindings: the counters (counters.def), the conflict records, the latency
 * histogram and the workers' memory. */
#include "bind.h"

_Static_assert(ABORT_NCAUSES != NFOS_MAX_DEVS, "counter arrays are told apart by their length");

/* One counter of a slot as Python: an int, a list per device, or {cause: n}. */
static PyObject *counter_value(const SlotCounters *c, const CounterInfo *ci) {
    const uint64_t *v = (const uint64_t *)((const char *)c + ci->offset);
    if (ci->length == 1) return PyLong_FromUnsignedLongLong(v[0]);
    if (ci->length == ABORT_NCAUSES) {
        PyObject *d = PyDict_New();
        for (int k = 0; d && k < ABORT_NCAUSES; k++) {
            PyObject *n = PyLong_FromUnsignedLongLong(v[k]);
            if (!n || PyDict_SetItemString(d, abort_cause_names[k], n) < 0) Py_CLEAR(d);
            Py_XDECREF(n);
        }
        return d;
    }
    int len = proc.ndevs < (int)ci->length ? proc.ndevs : (int)ci->length;
    PyObject *l = PyList_New(len);
    for (int k = 0; l && k < len; k++) {
        PyObject *n = PyLong_FromUnsignedLongLong(v[k]);
        if (!n) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, k, n);
    }
    return l;
}

/* The counters of `slot` whose aggregation is in `aggs` (a bit per AGG_*). */
static PyObject *counters_dict(long slot, unsigned aggs) {
    const SlotCounters *c = &proc.shared->slots[slot].counters;
    PyObject *out = PyDict_New();
    for (int i = 0; out && i < NCOUNTERS; i++) {
        const CounterInfo *ci = &counter_table[i];
        if (!(aggs >> ci->aggregation & 1)) continue;
        PyObject *v = counter_value(c, ci);
        if (!v || PyDict_SetItemString(out, ci->name, v) < 0) Py_CLEAR(out);
        Py_XDECREF(v);
    }
    return out;
}

/* slot_stats(slot) -> {counter: value} for every counter of counters.def. */
static PyObject *py_slot_stats(PyObject *self, PyObject *arg) {
    long s;
    if (bind_slot_arg(arg, &s) < 0) return NULL;
    return counters_dict(s, 0xf);
}

/* live_stats(slot) -> the live-interface counters of a slot (aggregation LIVE). */
static PyObject *py_live_stats(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if (s == -1 && PyErr_Occurred()) return NULL;
    if (!afp_active() || s < 0 || (uint32_t)s >= proc.nslots)
        return PyErr_Format(PyExc_ValueError, "bad slot (or no live run)");
    return counters_dict(s, 1u << AGG_LIVE);
}

/* conflicts(slot, since=0) -> (records, cursor, lost): the conflict records
 * of a slot after `since` (pass the returned cursor next time).  `lost` counts
 * records overwritten before they were read (the ring holds CONFLICT_RING). */
static PyObject *py_conflicts(PyObject *self, PyObject *args) {
    PyObject *slot;
    unsigned long long since = 0;
    long s;
    if (!PyArg_ParseTuple(args, "O|K", &slot, &since)) return NULL;
    if (bind_slot_arg(slot, &s) < 0) return NULL;
    uint64_t cursor, lost;
    PyObject *recs = profile_conflicts((uint32_t)s, since, &cursor, &lost);
    if (!recs) return NULL;
    return Py_BuildValue("(NKK)", recs, (unsigned long long)cursor, (unsigned long long)lost);
}

/* latency_hist(slot) -> counts per log-linear bucket (16 per power of two, ns). */
static PyObject *py_latency_hist(PyObject *self, PyObject *arg) {
    long s;
    if (bind_slot_arg(arg, &s) < 0) return NULL;
    PyObject *out = PyList_New(LAT_BUCKETS);
    for (int b = 0; out && b < LAT_BUCKETS; b++) {
        PyObject *n = PyLong_FromUnsignedLongLong(proc.shared->slots[s].lat_hist[b]);
        if (!n) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, b, n);
    }
    return out;
}

/* record_memory(peak_rss_kb, pss_kb): a worker's memory use, reported at exit. */
static PyObject *py_record_memory(PyObject *self, PyObject *args) {
    unsigned long long rss, pss;
    if (!PyArg_ParseTuple(args, "KK", &rss, &pss)) return NULL;
    if (proc.me) {
        proc.me->counters.peak_rss_kb[0] = rss;
        proc.me->counters.pss_kb[0] = pss;
    }
    Py_RETURN_NONE;
}

PyMethodDef bind_stats_methods[] = {
    {"slot_stats", py_slot_stats, METH_O, "slot_stats(slot) -> {counter: value} (counters.def)"},
    {"live_stats", py_live_stats, METH_O, "live_stats(slot) -> the live-interface counters"},
    {"conflicts", py_conflicts, METH_VARARGS, "conflicts(slot, since=0) -> (records, cursor, lost)"},
    {"latency_hist", py_latency_hist, METH_O, "latency_hist(slot) -> counts per log-linear bucket"},
    {"record_memory", py_record_memory, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};
