/* Counter: a sharded integer counter (the paper's DistributedObj, specialised
 * to one signed 64-bit sum).
 *
 * One shard per slot, one transactional object each.  add(n) opens only the
 * caller's shard for writing, so adds never conflict with each other.
 * value() merges: it reads every shard and sums them into a per-process
 * cache, reused while younger than max_staleness.  A merge reads every
 * shard, so it conflicts with any concurrent add (cause: read vs add;
 * recipe: raise max_staleness).  The cache is private memory, restored on
 * abort like any other private write.  Sums wrap around at 64 bits.
 */
#include "structures.h"

#include <structmember.h>

typedef struct {
    PyObject_HEAD
    char *shards;
    uint32_t stride, nslots;
    uint16_t sid;
    uint32_t gen;
    uint64_t staleness;       /* ns */
    uint64_t cache[3];        /* private: time merged, valid, sum */
    PyObject *dict;
} Ctr;

static inline ObjHdr *shard(Ctr *c, uint32_t s) { return (ObjHdr *)(c->shards + (size_t)s * c->stride); }

/* CounterBase(max_staleness_ns) */
static int ctr_init(PyObject *self, PyObject *args, PyObject *kw) {
    Ctr *c = (Ctr *)self;
    unsigned long long staleness;
    if (!PyArg_ParseTuple(args, "K", &staleness)) return -1;
    if (!proc.shared) {
        PyErr_SetString(PyExc_RuntimeError, "nfos structures must be created while an NF is loaded");
        return -1;
    }
    c->nslots = proc.nslots;
    c->stride = (uint32_t)obj_stride(sizeof(uint64_t));
    c->shards = proc_alloc((size_t)c->stride * c->nslots, NFOS_CACHELINE);
    if (!c->shards) return -1;
    c->staleness = staleness;
    memset(c->cache, 0, sizeof c->cache);
    c->sid = struct_register();
    struct_region(c->sid, c->shards, c->stride, c->nslots);
    c->gen = proc.arena_gen;
    return 0;
}

/* add(n=1): add n (an int64) to this worker's shard; never conflicts with another add. */
static PyObject *ctr_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Ctr *c = (Ctr *)self;
    if (nargs > 1) return PyErr_Format(PyExc_TypeError, "add(n=1)");
    if (struct_live(c->shards, c->gen, "Counter") < 0) return NULL;
    long long n = 1;
    if (nargs == 1) {
        n = PyLong_AsLongLong(args[0]);
        if (n == -1 && PyErr_Occurred()) return NULL;
    }
    char *p = tx_open(shard(c, (uint32_t)proc.slot), sizeof(uint64_t), c->sid, (uint32_t)proc.slot, OP_WRITE,
                      OP_TAG(OPC_COUNTER_ADD, 0));
    if (!p) return NULL;
    uint64_t v;
    memcpy(&v, p, sizeof v);
    v += (uint64_t)n;
    memcpy(p, &v, sizeof v);
    Py_RETURN_NONE;
}

/* value() -> the sum of all shards, at most max_staleness old. */
static PyObject *ctr_value(PyObject *self, PyObject *noargs) {
    Ctr *c = (Ctr *)self;
    if (struct_live(c->shards, c->gen, "Counter") < 0) return NULL;
    if (!proc.tx.active) {
        PyErr_SetString(PyExc_RuntimeError, "nfos structures can only be used inside a handler or @nf.init");
        return NULL;
    }
    uint64_t *ts = c->cache;
    int fresh = ts[1] && proc.clock >= ts[0] && proc.clock - ts[0] < c->staleness;
    if (!fresh) {
        if (tx_save_private(c->cache, sizeof c->cache) < 0) return NULL;
        uint64_t sum = 0;
        for (uint32_t s = 0; s < c->nslots; s++) {
            int32_t ent;   /* each shard read in place, validated */
            char *p = tx_read_open(shard(c, s), sizeof(uint64_t), c->sid, s, OP_TAG(OPC_COUNTER_READ, 0), &ent);
            uint64_t v;
            if (!p || tx_read_bytes(ent, p, &v, sizeof v) < 0) return NULL;
            sum += v;
        }
        ts[0] = proc.clock;
        ts[1] = 1;
        ts[2] = sum;
    }
    return PyLong_FromLongLong((long long)ts[2]);
}

static PyObject *ctr_sid(PyObject *self, void *closure) { return PyLong_FromLong(((Ctr *)self)->sid); }

static int ctr_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(((Ctr *)self)->dict);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int ctr_clear(PyObject *self) {
    Py_CLEAR(((Ctr *)self)->dict);
    return 0;
}

static void ctr_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ctr_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef ctr_methods[] = {
    {"add", (PyCFunction)(void (*)(void))ctr_add, METH_FASTCALL, "add(n=1): add to this worker's shard"},
    {"value", ctr_value, METH_NOARGS, "the sum of all shards, at most max_staleness old"},
    {"read", ctr_value, METH_NOARGS, "the same as value()"},
    {NULL}};
static PyGetSetDef ctr_getset[] = {{"_struct_id", ctr_sid, NULL, NULL, NULL}, {NULL}};
static PyMemberDef ctr_members[] = {{"__dictoffset__", T_PYSSIZET, offsetof(Ctr, dict), READONLY}, {NULL}};

static PyType_Slot ctr_slots[] = {
    {Py_tp_init, ctr_init},         {Py_tp_new, PyType_GenericNew},  {Py_tp_methods, ctr_methods},
    {Py_tp_dealloc, ctr_dealloc},   {Py_tp_traverse, ctr_traverse},  {Py_tp_clear, ctr_clear},
    {Py_tp_getset, ctr_getset},     {Py_tp_members, ctr_members},    {0, NULL}};
static PyType_Spec ctr_spec = {"nfos._core.CounterBase", sizeof(Ctr), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, ctr_slots};

int counter_module_init(PyObject *m) {
    PyObject *t = PyType_FromModuleAndSpec(m, &ctr_spec, NULL);
    if (!t) return -1;
    return PyModule_AddObject(m, "CounterBase", t);
}
