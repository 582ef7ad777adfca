/* Map: a transactional hash map with bucket-granularity conflicts.
 *
 * `nbuckets` bucket objects (a power of two), each holding up to `slots`
 * entries inline: {used, key hash, key, value}.  A key lives only in its own
 * bucket, so two operations conflict exactly when their keys share a bucket:
 * the same key, or a hash collision.  The recipes are the two knobs: more
 * buckets, or another hash function (CRC32C or a seeded multiplicative mix).
 * A full bucket raises MapFull (a TableFull), never corrupts.
 *
 * Capacity: the Map accepts exactly `capacity` entries, counted without a
 * global hot spot, as the Allocator's pools do: one entry budget per slot
 * (an object each; reported as element nbuckets + slot), the capacity split
 * evenly among the slots at creation.  Inserting a new key takes one entry
 * from the caller's budget (its own object: no conflict); an empty budget
 * steals half of the richest one (reading every budget: the only conflict,
 * "budget ran dry", recipe: over-provision capacity); every budget empty is
 * MapFull "Map 'x' is full (capacity N entries)".  A delete gives its entry
 * back to the caller's budget.  len() reads every budget.
 *
 * Each bucket also records the hash of the key last written, so a conflict
 * can be told apart as "same key" (use a DistributedObj) or "collision"
 * (more buckets / other hash).
 */
#include "structures.h"

#include <structmember.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <nmmintrin.h>
#define NFOS_CRC32C_HW 1
#endif

static PyObject *MapFull;

typedef struct {
    uint32_t offset;
    uint16_t size;
    uint8_t kind;
} Lay;

typedef struct {
    uint32_t size;        /* bytes, padded to 8 */
    int nfields;
    Lay f[32];
    PyTypeObject *rtype;  /* record type, or NULL for a scalar */
    PyObject *names[32];
} Layout;

typedef struct {
    PyObject_HEAD
    char *base;
    char *budgets;        /* one Budget object per slot */
    uint32_t capacity, nslots, budget_stride;
    uint32_t nbuckets, slots, payload, stride, slot_size;
    uint16_t sid;
    uint32_t gen;
    int hash_kind;
    uint64_t seed;
    Layout key, val;
    PyObject *dict;
} Map;

typedef struct {
    uint32_t count;
    uint32_t last_key_hash;
} BucketHdr;

typedef struct {
    uint32_t used;
    uint32_t hash;
} SlotHdr;

typedef struct {
    uint32_t avail;       /* entries this slot may still insert */
    uint32_t pad;
} Budget;

/* ------------------------------------------------------------------ hash */

static uint32_t crc32c_table[256];

static void crc32c_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc32c_table[i] = c;
    }
}

static uint32_t crc32c_sw(const uint8_t *p, size_t n, uint32_t seed) {
    uint32_t c = ~seed;
    while (n--) c = crc32c_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#ifdef NFOS_CRC32C_HW
/* The same CRC with SSE4.2's crc32 instruction (8 bytes per step); used when
 * the CPU has it and it agrees with the table on a test vector. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(const uint8_t *p, size_t n, uint32_t seed) {
    uint64_t c = ~seed;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}
static int crc32c_have_hw;
#endif

static void crc32c_select(void) {
#ifdef NFOS_CRC32C_HW
    if (__builtin_cpu_supports("sse4.2")) {
        uint8_t v[29];
        for (int i = 0; i < 29; i++) v[i] = (uint8_t)(i * 37 + 1);
        crc32c_have_hw = crc32c_hw(v, 29, 7) == crc32c_sw(v, 29, 7) && crc32c_hw(v, 8, 0) == crc32c_sw(v, 8, 0);
    }
#endif
}

static inline uint32_t crc32c(const uint8_t *p, size_t n, uint32_t seed) {
#ifdef NFOS_CRC32C_HW
    if (crc32c_have_hw) return crc32c_hw(p, n, seed);
#endif
    return crc32c_sw(p, n, seed);
}

static uint32_t mult_hash(const uint8_t *p, size_t n, uint64_t seed) {
    uint64_t h = seed ^ 0x9e3779b97f4a7c15ull ^ n;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = 0;
        memcpy(&w, p + i, n - i < 8 ? n - i : 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 33;
    }
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return (uint32_t)h;
}

static inline uint32_t key_hash(Map *m, const uint8_t *k) {
    return m->hash_kind == 0 ? crc32c(k, m->key.size, (uint32_t)m->seed) : mult_hash(k, m->key.size, m->seed);
}

/* --------------------------------------------------------------- layouts */

/* layout spec: (record type or None, size, [(name, offset, size, kind), ...]) */
static int parse_layout(PyObject *spec, Layout *L) {
    PyObject *rtype, *fields;
    unsigned int size;
    if (!PyArg_ParseTuple(spec, "OIO!", &rtype, &size, &PyList_Type, &fields)) return -1;
    if (PyList_GET_SIZE(fields) > 32 || PyList_GET_SIZE(fields) < 1) {
        PyErr_SetString(PyExc_ValueError, "a map key or value has 1..32 fields");
        return -1;
    }
    L->size = (size + 7) & ~7u;
    L->nfields = (int)PyList_GET_SIZE(fields);
    L->rtype = rtype == Py_None ? NULL : (PyTypeObject *)Py_NewRef(rtype);
    for (int i = 0; i < L->nfields; i++) {
        PyObject *name;
        unsigned int off, fsize, kind;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(fields, i), "UIII", &name, &off, &fsize, &kind)) return -1;
        L->f[i].offset = off;
        L->f[i].size = (uint16_t)fsize;
        L->f[i].kind = (uint8_t)kind;
        L->names[i] = Py_NewRef(name);
    }
    return 0;
}

