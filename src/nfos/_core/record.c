/* Record views: fixed-layout typed records seen from Python.
 *
 * A Record subclass (nfos.Record) gets one Field descriptor per declared
 * field; the descriptor knows the offset and kind, so `s.flags` is one type
 * lookup plus a load.  A view points either into a transaction's private copy
 * of a shared object or directly at private memory.  The first write through
 * a view records the write with the transaction (write set or undo log);
 * a view used after its transaction ended is refused.
 */
#include "record.h"

static PyTypeObject *RecordView_Type;
static PyTypeObject *Field_Type;

typedef struct {
    PyObject_HEAD
    uint32_t offset;
    uint16_t size;
    uint8_t kind;
    PyObject *name;
} Field;

/* Views are reused, as the runtime reuses its Packet: a view that only this cache holds
 * (reference count 1: the handler that had it dropped it) is aimed at the new record
 * instead of allocating one.  A handler typically holds its set's state and a few
 * structure records at a time, so a few views per type cover it. */
#define VIEW_CACHE 16
static struct {
    PyTypeObject *type;
    PyObject *view;   /* a reference of the cache's own; filled from index 0 up */
} view_cache[VIEW_CACHE];

void record_view_cache_clear(void) {
    for (int i = 0; i < VIEW_CACHE; i++) {
        view_cache[i].type = NULL;
        Py_CLEAR(view_cache[i].view);
    }
}

static RecordView *view_alloc(PyTypeObject *type) {
    int i = 0;
    for (; i < VIEW_CACHE && view_cache[i].view; i++)
        if (view_cache[i].type == type && Py_REFCNT(view_cache[i].view) == 1)
            return (RecordView *)Py_NewRef(view_cache[i].view);
    RecordView *v = (RecordView *)type->tp_alloc(type, 0);
    if (v && i < VIEW_CACHE) {
        view_cache[i].type = type;
        view_cache[i].view = Py_NewRef((PyObject *)v);
    }
    return v;
}

PyObject *record_view_new(PyTypeObject *type, char *data, ObjHdr *obj, uint32_t size,
                          uint16_t struct_id, uint32_t index, uint8_t flags) {
    RecordView *v = view_alloc(type);
    if (!v) return NULL;
    v->data = data;
    v->obj = obj;
    v->size = size;
    v->struct_id = struct_id;
    v->index = index;
    v->flags = flags;
    v->objsize = 0;
    v->wtag = 0;
    v->entry = -1;
    v->offset = 0;
    v->serial = (flags & RV_FREE) ? 0 : proc.tx.serial;
    return (PyObject *)v;
}

static int view_check(RecordView *v) {
    if (v->data == NULL) {
        PyErr_SetString(PyExc_TypeError, "records are created by nfos structures, not directly");
        return -1;
    }
    if (!(v->flags & RV_FREE) && (v->serial != proc.tx.serial || !proc.tx.active)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this record belongs to a finished transaction; keep state in nfos "
                        "structures, not in Python variables");
        return -1;
    }
    return 0;
}

void record_view_via(PyObject *self, int32_t ent) {
    RecordView *v = (RecordView *)self;
    if (ent < 0 || proc.tx.entries[ent].copied) return;
    v->entry = ent;
    v->offset = (uint32_t)(v->data - proc.tx.entries[ent].data);
}

/* Where the view's bytes are now (an in-place entry: the object, or its copy once written). */
static inline char *view_data(RecordView *v) {
    return v->entry >= 0 ? proc.tx.entries[v->entry].data + v->offset : v->data;
}

int record_view_copy(PyObject *self, void *dst, size_t n) {
    RecordView *v = (RecordView *)self;
    if (n > v->size) n = v->size;
    if (v->entry < 0) {
        memcpy(dst, v->data, n);
        return 0;
    }
    if (view_check(v) < 0) return -1;
    return tx_read_bytes(v->entry, view_data(v), dst, n);
}

/* Record the intent to write; may abort (STM lock conflicts are found at
 * commit, but the descriptor can overflow). */
static int view_open_write(RecordView *v) {
    if (v->flags & RV_OPENED_W) return 0;
    if (v->flags & RV_READONLY) {
        PyErr_SetString(PyExc_AttributeError,
                        "this record is read-only (a merged DistributedObj view: use .update())");
        return -1;
    }
    if (!(v->flags & RV_FREE)) {
        if (v->obj) {   /* the copy (or the object) is already where data points */
            if (!tx_open(v->obj, v->objsize ? v->objsize : v->size, v->struct_id, v->index, OP_WRITE, v->wtag))
                return -1;
        } else if (tx_save_private(v->data, v->size) < 0) {
            return -1;
        }
    }
    v->flags |= RV_OPENED_W;
    return 0;
}

