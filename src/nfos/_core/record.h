/* Layer 4: record views and typed fields (record.c). */
#ifndef NFOS_RECORD_H
#define NFOS_RECORD_H

#include "process.h"

/* Field kinds, in the order of the module constants K_U8 ... K_BYTES. */
#define NFOS_FIELD_KINDS(X) X(U8) X(U16) X(U32) X(U64) X(I8) X(I16) X(I32) X(I64) X(F64) X(BOOL) X(BYTES)
enum field_kind {
#define FIELD_KIND_ENUM(k) K_##k,
    NFOS_FIELD_KINDS(FIELD_KIND_ENUM)
#undef FIELD_KIND_ENUM
};

typedef struct {
    PyObject_VAR_HEAD         /* var-sized: a free record keeps its bytes inline */
    char *data;
    ObjHdr *obj;
    uint64_t serial;
    uint64_t wtag;            /* tag (base.h OP_TAG) of a write through this view */
    uint32_t size;            /* record bytes */
    uint32_t objsize;         /* payload of `obj` to open for a write (0: size) */
    uint32_t index;
    int32_t entry;            /* >= 0: an in-place read (stm_read_open): the data is reached through
                               * this entry of the descriptor, so it follows the object's private copy
                               * once there is one, and every load is validated; -1: `data` */
    uint32_t offset;          /* with an entry: bytes into its payload */
    uint16_t struct_id;
    uint8_t flags;
} RecordView;

#define RV_OPENED_W 1   /* write access already recorded */
#define RV_READONLY 2
#define RV_PRIVATE 4    /* not a shared object: undo only */
#define RV_FREE 8       /* not inside a transaction at all (scratch record) */

PyObject *record_view_new(PyTypeObject *type, char *data, ObjHdr *obj, uint32_t size,
                          uint16_t struct_id, uint32_t index, uint8_t flags);
/* The view `v` (just made by record_view_new over an in-place read's payload)
 * reads through the descriptor's entry `ent` (no-op: ent < 0, or a copy). */
void record_view_via(PyObject *v, int32_t ent);
/* tp_getattro of record and header views: the generic lookup, with (type, name) -> data
 * descriptor cached (see record.c). */
PyObject *descr_getattro(PyObject *self, PyObject *name);
/* Drop the views kept for reuse (a new NF is loaded). */
void record_view_cache_clear(void);
/* The first `n` bytes of a view's record, validated: 0, or -1 (exception set). */
int record_view_copy(PyObject *v, void *dst, size_t n);
/* A Record class (a Python subclass of RecordView: only __slots__ = (), no
 * finalizer) made plain: its instances are not tracked by the cyclic GC (they
 * hold no Python references) and are freed directly, without the generic
 * subclass deallocation.  Returns 1 (done), 0 (left alone), -1 (TypeError). */
int record_type_untrack(PyTypeObject *t);
int record_types_init(PyObject *m);
PyObject *load_field(const char *p, uint8_t kind, uint16_t size);
int store_field(char *p, uint8_t kind, uint16_t size, PyObject *value, PyObject *name);

#endif
