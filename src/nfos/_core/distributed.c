/* DistributedObj: one replica per slot (the paper's mergeable object, §4.5).
 *
 * update() writes only the caller's replica (updates never conflict), read()
 * merges all replicas (sum, max or min per field) into a per-process cache
 * and reuses the cache while it is younger than max_staleness.  A merge reads
 * every replica, so it conflicts with any concurrent update: the paper's
 * read-vs-update cause, relaxed by raising max_staleness.  The cache is
 * private memory and is restored on abort like any other private write.
 */
#include "structures.h"

#include <structmember.h>

enum { MERGE_SUM = 0, MERGE_MAX = 1, MERGE_MIN = 2 };

typedef struct {
    uint32_t offset;
    uint8_t kind, op;
} MergeField;

typedef struct {
    PyObject_HEAD
    char *replicas;
    uint32_t stride, payload, nslots, nfields;
    uint32_t objsize;         /* payload + 8: a replica ends with a "was updated" flag */
    uint16_t sid;
    uint64_t staleness;
    uint32_t gen;
    PyTypeObject *rtype;
    char *cache;              /* private: [ts][valid][payload] */
    MergeField *fields;
    PyObject *dict;
} DistObj;

static int dobj_init(PyObject *self, PyObject *args, PyObject *kw) {
    DistObj *o = (DistObj *)self;
    PyObject *rtype, *fields;
    unsigned int payload;
    unsigned long long staleness;
    if (!PyArg_ParseTuple(args, "O!IO!K", &PyType_Type, &rtype, &payload, &PyList_Type, &fields, &staleness))
        return -1;
    if (!proc.shared) {
        PyErr_SetString(PyExc_RuntimeError, "nfos structures must be created while an NF is loaded");
        return -1;
    }
    o->nslots = proc.nslots;
    o->payload = payload;
    o->objsize = ((payload + 7) & ~7u) + 8;
    o->stride = (uint32_t)obj_stride(o->objsize);
    o->replicas = proc_alloc((size_t)o->stride * o->nslots, NFOS_CACHELINE);
    if (!o->replicas) return -1;
    o->nfields = (uint32_t)PyList_GET_SIZE(fields);
    o->fields = PyMem_Calloc(o->nfields ? o->nfields : 1, sizeof(MergeField));
    o->cache = PyMem_Calloc(1, 16 + payload);
    if (!o->fields || !o->cache) {
        PyErr_NoMemory();
        return -1;
    }
    for (uint32_t i = 0; i < o->nfields; i++) {
        unsigned int off, kind, op;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(fields, i), "III", &off, &kind, &op)) return -1;
        o->fields[i].offset = off;
        o->fields[i].kind = (uint8_t)kind;
        o->fields[i].op = (uint8_t)op;
    }
    o->staleness = staleness;
    o->sid = struct_register();
    struct_region(o->sid, o->replicas, o->stride, o->nslots);
    o->gen = proc.arena_gen;
    Py_XSETREF(o->rtype, (PyTypeObject *)Py_NewRef(rtype));
    return 0;
}

static inline ObjHdr *replica(DistObj *o, uint32_t s) { return (ObjHdr *)(o->replicas + (size_t)s * o->stride); }

static int dobj_live(DistObj *o) { return struct_live(o->replicas, o->gen, "DistributedObj"); }

/* update() -> this process's replica, open for writing. */
static PyObject *dobj_update(PyObject *self, PyObject *noargs) {
    DistObj *o = (DistObj *)self;
    if (dobj_live(o) < 0) return NULL;
    ObjHdr *r = replica(o, (uint32_t)proc.slot);
    char *p = tx_open(r, o->objsize, o->sid, (uint32_t)proc.slot, OP_WRITE, OP_TAG(OPC_DOBJ_UPDATE, 0));
    if (!p) return NULL;
    p[o->objsize - 8] = 1;   /* this replica takes part in min/max merges from now on */
    PyObject *v = record_view_new(o->rtype, p, r, o->payload, o->sid, (uint32_t)proc.slot, RV_OPENED_W);
    if (v) ((RecordView *)v)->objsize = o->objsize;
    return v;
}

#define MERGE_INT(T)                                                         \
    do {                                                                     \
        T a, b;                                                              \
        memcpy(&a, dst, sizeof(T));                                          \
        memcpy(&b, src, sizeof(T));                                          \
        T r = f->op == MERGE_SUM ? (T)(a + b) : f->op == MERGE_MAX ? (a > b ? a : b) : (a < b ? a : b); \
        memcpy(dst, &r, sizeof(T));                                          \
    } while (0)