PyObject *load_field(const char *p, uint8_t kind, uint16_t size) {
    switch (kind) {
    case K_U8: return PyLong_FromUnsignedLong(*(const uint8_t *)p);
    case K_U16: { uint16_t x; memcpy(&x, p, 2); return PyLong_FromUnsignedLong(x); }
    case K_U32: { uint32_t x; memcpy(&x, p, 4); return PyLong_FromUnsignedLong(x); }
    case K_U64: { uint64_t x; memcpy(&x, p, 8); return PyLong_FromUnsignedLongLong(x); }
    case K_I8: return PyLong_FromLong(*(const int8_t *)p);
    case K_I16: { int16_t x; memcpy(&x, p, 2); return PyLong_FromLong(x); }
    case K_I32: { int32_t x; memcpy(&x, p, 4); return PyLong_FromLong(x); }
    case K_I64: { int64_t x; memcpy(&x, p, 8); return PyLong_FromLongLong(x); }
    case K_F64: { double x; memcpy(&x, p, 8); return PyFloat_FromDouble(x); }
    case K_BOOL: return PyBool_FromLong(*(const uint8_t *)p);
    default: return PyBytes_FromStringAndSize(p, size);
    }
}

int store_field(char *p, uint8_t kind, uint16_t size, PyObject *value, PyObject *name) {
    if (kind == K_F64) {
        double x = PyFloat_AsDouble(value);
        if (x == -1.0 && PyErr_Occurred()) return -1;
        memcpy(p, &x, 8);
        return 0;
    }
    if (kind == K_BYTES) {
        Py_buffer b;
        if (PyObject_GetBuffer(value, &b, PyBUF_SIMPLE) < 0) return -1;
        if (b.len > size) {
            PyErr_Format(PyExc_ValueError, "field '%U' holds %d bytes, got %zd", name, size, b.len);
            PyBuffer_Release(&b);
            return -1;
        }
        memcpy(p, b.buf, b.len);
        memset(p + b.len, 0, size - b.len);
        PyBuffer_Release(&b);
        return 0;
    }
    if (kind == K_BOOL) {
        int t = PyObject_IsTrue(value);
        if (t < 0) return -1;
        *(uint8_t *)p = (uint8_t)t;
        return 0;
    }
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "field '%U' takes an int, got %.80s", name,
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long s = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (s == -1 && PyErr_Occurred()) return -1;
    unsigned long long u = (unsigned long long)s;
    if (overflow > 0) {
        u = PyLong_AsUnsignedLongLong(value);
        if (PyErr_Occurred()) goto range;
        if (kind != K_U64) goto range;
    } else if (overflow < 0) {
        goto range;
    }
    switch (kind) {
    case K_U8: if (s < 0 || s > 0xff) goto range; *(uint8_t *)p = (uint8_t)s; return 0;
    case K_U16: { if (s < 0 || s > 0xffff) goto range; uint16_t x = (uint16_t)s; memcpy(p, &x, 2); return 0; }
    case K_U32: { if (s < 0 || s > 0xffffffffll) goto range; uint32_t x = (uint32_t)s; memcpy(p, &x, 4); return 0; }
    case K_U64: { if (!overflow && s < 0) goto range; memcpy(p, &u, 8); return 0; }
    case K_I8: { if (s < -128 || s > 127) goto range; *(int8_t *)p = (int8_t)s; return 0; }
    case K_I16: { if (s < -32768 || s > 32767) goto range; int16_t x = (int16_t)s; memcpy(p, &x, 2); return 0; }
    case K_I32: { if (s < INT32_MIN || s > INT32_MAX) goto range; int32_t x = (int32_t)s; memcpy(p, &x, 4); return 0; }
    case K_I64: memcpy(p, &s, 8); return 0;
    }
range:
    PyErr_Clear();
    PyErr_Format(PyExc_OverflowError, "value %R does not fit field '%U'", value, name);
    return -1;
}

