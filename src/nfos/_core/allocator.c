/* Allocator: indexes 0..capacity-1 handed out from per-worker pools, with
 * optional leases (paper's "resource allocator", Tables 3-5).
 *
 * Objects: one pool head per slot and one cell per index.  A pool has a
 * free list, a range of never-used indexes (so creating a big allocator
 * touches no memory per index), and the list of indexes it allocated,
 * ordered by the expiry each index had when it was linked (its `linked`
 * key).  allocate() works on the caller's own pool; only when it is empty
 * does it first reclaim its own expired leases, then steal half of the free
 * indexes of the pool with the most (reading every pool head: the "pool
 * exhausted" conflict, whose recipe is to over-provision).
 *
 * refresh() renews the lease in the index's cell: one object written.  It
 * moves the index to the tail of its owner's list only once the new expiry
 * is `slack` past its key (slack: the period of the reclaiming sweep), so a
 * host refreshed on every frame writes the list about once per sweep period,
 * not per frame: refreshes of different indexes rarely conflict, those of
 * one index on two workers do on its cell (recipe: a longer
 * refresh_interval; a refresh younger than it is a read-only no-op).  The
 * list stays sorted by key and every key is within `slack` of its expiry
 * (key <= expiry < key + slack), so a sweep at `now` walks the indexes whose
 * key is <= now, reclaims the expired ones and steps over the others (each
 * expires, or is relinked by its next refresh, within slack): an index is
 * reclaimed by the first sweep after its expiry, as with a list kept in
 * exact expiry order.
 *
 * free() returns an index to the caller's pool.  Expired leases are
 * reclaimed by expire() (the control process calls it periodically) or
 * lazily by an empty pool, and the NF's on_expire(index) runs in the same
 * transaction.
 */
#include "structures.h"

#include <structmember.h>

#define NONE_IDX (-1)
#define NO_EXPIRY UINT64_MAX
#define STEAL_MAX 256

typedef struct {
    int32_t free_head;
    uint32_t free_count;
    uint32_t fresh_next, fresh_end;   /* never-used indexes [next, end) */
    int32_t alloc_head, alloc_tail;   /* oldest .. youngest lease */
    uint32_t alloc_count;
    uint32_t pad;
} PoolHead;

typedef struct {
    uint32_t allocated;
    uint32_t owner;                   /* pool whose allocated list holds it */
    int32_t prev, next;
    uint64_t expiry;                  /* ns; NO_EXPIRY without a lease */
    uint64_t last_refresh;
    uint64_t linked;                  /* its key in the list: the expiry it had when linked */
} Cell;

typedef struct {
    PyObject_HEAD
    char *heads, *cells;
    uint32_t capacity, nslots, head_stride, cell_stride;
    uint64_t lease, refresh_interval, slack;
    uint16_t sid;
    uint32_t gen;
    PyObject *on_expire;
    PyObject *dict;
} Alloc;

static inline ObjHdr *head_obj(Alloc *a, uint32_t s) { return (ObjHdr *)(a->heads + (size_t)s * a->head_stride); }
static inline ObjHdr *cell_obj(Alloc *a, uint32_t i) { return (ObjHdr *)(a->cells + (size_t)i * a->cell_stride); }

/* Struct ids: the pool heads and the cells are told apart by the index:
 * heads are reported as index capacity + slot. */
static PoolHead *open_head(Alloc *a, uint32_t s, int write, int op) {
    return (PoolHead *)tx_open(head_obj(a, s), sizeof(PoolHead), a->sid, a->capacity + s, write, OP_TAG(op, 0));
}
static Cell *open_cell(Alloc *a, uint32_t i, int write, int op) {
    return (Cell *)tx_open(cell_obj(a, i), sizeof(Cell), a->sid, i, write, OP_TAG(op, 0));
}