static void merge_into(DistObj *o, char *acc, const char *rep, int first) {
    if (first) {
        memcpy(acc, rep, o->payload);
        return;
    }
    for (uint32_t i = 0; i < o->nfields; i++) {
        MergeField *f = &o->fields[i];
        char *dst = acc + f->offset;
        const char *src = rep + f->offset;
        switch (f->kind) {
        case K_U8: case K_BOOL: MERGE_INT(uint8_t); break;
        case K_U16: MERGE_INT(uint16_t); break;
        case K_U32: MERGE_INT(uint32_t); break;
        case K_U64: MERGE_INT(uint64_t); break;
        case K_I8: MERGE_INT(int8_t); break;
        case K_I16: MERGE_INT(int16_t); break;
        case K_I32: MERGE_INT(int32_t); break;
        case K_I64: MERGE_INT(int64_t); break;
        case K_F64: MERGE_INT(double); break;
        default: break;
        }
    }
}

/* read() -> a read-only view of the merged value, at most max_staleness old. */
static PyObject *dobj_read(PyObject *self, PyObject *noargs) {
    DistObj *o = (DistObj *)self;
    uint64_t *ts = (uint64_t *)o->cache;
    char *acc = o->cache + 16;
    if (dobj_live(o) < 0) return NULL;
    if (!proc.tx.active) {
        PyErr_SetString(PyExc_RuntimeError, "nfos structures can only be used inside a handler or @nf.init");
        return NULL;
    }
    int fresh = ts[1] && proc.clock >= ts[0] && proc.clock - ts[0] < o->staleness;
    if (!fresh) {
        if (tx_save_private(o->cache, 16 + o->payload) < 0) return NULL;
        memset(acc, 0, o->payload);
        int first = 1;
        uint64_t small[64];   /* a replica, read in place into a local buffer (validated) */
        char *rep = o->objsize <= sizeof small ? (char *)small : PyMem_Malloc(o->objsize);
        if (!rep) return PyErr_NoMemory();
        for (uint32_t s = 0; s < o->nslots; s++) {
            int32_t ent;
            char *p = tx_read_open(replica(o, s), o->objsize, o->sid, s, OP_TAG(OPC_DOBJ_READ, 0), &ent);
            if (!p || tx_read_bytes(ent, p, rep, o->objsize) < 0) {
                if (rep != (char *)small) PyMem_Free(rep);
                return NULL;
            }
            if (!rep[o->objsize - 8]) continue;   /* never updated: not part of the merge */
            merge_into(o, acc, rep, first);
            first = 0;
        }
        if (rep != (char *)small) PyMem_Free(rep);
        ts[0] = proc.clock;
        ts[1] = 1;
    }
    return record_view_new(o->rtype, acc, NULL, o->payload, o->sid, 0, RV_READONLY | RV_PRIVATE);
}

static PyObject *dobj_sid(PyObject *self, void *c) { return PyLong_FromLong(((DistObj *)self)->sid); }

static int dobj_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(((DistObj *)self)->rtype);
    Py_VISIT(((DistObj *)self)->dict);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int dobj_clear(PyObject *self) {
    Py_CLEAR(((DistObj *)self)->rtype);
    Py_CLEAR(((DistObj *)self)->dict);
    return 0;
}

static void dobj_dealloc(PyObject *self) {
    DistObj *o = (DistObj *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    dobj_clear(self);
    PyMem_Free(o->fields);
    PyMem_Free(o->cache);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef dobj_methods[] = {
    {"update", dobj_update, METH_NOARGS, "this worker's replica, to change (never conflicts)"},
    {"read", dobj_read, METH_NOARGS, "the merged value (read-only), at most max_staleness old"},
    {NULL}};
static PyGetSetDef dobj_getset[] = {{"_struct_id", dobj_sid, NULL, NULL, NULL}, {NULL}};
static PyMemberDef dobj_members[] = {{"__dictoffset__", T_PYSSIZET, offsetof(DistObj, dict), READONLY}, {NULL}};

static PyType_Slot dobj_slots[] = {
    {Py_tp_init, dobj_init},         {Py_tp_new, PyType_GenericNew}, {Py_tp_methods, dobj_methods},
    {Py_tp_dealloc, dobj_dealloc},   {Py_tp_traverse, dobj_traverse}, {Py_tp_clear, dobj_clear},
    {Py_tp_getset, dobj_getset},     {Py_tp_members, dobj_members},   {0, NULL}};
static PyType_Spec dobj_spec = {"nfos._core.DistributedObjBase", sizeof(DistObj), 0,
                                Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, dobj_slots};

int distributed_module_init(PyObject *m) {
    PyObject *t = PyType_FromModuleAndSpec(m, &dobj_spec, NULL);
    if (!t) return -1;
    return PyModule_AddObject(m, "DistributedObjBase", t);
}