static PyObject *field_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    Field *f = (Field *)self;
    RecordView *v = (RecordView *)obj;
    if (view_check(v) < 0) return NULL;
    if (v->entry >= 0 && !proc.tx.entries[v->entry].copied) {   /* in place: a validated load */
        uint64_t small;
        char *buf = f->size <= sizeof small ? (char *)&small : PyMem_Malloc(f->size);
        if (!buf) return PyErr_NoMemory();
        PyObject *r = tx_read_bytes(v->entry, view_data(v) + f->offset, buf, f->size) == 0
                          ? load_field(buf, f->kind, f->size) : NULL;
        if (buf != (char *)&small) PyMem_Free(buf);
        return r;
    }
    return load_field(view_data(v) + f->offset, f->kind, f->size);
}

static int field_set(PyObject *self, PyObject *obj, PyObject *value) {
    Field *f = (Field *)self;
    RecordView *v = (RecordView *)obj;
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "record fields cannot be deleted ('%U')", f->name);
        return -1;
    }
    if (view_check(v) < 0 || view_open_write(v) < 0) return -1;
    return store_field(view_data(v) + f->offset, f->kind, f->size, value, f->name);
}

static int field_init(PyObject *self, PyObject *args, PyObject *kw) {
    Field *f = (Field *)self;
    unsigned int offset, size, kind;
    PyObject *name;
    if (!PyArg_ParseTuple(args, "UIII", &name, &offset, &size, &kind)) return -1;
    if (kind > K_BYTES) {
        PyErr_SetString(PyExc_ValueError, "bad field kind");
        return -1;
    }
    f->offset = offset;
    f->size = (uint16_t)size;
    f->kind = (uint8_t)kind;
    Py_INCREF(name);
    Py_XSETREF(f->name, name);
    return 0;
}

static void field_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    Py_XDECREF(((Field *)self)->name);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot field_slots[] = {
    {Py_tp_descr_get, field_get},
    {Py_tp_descr_set, field_set},
    {Py_tp_init, field_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, field_dealloc},
    {Py_tp_doc, "Field(name, offset, size, kind): a typed field of a Record layout."},
    {0, NULL}};

static PyType_Spec field_spec = {"nfos._core.Field", sizeof(Field), 0,
                                 Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, field_slots};

/* ------------------------------------------------------ attribute lookups */

/* Record and header fields are data descriptors, read several times per packet.  The
 * generic lookup (PyObject_GenericGetAttr) walks the type's MRO cache, checks for an
 * instance dict and tests the descriptor each time; this cache maps (type, name) to the
 * data descriptor once, valid while the type keeps its version tag (CPython gives a
 * modified type a new one), and holds the name so that its address is not reused.  A data
 * descriptor wins over an instance dict in the generic lookup too, so the result is the
 * same; anything else (methods, missing names) takes the generic path. */
#define ATTR_CACHE 256
static struct {
    PyTypeObject *type;
    PyObject *name;        /* a reference of the cache's own */
    PyObject *descr;       /* borrowed: the type's dict holds it while its version lasts */
    descrgetfunc get;
    unsigned int version;
} attr_cache[ATTR_CACHE];

