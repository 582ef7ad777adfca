/* What the structure plug-ins share: ids and the "still loaded" check. */
#include "structures.h"

#include <sys/mman.h>
#include <unistd.h>

static uint16_t next_struct_id = 1;
uint16_t struct_register(void) { return next_struct_id++; }

int struct_live(const void *base, uint32_t gen, const char *name) {
    if (base && gen == proc.arena_gen) return 0;
    PyErr_Format(PyExc_RuntimeError, "this %s belongs to an NF that is no longer loaded", name);
    return -1;
}

/* Object regions of the structures (struct_region), for struct_dump. */
typedef struct {
    uint16_t sid;
    uint32_t gen;
    const char *base;
    size_t stride, count;
} Region;
static Region *regions;
static size_t nregions, regions_cap;

void struct_region(uint16_t sid, const void *base, size_t stride, size_t count) {
    if (nregions == regions_cap) {
        size_t n = regions_cap ? 2 * regions_cap : 16;
        Region *r = PyMem_RawRealloc(regions, n * sizeof(Region));
        if (!r) return;   /* (the dump then lacks it: verify reports a difference, never a false match) */
        regions = r;
        regions_cap = n;
    }
    regions[nregions++] = (Region){sid, proc.arena_gen, base, stride, count};
}

/* Append region r's objects that are not all zero to `out` as {u32 region, u64 object,
 * payload}: pages never backed (mincore) hold zeros and are skipped without being read, so a
 * large sparse structure costs what it holds. */
static int dump_region(const Region *r, uint32_t no, PyObject **out, Py_ssize_t *used) {
    size_t each = r->stride - sizeof(ObjHdr), page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)r->base & ~(page - 1), hi = (uintptr_t)r->base + r->stride * r->count;
    size_t npages = (hi - lo + page - 1) / page;
    unsigned char *vec = PyMem_RawMalloc(npages ? npages : 1);
    if (!vec) {
        PyErr_NoMemory();
        return -1;
    }
    if (mincore((void *)lo, hi - lo, vec) < 0) memset(vec, 1, npages);   /* unknown: read everything */
    for (size_t k = 0; k < r->count;) {
        uintptr_t a = (uintptr_t)r->base + k * r->stride;
        size_t p0 = (a - lo) / page, p1 = (a + r->stride - 1 - lo) / page, p;
        int backed = 0;
        for (p = p0; p <= p1; p++) backed |= vec[p] & 1;
        if (!backed) {   /* skip to the first object that reaches a later backed page */
            while (p < npages && !(vec[p] & 1)) p++;
            size_t first = (lo + p * page - (uintptr_t)r->base) / r->stride;
            k = first > k ? first : k + 1;
            continue;
        }
        const char *obj = r->base + k * r->stride + sizeof(ObjHdr);
        int zero = 1;
        for (size_t i = 0; i < each && zero; i++) zero = !obj[i];
        if (!zero) {
            Py_ssize_t need = *used + 12 + (Py_ssize_t)each;
            if (need > PyBytes_GET_SIZE(*out) && _PyBytes_Resize(out, need * 2) < 0) {
                PyMem_RawFree(vec);
                return -1;
            }
            char *d = PyBytes_AS_STRING(*out) + *used;
            uint64_t kk = k;
            memcpy(d, &no, 4);
            memcpy(d + 4, &kk, 8);
            memcpy(d + 12, obj, each);
            *used = need;
        }
        k++;
    }
    PyMem_RawFree(vec);
    return 0;
}

PyObject *struct_dump(void) {
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    uint32_t no = 0;
    for (size_t i = 0; i < nregions; i++) {
        Region *r = &regions[i];
        if (r->gen != proc.arena_gen || !proc.arena.base) continue;
        PyObject *b = PyBytes_FromStringAndSize(NULL, 256);
        Py_ssize_t used = 0;
        if (!b || dump_region(r, no++, &b, &used) < 0 || _PyBytes_Resize(&b, used) < 0) {
            Py_XDECREF(b);
            goto fail;
        }
        PyObject *t = Py_BuildValue("(HN)", r->sid, b);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}