/* Python key -> packed bytes (zero padded, so memcmp is equality). */
static int pack(Layout *L, PyObject *obj, uint8_t *out) {
    memset(out, 0, L->size);
    if (L->rtype && PyObject_TypeCheck(obj, L->rtype)) return record_view_copy(obj, out, L->size);
    if (!L->rtype) return store_field((char *)out, L->f[0].kind, L->f[0].size, obj, L->names[0]);
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != L->nfields) {
        PyErr_Format(PyExc_TypeError, "a key of this map is a %s or a tuple of %d values", L->rtype->tp_name,
                     L->nfields);
        return -1;
    }
    for (int i = 0; i < L->nfields; i++)
        if (store_field((char *)out + L->f[i].offset, L->f[i].kind, L->f[i].size, PyTuple_GET_ITEM(obj, i),
                        L->names[i]) < 0)
            return -1;
    return 0;
}

static PyObject *unpack_key(Layout *L, const uint8_t *k) {
    if (!L->rtype) return load_field((const char *)k, L->f[0].kind, L->f[0].size);
    PyObject *t = PyTuple_New(L->nfields);
    for (int i = 0; i < L->nfields; i++)
        PyTuple_SET_ITEM(t, i, load_field((const char *)k + L->f[i].offset, L->f[i].kind, L->f[i].size));
    return t;
}

/* ------------------------------------------------------------------ map */

static int map_init(PyObject *self, PyObject *args, PyObject *kw) {
    Map *m = (Map *)self;
    PyObject *kspec, *vspec;
    unsigned int nbuckets, slots, capacity;
    int hash_kind;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OOIIiKI", &kspec, &vspec, &nbuckets, &slots, &hash_kind, &seed, &capacity))
        return -1;
    if (nbuckets == 0 || (nbuckets & (nbuckets - 1)) || slots == 0 || slots > 64) {
        PyErr_SetString(PyExc_ValueError, "buckets must be a power of two and slots 1..64");
        return -1;
    }
    if (capacity == 0 || capacity > 0x7fffffff) {
        PyErr_SetString(PyExc_ValueError, "Map capacity must be 1..2^31-1");
        return -1;
    }
    if (!proc.shared) {
        PyErr_SetString(PyExc_RuntimeError, "nfos structures must be created while an NF is loaded");
        return -1;
    }
    if (parse_layout(kspec, &m->key) < 0 || parse_layout(vspec, &m->val) < 0) return -1;
    if (m->key.size > 256) {
        PyErr_SetString(PyExc_ValueError, "map keys are at most 256 bytes");
        return -1;
    }
    m->slot_size = (uint32_t)sizeof(SlotHdr) + m->key.size + m->val.size;
    m->payload = (uint32_t)sizeof(BucketHdr) + slots * m->slot_size;
    m->stride = (uint32_t)obj_stride(m->payload);
    m->nbuckets = nbuckets;
    m->slots = slots;
    m->hash_kind = hash_kind;
    m->seed = seed;
    m->base = proc_alloc((size_t)m->stride * nbuckets, NFOS_CACHELINE);
    if (!m->base) return -1;
    /* the entry budgets: the capacity split evenly among the slots (the control process's
     * included, so its transactions insert without stealing) */
    m->capacity = capacity;
    m->nslots = proc.nslots;
    m->budget_stride = (uint32_t)obj_stride(sizeof(Budget));
    m->budgets = proc_alloc((size_t)m->budget_stride * m->nslots, NFOS_CACHELINE);
    if (!m->budgets) return -1;
    for (uint32_t s = 0; s < m->nslots; s++)
        ((Budget *)OBJ_DATA(m->budgets + (size_t)s * m->budget_stride))->avail =
            capacity / m->nslots + (s < capacity % m->nslots);
    m->sid = struct_register();
    struct_region(m->sid, m->base, m->stride, m->nbuckets);
    struct_region(m->sid, m->budgets, m->budget_stride, m->nslots);
    m->gen = proc.arena_gen;
    return 0;
}