static int alloc_init(PyObject *self, PyObject *args, PyObject *kw) {
    Alloc *a = (Alloc *)self;
    unsigned int capacity, workers;
    unsigned long long lease, refresh, slack;
    PyObject *on_expire;
    if (!PyArg_ParseTuple(args, "IKKOIK", &capacity, &lease, &refresh, &on_expire, &workers, &slack)) return -1;
    if (!proc.shared) {
        PyErr_SetString(PyExc_RuntimeError, "nfos structures must be created while an NF is loaded");
        return -1;
    }
    if (capacity == 0 || capacity > 0x7fffffff) {
        PyErr_SetString(PyExc_ValueError, "Allocator capacity must be 1..2^31-1");
        return -1;
    }
    a->capacity = capacity;
    a->nslots = proc.nslots;
    a->lease = lease;
    a->refresh_interval = refresh;
    a->slack = slack;
    a->head_stride = (uint32_t)obj_stride(sizeof(PoolHead));
    a->cell_stride = (uint32_t)(sizeof(ObjHdr) + sizeof(Cell));   /* packed: memory over line alignment */
    a->heads = proc_alloc((size_t)a->head_stride * a->nslots, NFOS_CACHELINE);
    a->cells = proc_alloc((size_t)a->cell_stride * capacity, NFOS_CACHELINE);
    if (!a->heads || !a->cells) return -1;
    /* the index space is split in contiguous chunks among the worker pools */
    uint32_t pools = workers ? workers : 1, at = 0;
    for (uint32_t s = 0; s < a->nslots; s++) {
        ObjHdr *h = head_obj(a, s);
        PoolHead *p = (PoolHead *)OBJ_DATA(h);
        uint32_t n = s < pools ? capacity / pools + (s < capacity % pools) : 0;
        p->free_head = NONE_IDX;
        p->fresh_next = at;
        p->fresh_end = at + n;
        p->alloc_head = p->alloc_tail = NONE_IDX;
        at += n;
    }
    /* cells start as zero pages: free, unlocked, version 0 (never touched here) */
    Py_XSETREF(a->on_expire, on_expire == Py_None ? NULL : Py_NewRef(on_expire));
    a->sid = struct_register();
    struct_region(a->sid, a->heads, a->head_stride, a->nslots);
    struct_region(a->sid, a->cells, a->cell_stride, capacity);
    a->gen = proc.arena_gen;
    return 0;
}

static int alloc_live(Alloc *a) { return struct_live(a->heads, a->gen, "Allocator"); }

static int check_index(Alloc *a, PyObject *arg, uint32_t *out) {
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred()) return -1;
    if (i < 0 || (unsigned long)i >= a->capacity) {
        PyErr_Format(PyExc_IndexError, "Allocator index %ld out of range 0..%u", i, a->capacity - 1);
        return -1;
    }
    *out = (uint32_t)i;
    return 0;
}

static inline uint32_t avail(const PoolHead *p) { return p->free_count + (p->fresh_end - p->fresh_next); }

/* The cell of index `arg`, read in place by operation `op` into *out (no
 * copy in the transaction): 0, or -1 (error set). */
static int read_indexed(Alloc *a, PyObject *arg, int op, uint32_t *i, Cell *out) {
    if (alloc_live(a) < 0 || check_index(a, arg, i) < 0) return -1;
    int32_t ent;
    char *p = tx_read_open(cell_obj(a, *i), sizeof(Cell), a->sid, *i, OP_TAG(op, 0), &ent);
    if (!p) return -1;
    return tx_read_bytes(ent, p, out, sizeof(Cell));
}

/* Put the (unlinked) index `i` on pool `h`'s free list. */
static void push_free(PoolHead *h, uint32_t i, Cell *c) {
    c->allocated = 0;
    c->expiry = NO_EXPIRY;
    c->next = h->free_head;
    h->free_head = (int32_t)i;
    h->free_count++;
}

/* unlink cell i from pool s's allocated list (as operation `op`) */
static int list_unlink(Alloc *a, uint32_t i, Cell *c, PoolHead *h, int op) {
    if (c->prev != NONE_IDX) {
        Cell *p = open_cell(a, (uint32_t)c->prev, OP_WRITE, op);
        if (!p) return -1;
        p->next = c->next;
    } else {
        h->alloc_head = c->next;
    }
    if (c->next != NONE_IDX) {
        Cell *n = open_cell(a, (uint32_t)c->next, OP_WRITE, op);
        if (!n) return -1;
        n->prev = c->prev;
    } else {
        h->alloc_tail = c->prev;
    }
    c->prev = c->next = NONE_IDX;
    h->alloc_count--;
    return 0;
}

static int list_append(Alloc *a, uint32_t i, Cell *c, PoolHead *h, int op) {
    c->prev = h->alloc_tail;
    c->next = NONE_IDX;
    if (h->alloc_tail != NONE_IDX) {
        Cell *t = open_cell(a, (uint32_t)h->alloc_tail, OP_WRITE, op);
        if (!t) return -1;
        t->next = (int32_t)i;
    } else {
        h->alloc_head = (int32_t)i;
    }
    h->alloc_tail = (int32_t)i;
    h->alloc_count++;
    return 0;
}

/* Reclaim expired leases of pool s (up to `limit`); each runs on_expire.
 * Walks the indexes whose key is <= now (see the header): the expired ones
 * are reclaimed, the others stepped over.  Returns the number reclaimed, -1
 * on abort/error. */