PyObject *descr_getattro(PyObject *self, PyObject *name) {
    PyTypeObject *tp = Py_TYPE(self);
    uintptr_t h = ((uintptr_t)tp ^ (uintptr_t)name) * 0x9E3779B97F4A7C15ull;
    unsigned k = (unsigned)(h >> 56) % ATTR_CACHE;
    if (attr_cache[k].type == tp && attr_cache[k].name == name &&
        (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) && attr_cache[k].version == tp->tp_version_tag)
        return attr_cache[k].get(attr_cache[k].descr, self, (PyObject *)tp);
    PyObject *descr = PyUnicode_CheckExact(name) ? _PyType_Lookup(tp, name) : NULL;   /* borrowed */
    descrgetfunc get = descr ? Py_TYPE(descr)->tp_descr_get : NULL;
    if (!get || !Py_TYPE(descr)->tp_descr_set || !(tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
        return PyObject_GenericGetAttr(self, name);
    Py_INCREF(name);
    Py_XSETREF(attr_cache[k].name, name);
    attr_cache[k].type = tp;
    attr_cache[k].descr = descr;
    attr_cache[k].get = get;
    attr_cache[k].version = tp->tp_version_tag;
    return get(descr, self, (PyObject *)tp);
}

/* ------------------------------------------------------------ RecordView */

static void view_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* Record(**fields) / Record(v1, v2, ...): a free record whose bytes live in
 * the object itself (a Map key, a value to store, a test fixture). */
static PyObject *view_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *sz = PyObject_GetAttrString((PyObject *)type, "__nfos_size__");
    if (!sz) return NULL;
    Py_ssize_t size = PyLong_AsSsize_t(sz);
    Py_DECREF(sz);
    if (size < 0) return NULL;
    RecordView *v = (RecordView *)type->tp_alloc(type, size);
    if (!v) return NULL;
    v->data = (char *)v + type->tp_basicsize;
    memset(v->data, 0, size);
    v->size = (uint32_t)size;
    v->entry = -1;
    v->flags = RV_FREE | RV_OPENED_W;
    Py_ssize_t npos = PyTuple_GET_SIZE(args);
    if (npos) {
        PyObject *fields = PyObject_GetAttrString((PyObject *)type, "__nfos_fields__");
        if (!fields) goto fail;
        if (npos > PyTuple_GET_SIZE(fields)) {
            PyErr_Format(PyExc_TypeError, "%s takes at most %zd field values", type->tp_name, PyTuple_GET_SIZE(fields));
            Py_DECREF(fields);
            goto fail;
        }
        for (Py_ssize_t i = 0; i < npos; i++) {
            PyObject *name = PyObject_GetAttrString(PyTuple_GET_ITEM(fields, i), "name");
            int r = name ? PyObject_SetAttr((PyObject *)v, name, PyTuple_GET_ITEM(args, i)) : -1;
            Py_XDECREF(name);
            if (r < 0) {
                Py_DECREF(fields);
                goto fail;
            }
        }
        Py_DECREF(fields);
    }
    if (kw) {
        PyObject *k, *val;
        Py_ssize_t pos = 0;
        while (PyDict_Next(kw, &pos, &k, &val))
            if (PyObject_SetAttr((PyObject *)v, k, val) < 0) goto fail;
    }
    return (PyObject *)v;
fail:
    Py_DECREF(v);
    return NULL;
}

static PyObject *view_raw(PyObject *self, PyObject *noargs) {
    RecordView *v = (RecordView *)self;
    if (view_check(v) < 0) return NULL;
    PyObject *b = PyBytes_FromStringAndSize(NULL, v->size);
    if (b && record_view_copy(self, PyBytes_AS_STRING(b), v->size) < 0) Py_CLEAR(b);
    return b;
}

int record_type_untrack(PyTypeObject *t) {
    if (!PyType_IsSubtype(t, RecordView_Type)) {
        PyErr_SetString(PyExc_TypeError, "not a Record type");
        return -1;
    }
    if (t->tp_basicsize != RecordView_Type->tp_basicsize || t->tp_itemsize != RecordView_Type->tp_itemsize ||
        t->tp_dictoffset || t->tp_weaklistoffset || t->tp_finalize || t->tp_del)
        return 0;   /* it has a __dict__, slots or a finalizer: the generic (GC) path */
    if (t->tp_flags & Py_TPFLAGS_HAVE_GC) {
        t->tp_flags &= ~Py_TPFLAGS_HAVE_GC;
        t->tp_free = PyObject_Free;
        t->tp_traverse = NULL;
        t->tp_clear = NULL;
    }
    t->tp_dealloc = view_dealloc;
    PyType_Modified(t);
    return 1;
}

static PyMethodDef view_methods[] = {
    {"_raw", view_raw, METH_NOARGS, "the record's bytes"},
    {NULL, NULL, 0, NULL}};

static PyType_Slot view_slots[] = {
    {Py_tp_dealloc, view_dealloc},
    {Py_tp_getattro, descr_getattro},
    {Py_tp_methods, view_methods},
    {Py_tp_new, view_new},
    {Py_tp_doc, "A typed view of a record in shared or private memory."},
    {0, NULL}};

static PyType_Spec view_spec = {"nfos._core.RecordView", sizeof(RecordView), 1,
                                Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, view_slots};

int record_types_init(PyObject *m) {
    Field_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &field_spec, NULL);
    RecordView_Type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &view_spec, NULL);
    if (!Field_Type || !RecordView_Type) return -1;
    if (PyModule_AddObjectRef(m, "Field", (PyObject *)Field_Type) < 0) return -1;
    if (PyModule_AddObjectRef(m, "RecordView", (PyObject *)RecordView_Type) < 0) return -1;
    return 0;
}