static int map_live(Map *m) { return struct_live(m->base, m->gen, "Map"); }

/* "Map 'x'" (or "Map at nf.py:12"): the Python side's label, for errors. */
static PyObject *map_label(Map *m) {
    PyObject *info = PyObject_GetAttrString((PyObject *)m, "info");
    PyObject *label = info ? PyObject_GetAttrString(info, "label") : NULL;
    Py_XDECREF(info);
    if (!label || !PyUnicode_Check(label)) {
        Py_XDECREF(label);
        PyErr_Clear();
        return PyUnicode_FromString("Map");
    }
    return label;
}

static Budget *open_budget(Map *m, uint32_t s, int write, int op) {
    return (Budget *)tx_open((ObjHdr *)(m->budgets + (size_t)s * m->budget_stride), sizeof(Budget), m->sid,
                             m->nbuckets + s, write, OP_TAG(op, 0));
}

static uint32_t my_budget(Map *m) {
    return proc.slot >= 0 && (uint32_t)proc.slot < m->nslots ? (uint32_t)proc.slot : 0;
}

/* One entry for a new key from the caller's budget (stealing half of the
 * richest one when it is empty): 0, or -1 (MapFull: every budget is empty;
 * or an abort). */
static int take_entry(Map *m) {
    uint32_t me = my_budget(m);
    Budget *b = open_budget(m, me, OP_WRITE, OPC_MAP_SET);
    if (!b) return -1;
    if (b->avail == 0) {
        uint32_t best = UINT32_MAX, most = 0;
        for (uint32_t s = 0; s < m->nslots; s++) {
            if (s == me) continue;
            Budget *o = open_budget(m, s, OP_READ, OPC_MAP_SET);
            if (!o) return -1;
            if (o->avail > most) {
                most = o->avail;
                best = s;
            }
        }
        if (best == UINT32_MAX) {
            PyObject *label = map_label(m);
            PyErr_Format(MapFull, "%U is full (capacity %u entries)", label, m->capacity);
            Py_XDECREF(label);
            return -1;
        }
        Budget *v = open_budget(m, best, OP_WRITE, OPC_MAP_SET);
        if (!v) return -1;
        uint32_t k = (v->avail + 1) / 2;
        v->avail -= k;
        b->avail += k;
    }
    b->avail--;
    return 0;
}

/* A deleted key's entry goes back to the caller's budget. */
static int give_entry(Map *m) {
    Budget *b = open_budget(m, my_budget(m), OP_WRITE, OPC_MAP_DELETE);
    if (!b) return -1;
    b->avail++;
    return 0;
}

/* Open the key's bucket; returns its payload (NULL on abort). */
static char *open_bucket(Map *m, const uint8_t *k, uint32_t *hash, uint32_t *bi, ObjHdr **obj, int op, int write) {
    *hash = key_hash(m, k);
    *bi = *hash & (m->nbuckets - 1);
    *obj = (ObjHdr *)(m->base + (size_t)*bi * m->stride);
    return tx_open(*obj, m->payload, m->sid, *bi, write, OP_TAG(op, *hash));
}

static inline SlotHdr *slot_at(Map *m, char *b, uint32_t i) {
    return (SlotHdr *)(b + sizeof(BucketHdr) + (size_t)i * m->slot_size);
}

/* The slot of key k (hash h) in bucket b, or -1.  It stops after the
 * bucket's `count` used slots, so a lookup touches only the cache lines up
 * to the entries there are.  (Read in place, b may be torn: the loop stays
 * within the bucket, and the caller validates before using the result.) */