static int expire_pool(Alloc *a, uint32_t s, uint64_t now, int limit) {
    if (!a->lease) return 0;
    PoolHead *h = open_head(a, s, OP_READ, OPC_ALLOC_EXPIRE);
    if (!h) return -1;
    int n = 0;
    int32_t before = NONE_IDX, at = h->alloc_head;   /* the walk: `at` follows `before` in the list */
    while (n < limit && at != NONE_IDX) {
        Cell *c = open_cell(a, (uint32_t)at, OP_READ, OPC_ALLOC_EXPIRE);
        if (!c) return -1;
        if (c->linked > now) break;
        int32_t next = c->next;
        if (c->expiry > now) {   /* refreshed since it was linked: expires within slack */
            before = at;
            at = next;
            continue;
        }
        uint32_t i = (uint32_t)at;
        h = open_head(a, s, OP_WRITE, OPC_ALLOC_EXPIRE);
        c = open_cell(a, i, OP_WRITE, OPC_ALLOC_EXPIRE);
        if (!h || !c || list_unlink(a, i, c, h, OPC_ALLOC_EXPIRE) < 0) return -1;
        push_free(h, i, c);
        n++;
        if (a->on_expire) {
            PyObject *idx = PyLong_FromUnsignedLong(i);
            PyObject *r = PyObject_CallOneArg(a->on_expire, idx);
            Py_DECREF(idx);
            if (!r) return -1;
            Py_DECREF(r);
            /* on_expire may have changed the list: go on from `next` only if it still
             * follows `before` in pool s's list, else from the head */
            if (next != NONE_IDX) {
                Cell *x = open_cell(a, (uint32_t)next, OP_READ, OPC_ALLOC_EXPIRE);
                if (!x) return -1;
                if (!x->allocated || x->owner != s || x->prev != before) {
                    h = open_head(a, s, OP_READ, OPC_ALLOC_EXPIRE);
                    if (!h) return -1;
                    before = NONE_IDX;
                    next = h->alloc_head;
                }
            }
        }
        at = next;
    }
    return n;
}

/* Move up to half of the richest other pool's free indexes into pool `me`. */
static int steal(Alloc *a, uint32_t me, PoolHead *mine) {
    uint32_t best = UINT32_MAX, best_avail = 0;
    for (uint32_t s = 0; s < a->nslots; s++) {
        if (s == me) continue;
        PoolHead *h = open_head(a, s, OP_READ, OPC_ALLOC_ALLOCATE);
        if (!h) return -1;
        if (avail(h) > best_avail) {
            best_avail = avail(h);
            best = s;
        }
    }
    if (best == UINT32_MAX) return 0;
    PoolHead *v = open_head(a, best, OP_WRITE, OPC_ALLOC_ALLOCATE);
    if (!v) return -1;
    uint32_t want = (avail(v) + 1) / 2;
    if (want > STEAL_MAX) want = STEAL_MAX;
    uint32_t fresh = v->fresh_end - v->fresh_next;
    if (fresh) {   /* split the never-used range: O(1) */
        uint32_t k = fresh < want ? fresh : want;
        if (mine->fresh_next == mine->fresh_end) {
            mine->fresh_next = v->fresh_end - k;
            mine->fresh_end = v->fresh_end;
            v->fresh_end -= k;
            return (int)k;
        }
    }
    uint32_t moved = 0;
    while (moved < want && v->free_head != NONE_IDX) {
        uint32_t i = (uint32_t)v->free_head;
        Cell *c = open_cell(a, i, OP_WRITE, OPC_ALLOC_ALLOCATE);
        if (!c) return -1;
        v->free_head = c->next;
        v->free_count--;
        c->next = mine->free_head;
        mine->free_head = (int32_t)i;
        mine->free_count++;
        moved++;
    }
    return (int)moved;
}

