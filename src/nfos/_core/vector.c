/* Vector: `size` records (or scalars), one transactional object each, so
 * two transactions conflict only on the same index (paper §4.5, Table 3).
 * Recipe for a hot element: keep it in a DistributedObj. */
#include "structures.h"

#include <structmember.h>

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
    v->base = proc_alloc((size_t)v->stride * n, NFOS_CACHELINE);
    if (!v->base) return -1;
    v->n = n;
    v->payload = payload;
    v->scalar_kind = scalar_kind;
    v->sid = struct_register();
    struct_region(v->sid, v->base, v->stride, n);
    v->gen = proc.arena_gen;
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
    if (struct_live(v->base, v->gen, "Vector") < 0) return NULL;
    Py_ssize_t i = vector_index(v, key);
    if (i < 0) return NULL;
    ObjHdr *o = vector_obj(v, i);
    int32_t ent;
    char *p = tx_read_open(o, v->payload, v->sid, (uint32_t)i, OP_TAG(OPC_VEC_READ, 0), &ent);   /* in place */
    if (!p) return NULL;
    if (v->scalar_kind >= 0) {
        uint64_t small;   /* a number; Bytes(n) elements can be longer */
        char *x = v->payload <= sizeof small ? (char *)&small : PyMem_Malloc(v->payload);
        if (!x) return PyErr_NoMemory();
        PyObject *r = tx_read_bytes(ent, p, x, v->payload) == 0
                          ? load_field(x, (uint8_t)v->scalar_kind, (uint16_t)v->payload) : NULL;
        if (x != (char *)&small) PyMem_Free(x);
        return r;
    }
    PyObject *r = record_view_new(v->rtype, p, o, v->payload, v->sid, (uint32_t)i, 0);
    if (r) {
        ((RecordView *)r)->wtag = OP_TAG(OPC_VEC_WRITE, 0);
        record_view_via(r, ent);   /* each field load is validated */
    }
    return r;
}

static int vector_setitem(PyObject *self, PyObject *key, PyObject *value) {
    Vector *v = (Vector *)self;
    if (!value) {
        PyErr_SetString(PyExc_TypeError, "Vector elements cannot be deleted");
        return -1;
    }
    if (struct_live(v->base, v->gen, "Vector") < 0) return -1;
    Py_ssize_t i = vector_index(v, key);
    if (i < 0) return -1;
    ObjHdr *o = vector_obj(v, i);
    if (v->scalar_kind < 0) {
        if (!PyObject_TypeCheck(value, v->rtype)) {
            PyErr_Format(PyExc_TypeError, "this Vector holds %s records", v->rtype->tp_name);
            return -1;
        }
        char tmp[4096];
        if (v->payload > sizeof tmp) {
            PyErr_SetString(PyExc_ValueError, "record too large to assign; set its fields instead");
            return -1;
        }
        if (record_view_copy(value, tmp, v->payload) < 0) return -1;   /* it may be a view of this same element */
        char *p = tx_open(o, v->payload, v->sid, (uint32_t)i, OP_WRITE, OP_TAG(OPC_VEC_WRITE, 0));
        if (!p) return -1;
        memcpy(p, tmp, v->payload);
        return 0;
    }
    char tmp[4096];
    if (v->payload > sizeof tmp) {
        PyErr_SetString(PyExc_ValueError, "element too large to assign");
        return -1;
    }
    if (store_field(tmp, (uint8_t)v->scalar_kind, (uint16_t)v->payload, value, v->value_name) < 0) return -1;
    char *p = tx_open(o, v->payload, v->sid, (uint32_t)i, OP_WRITE, OP_TAG(OPC_VEC_WRITE, 0));
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

int vector_module_init(PyObject *m) {
    PyObject *t = PyType_FromModuleAndSpec(m, &vector_spec, NULL);
    if (!t) return -1;
    return PyModule_AddObject(m, "VectorBase", t);
}