static int find(Map *m, char *b, uint32_t h, const uint8_t *k) {
    uint32_t left = ((BucketHdr *)b)->count;
    for (uint32_t i = 0; i < m->slots && left; i++) {
        SlotHdr *s = slot_at(m, b, i);
        if (!s->used) continue;
        if (s->hash == h && memcmp(s + 1, k, m->key.size) == 0) return (int)i;
        left--;
    }
    return -1;
}

static PyObject *value_of(Map *m, char *b, int i, ObjHdr *obj, uint32_t bi) {
    char *v = (char *)(slot_at(m, b, (uint32_t)i) + 1) + m->key.size;
    if (!m->val.rtype) return load_field(v, m->val.f[0].kind, m->val.f[0].size);
    PyObject *r = record_view_new(m->val.rtype, v, obj, m->val.size, m->sid, bi, 0);
    if (r) {
        ((RecordView *)r)->objsize = m->payload;
        ((RecordView *)r)->wtag = OP_TAG(OPC_MAP_SET, slot_at(m, b, (uint32_t)i)->hash);
    }
    return r;
}

/* Look key k up in its bucket, read in place (no copy): the slot, or -1
 * (absent), or -2 (aborted, exception set).  A scalar value is loaded into
 * `val` (m->val.size bytes) under the same validation. */
static int lookup(Map *m, const uint8_t *k, uint32_t *bi, ObjHdr **obj, int32_t *ent, char **bucket, uint8_t *val) {
    uint32_t h = key_hash(m, k);
    *bi = h & (m->nbuckets - 1);
    *obj = (ObjHdr *)(m->base + (size_t)*bi * m->stride);
    for (;;) {
        char *b = tx_read_open(*obj, m->payload, m->sid, *bi, OP_TAG(OPC_MAP_GET, h), ent);
        if (!b) return -2;
        int i = find(m, b, h, k);
        if (i >= 0 && val) memcpy(val, (char *)(slot_at(m, b, (uint32_t)i) + 1) + m->key.size, m->val.size);
        int r = tx_read_check(*ent);
        if (r < 0) return -2;
        if (r == 0) {
            *bucket = b;
            return i;
        }
    }
}

/* get(key, default=None) -> value (a writable record view, or a scalar) */
static PyObject *map_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Map *m = (Map *)self;
    if (nargs < 1 || nargs > 2) return PyErr_Format(PyExc_TypeError, "get(key, default=None)");
    if (map_live(m) < 0) return NULL;
    uint8_t k[256];
    uint64_t small[4];
    uint8_t *val = NULL;
    if (pack(&m->key, args[0], k) < 0) return NULL;
    if (!m->val.rtype) {
        val = m->val.size <= sizeof small ? (uint8_t *)small : PyMem_Malloc(m->val.size);
        if (!val) return PyErr_NoMemory();
    }
    uint32_t bi;
    ObjHdr *obj;
    int32_t ent;
    char *b;
    PyObject *r;
    int i = lookup(m, k, &bi, &obj, &ent, &b, val);
    if (i == -2) r = NULL;
    else if (i < 0) r = Py_NewRef(nargs > 1 ? args[1] : Py_None);
    else if (val) r = load_field((const char *)val, m->val.f[0].kind, m->val.f[0].size);
    else {
        r = value_of(m, b, i, obj, bi);
        if (r) record_view_via(r, ent);
    }
    if (val && val != (uint8_t *)small) PyMem_Free(val);
    return r;
}

static int map_contains(PyObject *self, PyObject *key) {
    Map *m = (Map *)self;
    if (map_live(m) < 0) return -1;
    uint8_t k[256];
    uint32_t bi;
    ObjHdr *obj;
    int32_t ent;
    char *b;
    if (pack(&m->key, key, k) < 0) return -1;
    int i = lookup(m, k, &bi, &obj, &ent, &b, NULL);
    return i == -2 ? -1 : i >= 0;
}

