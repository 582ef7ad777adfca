/* Bindings: the TX side of the replay rings, drained by the control process. */
#include "bind.h"

static int tx_slot(long slot) {
    if (!ring_ready() || slot < 0 || (uint32_t)slot >= proc.nslots) {
        PyErr_SetString(PyExc_ValueError, "bad slot (or no rings)");
        return -1;
    }
    return 0;
}

static int append_frame(PyObject *out, const RingFrame *f) {
    PyObject *item = Py_BuildValue("(Iy#KII)", f->devmask, (const char *)f->frame, (Py_ssize_t)f->len,
                                   (unsigned long long)f->time, f->indev, f->wire);
    if (!item || PyList_Append(out, item) < 0) {
        Py_XDECREF(item);
        return -1;
    }
    Py_DECREF(item);
    return 0;
}

/* drain_tx(slot) -> list of (devmask, frame bytes, time, indev, wire length): the
 * ring's records, then those this process spilled (pktio_ring.c). */
static PyObject *py_drain_tx(PyObject *self, PyObject *arg) {
    long slot = PyLong_AsLong(arg);
    if ((slot == -1 && PyErr_Occurred()) || tx_slot(slot) < 0) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    uint64_t at = ring_tx_tail((int)slot), head = ring_tx_head((int)slot);
    RingFrame f;
    while (at < head) {
        if (!ring_tx_next((int)slot, &at, &f)) continue;
        if (append_frame(out, &f) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    for (uint64_t sp = 0; ring_tx_spill_next((int)slot, &sp, &f);)
        if (append_frame(out, &f) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    ring_tx_release((int)slot, at);
    ring_tx_spill_clear((int)slot);
    return out;
}

/* drain_tx_pcap(slot, ndevs) -> list of bytes per device: ready-made pcap
 * records (nanosecond format; a cut frame keeps its wire length), so the control process writes each device's
 * output with one write() instead of one Python call per frame. */
static PyObject *py_drain_tx_pcap(PyObject *self, PyObject *args) {
    int slot, ndevs;
    if (!PyArg_ParseTuple(args, "ii", &slot, &ndevs)) return NULL;
    if (ndevs < 1 || ndevs > NFOS_MAX_DEVS) return PyErr_Format(PyExc_ValueError, "bad device count");
    if (tx_slot(slot) < 0) return NULL;
    uint64_t tail = ring_tx_tail(slot), head = ring_tx_head(slot);
    size_t need[NFOS_MAX_DEVS] = {0};
    RingFrame f;
    for (uint64_t at = tail; at < head;) {
        if (!ring_tx_next(slot, &at, &f)) continue;
        for (int d = 0; d < ndevs; d++)
            if (f.devmask >> d & 1) need[d] += 16 + f.len;
    }
    for (uint64_t sp = 0; ring_tx_spill_next(slot, &sp, &f);)
        for (int d = 0; d < ndevs; d++)
            if (f.devmask >> d & 1) need[d] += 16 + f.len;
    PyObject *out = PyList_New(ndevs);
    if (!out) return NULL;
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
    uint64_t at = tail, sp = 0;
    for (;;) {
        if (at < head) {
            if (!ring_tx_next(slot, &at, &f)) continue;
        } else if (!ring_tx_spill_next(slot, &sp, &f)) {
            break;
        }
        uint32_t hdr[4] = {(uint32_t)(f.time / 1000000000ull), (uint32_t)(f.time % 1000000000ull), f.len, f.wire};
        for (int d = 0; d < ndevs; d++)
            if (f.devmask >> d & 1) {
                memcpy(w[d], hdr, 16);
                memcpy(w[d] + 16, f.frame, f.len);
                w[d] += 16 + f.len;
            }
    }
    ring_tx_release(slot, head);
    ring_tx_spill_clear(slot);
    return out;
}

PyMethodDef bind_output_methods[] = {
    {"drain_tx", py_drain_tx, METH_O, NULL},
    {"drain_tx_pcap", py_drain_tx_pcap, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};
