/* Built-in shared data structures: Vector and DistributedObj (paper §4.5).
 *
 * Vector: `size` records (or scalars), one transactional object each, so
 * two transactions conflict only on the same index.
 *
 * DistributedObj: one replica per slot; update() writes only the caller's
 * replica (updates never conflict), read() merges all replicas (sum, max or
 * min per field) into a per-process cache and reuses the cache while it is
 * younger than max_staleness.  A merge reads every replica, so it conflicts
 * with any concurrent update: the paper's read-vs-update cause, relaxed by
 * raising max_staleness.  The cache is private memory and is restored on
 * abort like any other private write.
 */
#include "nfos_core.h"

#include <structmember.h>

static uint16_t next_struct_id = 1;
uint16_t struct_register(void) { return next_struct_id++; }

/* ---------------------------------------------------------------- Vector */

typedef struct {
    PyObject_HEAD
    char *base;
    uint32_t n, stride, payload;
    uint16_t sid;
    int scalar_kind;          /* -1: records of rtype */
    uint32_t gen;
    PyTypeObject *rtype;
    PyObject *value_name;
    PyObject *dict;
} Vector;

static int vector_init(PyObject *self, PyObject *args, PyObject *kw) {
    Vector *v = (Vector *)self;
    PyObject *rtype;
    unsigned int payload, n;
    int scalar_kind;
    if (!PyArg_ParseTuple(args, "OIIi", &rtype, &payload, &n, &scalar_kind)) return -1;
    if (n == 0 || payload == 0) {
        PyErr_SetString(PyExc_ValueError, "a Vector needs a size >= 1 and a non-empty element type");
        return -1;
    }
    if (scalar_kind < 0 && !PyType_Check(rtype)) {
        PyErr_SetString(PyExc_TypeError, "Vector elements are a Record type or a scalar type");
        return -1;
    }
    v->stride = (uint32_t)obj_stride(payload);
    v->base = arena_alloc((size_t)v->stride * n, NFOS_CACHELINE);
    if (!v->base) return -1;
    v->n = n;
    v->payload = payload;
    v->scalar_kind = scalar_kind;
    v->sid = struct_register();
    v->gen = g_arena_gen;
    Py_XSETREF(v->rtype, scalar_kind < 0 ? (PyTypeObject *)Py_NewRef(rtype) : NULL);
    Py_XSETREF(v->value_name, PyUnicode_FromString("value"));
    return 0;
}

static inline ObjHdr *vector_obj(Vector *v, Py_ssize_t i) { return (ObjHdr *)(v->base + (size_t)i * v->stride); }

static Py_ssize_t vector_index(Vector *v, PyObject *key) {
    Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) return -1;
    if (i < 0) i += v->n;
    if (i < 0 || i >= (Py_ssize_t)v->n) {
        PyErr_Format(PyExc_IndexError, "Vector index %R out of range 0..%u", key, v->n - 1);
        return -1;
    }
    return i;
}

static PyObject *vector_getitem(PyObject *self, PyObject *key) {
    Vector *v = (Vector *)self;
    if (!v->base || v->gen != g_arena_gen) return PyErr_Format(PyExc_RuntimeError, "this Vector belongs to an NF that is no longer loaded");
    Py_ssize_t i = vector_index(v, key);
    if (i < 0) return NULL;
    ObjHdr *o = vector_obj(v, i);
    g_tx.op = OPC_VEC_READ;
    char *p = tx_open(o, v->payload, v->sid, (uint32_t)i, OP_READ);
    if (!p) return NULL;
    if (v->scalar_kind >= 0) return load_field(p, (uint8_t)v->scalar_kind, (uint16_t)v->payload);
    PyObject *r = record_view_new(v->rtype, p, o, v->payload, v->sid, (uint32_t)i, 0);
    if (r) ((RecordView *)r)->wop = OPC_VEC_WRITE;
    return r;
}

static int vector_setitem(PyObject *self, PyObject *key, PyObject *value) {
    Vector *v = (Vector *)self;
    if (!value) {
        PyErr_SetString(PyExc_TypeError, "Vector elements cannot be deleted");
        return -1;
    }
    if (!v->base || v->gen != g_arena_gen) {
        PyErr_SetString(PyExc_RuntimeError, "this Vector belongs to an NF that is no longer loaded");
        return -1;
    }
    Py_ssize_t i = vector_index(v, key);
    if (i < 0) return -1;
    ObjHdr *o = vector_obj(v, i);
    if (v->scalar_kind < 0) {
        if (!PyObject_TypeCheck(value, v->rtype)) {
            PyErr_Format(PyExc_TypeError, "this Vector holds %s records", v->rtype->tp_name);
            return -1;
        }
        RecordView *src = (RecordView *)value;
        char tmp[4096];
        if (v->payload > sizeof tmp) {
            PyErr_SetString(PyExc_ValueError, "record too large to assign; set its fields instead");
            return -1;
        }
        memcpy(tmp, src->data, v->payload);   /* src may be a view of this same element */
        g_tx.op = OPC_VEC_WRITE;
        char *p = tx_open(o, v->payload, v->sid, (uint32_t)i, OP_WRITE);
        if (!p) return -1;
        memcpy(p, tmp, v->payload);
        return 0;
    }
    char tmp[8];
    if (store_field(tmp, (uint8_t)v->scalar_kind, (uint16_t)v->payload, value, v->value_name) < 0) return -1;
    g_tx.op = OPC_VEC_WRITE;
    char *p = tx_open(o, v->payload, v->sid, (uint32_t)i, OP_WRITE);
    if (!p) return -1;
    memcpy(p, tmp, v->payload);
    return 0;
}