static PyObject *map_subscript(PyObject *self, PyObject *key) {
    PyObject *sentinel = Py_Ellipsis;
    PyObject *a2[2] = {key, sentinel};
    PyObject *r = map_get(self, a2, 2);
    if (r == sentinel) {
        Py_DECREF(r);
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return r;
}

/* set(key, value=None) -> value view: insert or update.  value is a record of
 * the value type, a scalar, or None (a new entry is zeroed, an existing one
 * kept).  Raises MapFull when the key's bucket is full. */
static PyObject *map_set(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Map *m = (Map *)self;
    if (nargs < 1 || nargs > 2) return PyErr_Format(PyExc_TypeError, "set(key, value=None)");
    if (map_live(m) < 0) return NULL;
    PyObject *value = nargs > 1 ? args[1] : Py_None;
    uint8_t k[256], v[4096];
    if (pack(&m->key, args[0], k) < 0) return NULL;
    int have_value = value != Py_None;
    if (have_value) {
        if (m->val.size > sizeof v) return PyErr_Format(PyExc_ValueError, "value too large");
        if (m->val.rtype && !PyObject_TypeCheck(value, m->val.rtype))
            return PyErr_Format(PyExc_TypeError, "this map's values are %s records", m->val.rtype->tp_name);
        if (pack(&m->val, value, v) < 0) return NULL;
    }
    uint32_t h, bi;
    ObjHdr *obj;
    char *b = open_bucket(m, k, &h, &bi, &obj, OPC_MAP_SET, OP_WRITE);
    if (!b) return NULL;
    int i = find(m, b, h, k);
    if (i < 0) {
        for (uint32_t j = 0; j < m->slots && i < 0; j++)
            if (!slot_at(m, b, j)->used) i = (int)j;
        if (i < 0) {
            PyObject *label = map_label(m);
            PyErr_Format(MapFull,
                         "%U: bucket %u is full (%u entries per bucket, capacity %u entries); raise buckets= or "
                         "use another hash=", label, bi, m->slots, m->capacity);
            Py_XDECREF(label);
            return NULL;
        }
        if (take_entry(m) < 0) return NULL;
        SlotHdr *s = slot_at(m, b, (uint32_t)i);
        s->used = 1;
        s->hash = h;
        memcpy(s + 1, k, m->key.size);
        memset((char *)(s + 1) + m->key.size, 0, m->val.size);
        ((BucketHdr *)b)->count++;
    }
    ((BucketHdr *)b)->last_key_hash = h;
    if (have_value) memcpy((char *)(slot_at(m, b, (uint32_t)i) + 1) + m->key.size, v, m->val.size);
    PyObject *r = value_of(m, b, i, obj, bi);
    if (r && m->val.rtype) ((RecordView *)r)->flags |= RV_OPENED_W;
    return r;
}

static PyObject *map_delete_impl(Map *m, PyObject *key, int raise);

static int map_ass_subscript(PyObject *self, PyObject *key, PyObject *value) {
    if (value == NULL) {
        PyObject *r = map_delete_impl((Map *)self, key, 1);
        if (!r) return -1;
        Py_DECREF(r);
        return 0;
    }
    PyObject *a[2] = {key, value};
    PyObject *r = map_set(self, a, 2);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *map_delete_impl(Map *m, PyObject *key, int raise) {
    if (map_live(m) < 0) return NULL;
    uint8_t k[256];
    uint32_t h, bi;
    ObjHdr *obj;
    if (pack(&m->key, key, k) < 0) return NULL;
    char *b = open_bucket(m, k, &h, &bi, &obj, OPC_MAP_DELETE, OP_WRITE);
    if (!b) return NULL;
    int i = find(m, b, h, k);
    if (i < 0) {
        if (raise) {
            PyErr_SetObject(PyExc_KeyError, key);
            return NULL;
        }
        Py_RETURN_FALSE;
    }
    slot_at(m, b, (uint32_t)i)->used = 0;
    ((BucketHdr *)b)->count--;
    ((BucketHdr *)b)->last_key_hash = h;
    if (give_entry(m) < 0) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *map_delete(PyObject *self, PyObject *key) { return map_delete_impl((Map *)self, key, 0); }

/* items() -> [(key, value)]: reads every bucket (for inspection, not hot paths). */
static PyObject *map_items(PyObject *self, PyObject *noargs) {
    Map *m = (Map *)self;
    if (map_live(m) < 0) return NULL;
    PyObject *out = PyList_New(0);
    for (uint32_t bi = 0; bi < m->nbuckets; bi++) {
        ObjHdr *obj = (ObjHdr *)(m->base + (size_t)bi * m->stride);
        char *b = tx_open(obj, m->payload, m->sid, bi, OP_READ, OP_TAG(OPC_MAP_GET, 0));
        if (!b) {
            Py_DECREF(out);
            return NULL;
        }
        if (((BucketHdr *)b)->count == 0) continue;
        for (uint32_t i = 0; i < m->slots; i++) {
            SlotHdr *s = slot_at(m, b, i);
            if (!s->used) continue;
            PyObject *kv = PyTuple_Pack(2, Py_None, Py_None);
            PyTuple_SET_ITEM(kv, 0, unpack_key(&m->key, (uint8_t *)(s + 1)));
            PyTuple_SET_ITEM(kv, 1, value_of(m, b, (int)i, obj, bi));
            Py_DECREF(Py_None);
            Py_DECREF(Py_None);
            PyList_Append(out, kv);
            Py_DECREF(kv);
        }
    }
    return out;
}

/* len(m): the entries held (capacity minus every budget: reads them all). */
static Py_ssize_t map_length(PyObject *self) {
    Map *m = (Map *)self;
    if (map_live(m) < 0) return -1;
    uint64_t avail = 0;
    for (uint32_t s = 0; s < m->nslots; s++) {
        Budget *b = open_budget(m, s, OP_READ, OPC_MAP_GET);
        if (!b) return -1;
        avail += b->avail;
    }
    return (Py_ssize_t)(m->capacity - (avail < m->capacity ? avail : m->capacity));
}

static int map_bool(PyObject *self) { return 1; }   /* a Map is true even when empty (no transaction needed) */

/* bucket_of(key) -> bucket index (for tests and the profiler). */
static PyObject *map_bucket_of(PyObject *self, PyObject *key) {
    Map *m = (Map *)self;
    uint8_t k[256];
    if (pack(&m->key, key, k) < 0) return NULL;
    return PyLong_FromUnsignedLong(key_hash(m, k) & (m->nbuckets - 1));
}

static PyObject *map_sid(PyObject *self, void *c) { return PyLong_FromLong(((Map *)self)->sid); }

static void layout_clear(Layout *L) {
    Py_CLEAR(L->rtype);
    for (int i = 0; i < L->nfields; i++) Py_CLEAR(L->names[i]);
    L->nfields = 0;
}

static int map_traverse(PyObject *self, visitproc visit, void *arg) {
    Map *m = (Map *)self;
    Py_VISIT(m->key.rtype);
    Py_VISIT(m->val.rtype);
    Py_VISIT(m->dict);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int map_clear(PyObject *self) {
    Map *m = (Map *)self;
    layout_clear(&m->key);
    layout_clear(&m->val);
    Py_CLEAR(m->dict);
    return 0;
}

static void map_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    map_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef map_methods[] = {
    {"get", (PyCFunction)(void (*)(void))map_get, METH_FASTCALL, "get(key, default=None) -> value"},
    {"set", (PyCFunction)(void (*)(void))map_set, METH_FASTCALL, "set(key, value=None) -> value view"},
    {"delete", map_delete, METH_O, "delete(key) -> True if it was there"},
    {"items", map_items, METH_NOARGS, "all (key, value) pairs (reads every bucket)"},
    {"bucket_of", map_bucket_of, METH_O, "the bucket index of a key"},
    {NULL}};
static PyGetSetDef map_getset[] = {{"_struct_id", map_sid, NULL, NULL, NULL}, {NULL}};
static PyMemberDef map_members[] = {{"__dictoffset__", T_PYSSIZET, offsetof(Map, dict), READONLY},
                                    {"buckets", T_UINT, offsetof(Map, nbuckets), READONLY},
                                    {"capacity", T_UINT, offsetof(Map, capacity), READONLY},
                                    {"slots_per_bucket", T_UINT, offsetof(Map, slots), READONLY},
                                    {NULL}};

static PyType_Slot map_slots[] = {
    {Py_tp_init, map_init},           {Py_tp_new, PyType_GenericNew},     {Py_tp_methods, map_methods},
    {Py_tp_dealloc, map_dealloc},     {Py_tp_traverse, map_traverse},     {Py_tp_clear, map_clear},
    {Py_tp_getset, map_getset},       {Py_tp_members, map_members},       {Py_mp_subscript, map_subscript},
    {Py_mp_ass_subscript, map_ass_subscript}, {Py_sq_contains, map_contains}, {Py_mp_length, map_length},
    {Py_nb_bool, map_bool},           {0, NULL}};
static PyType_Spec map_spec = {"nfos._core.MapBase", sizeof(Map), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, map_slots};

int map_module_init(PyObject *m) {
    crc32c_init();
    crc32c_select();
    MapFull = PyErr_NewExceptionWithDoc("nfos.MapFull",
                                        "The Map holds its capacity of entries, or the key's bucket is full.",
                                        proc.TableFull, NULL);
    if (!MapFull) return -1;
    PyModule_AddObjectRef(m, "MapFull", MapFull);
    PyObject *t = PyType_FromModuleAndSpec(m, &map_spec, NULL);
    if (!t) return -1;
    return PyModule_AddObject(m, "MapBase", t);
}
