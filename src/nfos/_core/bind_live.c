/* Bindings: live interfaces (pktio_afpacket.c).  live_setup() makes
 * AF_PACKET this process's packet I/O (inherited by the workers), and
 * live_close() puts the replay rings back. */
#include "bind.h"

/* live_setup(nworkers, frame_size=2048, block_size=256 KiB, block_nr=16, offloads=True):
 * in the control process, before the fork.  offloads: frames carry the
 * kernel's offload metadata (PACKET_VNET_HDR: GSO super-frames, checksums
 * left to offload); False on kernels without it. */
static PyObject *py_live_setup(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"nworkers", "frame_size", "block_size", "block_nr", "offloads", NULL};
    unsigned int nworkers, frame_size = 2048, block_size = 1u << 18, block_nr = 16;
    int offloads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "I|IIIp", kwlist, &nworkers, &frame_size, &block_size, &block_nr,
                                     &offloads))
        return NULL;
    if (afp_setup(nworkers, frame_size, block_size, block_nr, offloads) < 0) return NULL;
    loop_set_io(&pktio_afpacket);
    Py_RETURN_NONE;
}

/* live_open_tx(dev, ifname): a send-only socket (no RX: protocol 0). */
static PyObject *py_live_open_tx(PyObject *self, PyObject *args) {
    int dev;
    const char *ifname;
    if (!PyArg_ParseTuple(args, "is", &dev, &ifname)) return NULL;
    if (afp_open_tx(dev, ifname) < 0) return NULL;
    Py_RETURN_NONE;
}

/* live_open(dev, ifname, program, max_frame): before the fork, every worker's
 * ring socket on the device, joined to its fanout group in slot order. */
static PyObject *py_live_open(PyObject *self, PyObject *args) {
    int dev;
    const char *ifname;
    Py_buffer prog;
    unsigned int max_frame;
    if (!PyArg_ParseTuple(args, "isy*I", &dev, &ifname, &prog, &max_frame)) return NULL;
    int r = afp_open(dev, ifname, prog.buf, (size_t)prog.len, max_frame);
    PyBuffer_Release(&prog);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

/* live_take(): in a worker (after attach): take over its slot's sockets. */
static PyObject *py_live_take(PyObject *self, PyObject *noargs) {
    if (afp_take() < 0) return NULL;
    Py_RETURN_NONE;
}

/* live_fail(message): a worker could not start; the control process reports it. */
static PyObject *py_live_fail(PyObject *self, PyObject *arg) {
    const char *msg = PyUnicode_AsUTF8(arg);
    if (!msg) return NULL;
    afp_fail(msg);
    Py_RETURN_NONE;
}

static PyObject *py_live_error(PyObject *self, PyObject *noargs) {
    const char *e = afp_error();
    if (!e) Py_RETURN_NONE;
    return PyUnicode_FromString(e);
}

static PyObject *py_live_running(PyObject *self, PyObject *noargs) {
    return PyLong_FromUnsignedLong(afp_running());
}

/* live_close(): close this process's sockets; live mode off. */
static PyObject *py_live_close(PyObject *self, PyObject *noargs) {
    afp_close();
    loop_set_io(&pktio_ring);
    Py_RETURN_NONE;
}

PyMethodDef bind_live_methods[] = {
    {"live_setup", (PyCFunction)(void (*)(void))py_live_setup, METH_VARARGS | METH_KEYWORDS,
     "live_setup(nworkers, frame_size=2048, block_size=262144, block_nr=16, offloads=True): before the fork"},
    {"live_open_tx", py_live_open_tx, METH_VARARGS, "live_open_tx(dev, ifname): a send-only socket"},
    {"live_open", py_live_open, METH_VARARGS,
     "live_open(dev, ifname, program, max_frame): every worker's ring socket on the device, joined in slot order"},
    {"live_take", py_live_take, METH_NOARGS, "live_take(): a worker takes over its slot's sockets"},
    {"live_fail", py_live_fail, METH_O, "live_fail(message): this worker could not start"},
    {"live_error", py_live_error, METH_NOARGS, "the first worker's start-up error, or None"},
    {"live_running", py_live_running, METH_NOARGS, "workers that are receiving"},
    {"live_close", py_live_close, METH_NOARGS, "close this process's sockets; live mode off"},
    {NULL, NULL, 0, NULL}};