static Py_ssize_t vector_len(PyObject *self) { return ((Vector *)self)->n; }

static PyObject *vector_sid(PyObject *self, void *c) { return PyLong_FromLong(((Vector *)self)->sid); }

static int vector_traverse(PyObject *self, visitproc visit, void *arg) {
    Vector *v = (Vector *)self;
    Py_VISIT(v->rtype);
    Py_VISIT(v->dict);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int vector_clear(PyObject *self) {
    Vector *v = (Vector *)self;
    Py_CLEAR(v->rtype);
    Py_CLEAR(v->dict);
    Py_CLEAR(v->value_name);
    return 0;
}

static void vector_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    vector_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyGetSetDef vector_getset[] = {{"_struct_id", vector_sid, NULL, NULL, NULL}, {NULL}};
static PyMemberDef vector_members[] = {{"__dictoffset__", T_PYSSIZET, offsetof(Vector, dict), READONLY}, {NULL}};

static PyType_Slot vector_slots[] = {
    {Py_tp_init, vector_init},          {Py_tp_new, PyType_GenericNew},
    {Py_mp_subscript, vector_getitem},  {Py_mp_ass_subscript, vector_setitem},
    {Py_mp_length, vector_len},         {Py_tp_dealloc, vector_dealloc},
    {Py_tp_traverse, vector_traverse},  {Py_tp_clear, vector_clear},
    {Py_tp_getset, vector_getset},      {Py_tp_members, vector_members},
    {0, NULL}};
static PyType_Spec vector_spec = {"nfos._core.VectorBase", sizeof(Vector), 0,
                                  Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, vector_slots};

/* -------------------------------------------------------- DistributedObj */

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
    if (!g_arena) {
        PyErr_SetString(PyExc_RuntimeError, "nfos structures must be created while an NF is loaded");
        return -1;
    }
    o->nslots = g_arena->nslots;
    o->payload = payload;
    o->objsize = ((payload + 7) & ~7u) + 8;
    o->stride = (uint32_t)obj_stride(o->objsize);
    o->replicas = arena_alloc((size_t)o->stride * o->nslots, NFOS_CACHELINE);
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
    o->gen = g_arena_gen;
    Py_XSETREF(o->rtype, (PyTypeObject *)Py_NewRef(rtype));
    return 0;
}

static inline ObjHdr *replica(DistObj *o, uint32_t s) { return (ObjHdr *)(o->replicas + (size_t)s * o->stride); }

static int dobj_live(DistObj *o) {
    if (o->replicas && o->gen == g_arena_gen) return 0;
    PyErr_SetString(PyExc_RuntimeError, "this DistributedObj belongs to an NF that is no longer loaded");
    return -1;
}

/* update() -> this process's replica, open for writing. */
static PyObject *dobj_update(PyObject *self, PyObject *noargs) {
    DistObj *o = (DistObj *)self;
    if (dobj_live(o) < 0) return NULL;
    ObjHdr *r = replica(o, (uint32_t)g_slot);
    g_tx.op = OPC_DOBJ_UPDATE;
    char *p = tx_open(r, o->objsize, o->sid, (uint32_t)g_slot, OP_WRITE);
    if (!p) return NULL;
    p[o->objsize - 8] = 1;   /* this replica takes part in min/max merges from now on */
    PyObject *v = record_view_new(o->rtype, p, r, o->payload, o->sid, (uint32_t)g_slot, RV_OPENED_W);
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
    if (!g_tx.active) {
        PyErr_SetString(PyExc_RuntimeError, "nfos structures can only be used inside a handler or @nf.init");
        return NULL;
    }
    int fresh = ts[1] && g_clock >= ts[0] && g_clock - ts[0] < o->staleness;
    if (!fresh) {
        if (tx_save_private(o->cache, 16 + o->payload) < 0) return NULL;
        g_tx.op = OPC_DOBJ_READ;
        memset(acc, 0, o->payload);
        int first = 1;
        for (uint32_t s = 0; s < o->nslots; s++) {
            char *p = tx_open(replica(o, s), o->objsize, o->sid, s, OP_READ);
            if (!p) return NULL;
            if (!p[o->objsize - 8]) continue;   /* never updated: not part of the merge */
            merge_into(o, acc, p, first);
            first = 0;
        }
        ts[0] = g_clock;
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

int structures_init(PyObject *m) {
    PyObject *v = PyType_FromModuleAndSpec(m, &vector_spec, NULL);
    PyObject *d = PyType_FromModuleAndSpec(m, &dobj_spec, NULL);
    if (!v || !d) return -1;
    if (PyModule_AddObject(m, "VectorBase", v) < 0) return -1;
    if (PyModule_AddObject(m, "DistributedObjBase", d) < 0) return -1;
    return 0;
}