/* allocate() -> index, or None when every pool is empty. */
static PyObject *alloc_allocate(PyObject *self, PyObject *noargs) {
    Alloc *a = (Alloc *)self;
    if (alloc_live(a) < 0) return NULL;
    uint32_t me = (uint32_t)proc.slot;
    PoolHead *h = open_head(a, me, OP_WRITE, OPC_ALLOC_ALLOCATE);
    if (!h) return NULL;
    if (avail(h) == 0) {
        if (expire_pool(a, me, proc.clock, STEAL_MAX) < 0) return NULL;
        h = open_head(a, me, OP_WRITE, OPC_ALLOC_ALLOCATE);
        if (!h) return NULL;
        if (avail(h) == 0) {
            int k = steal(a, me, h);
            if (k < 0) return NULL;
            if (k == 0) {   /* nothing free anywhere: reclaim other pools' expired leases, retry */
                int reclaimed = 0;
                for (uint32_t s = 0; s < a->nslots; s++) {
                    if (s == me) continue;
                    int n = expire_pool(a, s, proc.clock, STEAL_MAX);
                    if (n < 0) return NULL;
                    reclaimed += n;
                }
                h = open_head(a, me, OP_WRITE, OPC_ALLOC_ALLOCATE);
                if (!h) return NULL;
                if (reclaimed) k = steal(a, me, h);
                if (k < 0) return NULL;
                if (k == 0) Py_RETURN_NONE;
            }
        }
    }
    uint32_t i;
    if (h->free_head != NONE_IDX) {
        i = (uint32_t)h->free_head;
        Cell *c = open_cell(a, i, OP_WRITE, OPC_ALLOC_ALLOCATE);
        if (!c) return NULL;
        h->free_head = c->next;
        h->free_count--;
    } else {
        i = h->fresh_next++;
    }
    Cell *c = open_cell(a, i, OP_WRITE, OPC_ALLOC_ALLOCATE);
    if (!c) return NULL;
    c->allocated = 1;
    c->owner = me;
    c->expiry = a->lease ? proc.clock + a->lease : NO_EXPIRY;
    c->last_refresh = proc.clock;
    c->linked = c->expiry;
    if (list_append(a, i, c, h, OPC_ALLOC_ALLOCATE) < 0) return NULL;
    return PyLong_FromUnsignedLong(i);
}

static inline int live_lease(Alloc *a, const Cell *c) {
    return c->allocated && (!a->lease || c->expiry > proc.clock);
}

/* free(i) -> True, or False if it was not allocated (a no-op). */
static PyObject *alloc_free(PyObject *self, PyObject *arg) {
    Alloc *a = (Alloc *)self;
    uint32_t i;
    Cell seen;
    if (read_indexed(a, arg, OPC_ALLOC_FREE, &i, &seen) < 0) return NULL;
    if (!seen.allocated) Py_RETURN_FALSE;
    Cell *c = open_cell(a, i, OP_WRITE, OPC_ALLOC_FREE);
    PoolHead *owner = c ? open_head(a, c->owner, OP_WRITE, OPC_ALLOC_FREE) : NULL;
    if (!owner || list_unlink(a, i, c, owner, OPC_ALLOC_FREE) < 0) return NULL;
    PoolHead *mine = open_head(a, (uint32_t)proc.slot, OP_WRITE, OPC_ALLOC_FREE);
    if (!mine) return NULL;
    push_free(mine, i, c);
    Py_RETURN_TRUE;
}

/* refresh(i) -> True if allocated (lease renewed, or renewed recently
 * enough), False if not allocated. */
static PyObject *alloc_refresh(PyObject *self, PyObject *arg) {
    Alloc *a = (Alloc *)self;
    uint32_t i;
    Cell seen;
    if (read_indexed(a, arg, OPC_ALLOC_REFRESH, &i, &seen) < 0) return NULL;
    if (!live_lease(a, &seen)) Py_RETURN_FALSE;
    if (proc.clock >= seen.last_refresh && proc.clock - seen.last_refresh < a->refresh_interval) Py_RETURN_TRUE;
    Cell *c = open_cell(a, i, OP_WRITE, OPC_ALLOC_REFRESH);   /* a copy of the version read */
    if (!c) return NULL;
    c->last_refresh = proc.clock;
    if (!a->lease) Py_RETURN_TRUE;   /* no expiry: the list order does not matter */
    c->expiry = proc.clock + a->lease;
    if (c->expiry >= c->linked + a->slack) {   /* its key is a sweep period behind: relink */
        PoolHead *h = open_head(a, c->owner, OP_READ, OPC_ALLOC_REFRESH);
        if (h && h->alloc_tail != (int32_t)i) {   /* the tail keeps its place: nothing follows it */
            h = open_head(a, c->owner, OP_WRITE, OPC_ALLOC_REFRESH);
            if (h && (list_unlink(a, i, c, h, OPC_ALLOC_REFRESH) < 0 || list_append(a, i, c, h, OPC_ALLOC_REFRESH) < 0))
                return NULL;
        }
        if (!h) return NULL;
        c->linked = c->expiry;
    }
    Py_RETURN_TRUE;
}

static PyObject *alloc_is_allocated(PyObject *self, PyObject *arg) {
    Alloc *a = (Alloc *)self;
    uint32_t i;
    Cell c;
    if (read_indexed(a, arg, OPC_ALLOC_QUERY, &i, &c) < 0) return NULL;
    return PyBool_FromLong(live_lease(a, &c));
}

/* lease_remaining(i) -> ns left, or None (not allocated / no lease). */
static PyObject *alloc_lease_remaining(PyObject *self, PyObject *arg) {
    Alloc *a = (Alloc *)self;
    uint32_t i;
    Cell c;
    if (read_indexed(a, arg, OPC_ALLOC_QUERY, &i, &c) < 0) return NULL;
    if (!live_lease(a, &c) || !a->lease) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(c.expiry - proc.clock);
}

/* expire(limit=...) -> indexes reclaimed, over every pool (control process). */
static PyObject *alloc_expire(PyObject *self, PyObject *args) {
    Alloc *a = (Alloc *)self;
    int limit = 1 << 20;
    if (!PyArg_ParseTuple(args, "|i", &limit)) return NULL;
    if (alloc_live(a) < 0) return NULL;
    int total = 0;
    for (uint32_t s = 0; s < a->nslots && total < limit; s++) {
        int n = expire_pool(a, s, proc.clock, limit - total);
        if (n < 0) return NULL;
        total += n;
    }
    return PyLong_FromLong(total);
}

/* counts() -> (allocated, free): reads every pool head (for tests/inspection). */
static PyObject *alloc_counts(PyObject *self, PyObject *noargs) {
    Alloc *a = (Alloc *)self;
    if (alloc_live(a) < 0) return NULL;
    uint64_t used = 0, free_ = 0;
    for (uint32_t s = 0; s < a->nslots; s++) {
        PoolHead *h = open_head(a, s, OP_READ, OPC_ALLOC_QUERY);
        if (!h) return NULL;
        used += h->alloc_count;
        free_ += avail(h);
    }
    return Py_BuildValue("(KK)", (unsigned long long)used, (unsigned long long)free_);
}

static PyObject *alloc_sid(PyObject *self, void *c) { return PyLong_FromLong(((Alloc *)self)->sid); }

static int alloc_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(((Alloc *)self)->on_expire);
    Py_VISIT(((Alloc *)self)->dict);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int alloc_clear(PyObject *self) {
    Py_CLEAR(((Alloc *)self)->on_expire);
    Py_CLEAR(((Alloc *)self)->dict);
    return 0;
}

static void alloc_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    alloc_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *alloc_set_on_expire(PyObject *self, PyObject *fn) {
    Py_XSETREF(((Alloc *)self)->on_expire, fn == Py_None ? NULL : Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyMethodDef alloc_methods[] = {
    {"allocate", alloc_allocate, METH_NOARGS, "allocate() -> index, or None when exhausted"},
    {"free", alloc_free, METH_O, "free(i) -> False if i was not allocated"},
    {"refresh", alloc_refresh, METH_O, "refresh(i): renew the lease (no-op within refresh_interval)"},
    {"is_allocated", alloc_is_allocated, METH_O, "is_allocated(i) -> bool (an expired lease is not)"},
    {"lease_remaining", alloc_lease_remaining, METH_O, "lease_remaining(i) -> ns, or None"},
    {"expire", alloc_expire, METH_VARARGS, "reclaim expired leases of every pool; -> count"},
    {"counts", alloc_counts, METH_NOARGS, "(allocated, free) over all pools"},
    {"_set_on_expire", alloc_set_on_expire, METH_O, NULL},
    {NULL}};
static PyGetSetDef alloc_getset[] = {{"_struct_id", alloc_sid, NULL, NULL, NULL}, {NULL}};
static PyMemberDef alloc_members[] = {{"__dictoffset__", T_PYSSIZET, offsetof(Alloc, dict), READONLY},
                                      {"capacity", T_UINT, offsetof(Alloc, capacity), READONLY},
                                      {NULL}};

static PyType_Slot alloc_slots[] = {
    {Py_tp_init, alloc_init},         {Py_tp_new, PyType_GenericNew},   {Py_tp_methods, alloc_methods},
    {Py_tp_dealloc, alloc_dealloc},   {Py_tp_traverse, alloc_traverse}, {Py_tp_clear, alloc_clear},
    {Py_tp_getset, alloc_getset},     {Py_tp_members, alloc_members},   {0, NULL}};
static PyType_Spec alloc_spec = {"nfos._core.AllocatorBase", sizeof(Alloc), 0,
                                 Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, alloc_slots};

int allocator_module_init(PyObject *m) {
    PyObject *t = PyType_FromModuleAndSpec(m, &alloc_spec, NULL);
    if (!t) return -1;
    return PyModule_AddObject(m, "AllocatorBase", t);
}
