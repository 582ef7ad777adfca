/* The profiler's records: the two STM hooks and the decoding of tags.
 *
 * Site hook (profiling on): the NF source line of the running structure
 * access — one walk up the Python frames to the first frame of the NF file.
 * The STM keeps it with each object opened, and a commit stamps it in the
 * object's last-writer word.  Off, the hook is NULL: one pointer test per
 * open.
 *
 * Abort hook (always): the STM hands over what the abort met — the cause,
 * the object, this transaction's tag and site, the object's last-writer word,
 * the running handler (the descriptor's ctx word, base.h HANDLER_CTX) — and
 * this file decodes the tags (base.h OP_TAG) into a ConflictRecord in
 * the slot's ring in the arena, which the control process drains. */
#include "profile.h"

static PyObject *nf_file;   /* code objects' co_filename of the NF */

/* The line of the NF source that is running (0 if none). */
static uint32_t current_site(void *arg) {
    (void)arg;
    PyFrameObject *f = PyEval_GetFrame();   /* borrowed */
    if (!f || !nf_file) return 0;
    Py_INCREF(f);
    while (f) {
        PyCodeObject *code = PyFrame_GetCode(f);
        int match = code->co_filename == nf_file || PyUnicode_Compare(code->co_filename, nf_file) == 0;
        Py_DECREF(code);
        if (match) {
            int line = PyFrame_GetLineNumber(f);
            Py_DECREF(f);
            return line > 0 && line < 0xffff ? (uint32_t)line : 0xffff;
        }
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    return 0;
}

static void record_abort(StmTx *tx, const StmConflict *c, void *arg) {
    (void)arg;
    if (!proc.shared) return;
    SlotShared *me = &proc.shared->slots[tx->slot];
    ConflictRecord r;
    memset(&r, 0, sizeof r);
    r.cause = c->cause;
    r.struct_id = c->struct_id;
    r.index = c->index;
    r.own_op = TAG_OP(c->own_tag);
    r.own_site = c->own_site;
    r.own_detail = TAG_DETAIL(c->own_tag);
    r.other_slot = c->other_slot;
    r.other_op = TAG_OP(c->other_info);
    r.other_site = INFO_SITE(c->other_info);
    r.other_detail = TAG_DETAIL(c->other_info);
    r.handler = CTX_HANDLER(c->ctx) < HANDLER_NKINDS ? CTX_HANDLER(c->ctx) : HANDLER_TRANSACT;
    r.handler_index = CTX_INDEX(c->ctx);
    uint64_t n = atomic_fetch_add(&me->conflict_count, 1);
    me->conflicts[n % CONFLICT_RING] = r;
}

void profile_init(void) { proc.tx.abort_hook = record_abort; }

void profile_configure(int on, PyObject *file) {
    Py_XSETREF(nf_file, on && file && file != Py_None ? Py_NewRef(file) : NULL);
    proc.tx.site_hook = on ? current_site : NULL;
}

static const char *op_name(uint8_t op) { return op_code_names[op < OPC_NCODES ? op : 0]; }

PyObject *profile_conflicts(uint32_t slot, uint64_t since, uint64_t *cursor, uint64_t *lost) {
    SlotShared *sh = &proc.shared->slots[slot];
    uint64_t n = atomic_load(&sh->conflict_count);
    uint64_t start = since;
    *lost = 0;
    if (n > CONFLICT_RING && start < n - CONFLICT_RING) {
        *lost = n - CONFLICT_RING - start;
        start = n - CONFLICT_RING;
    }
    *cursor = n;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (uint64_t i = start; i < n; i++) {
        ConflictRecord *c = &sh->conflicts[i % CONFLICT_RING];
        PyObject *t = Py_BuildValue("(siissiIIsIII)", abort_cause_names[c->cause], c->struct_id, c->index,
                                    op_name(c->own_op), op_name(c->other_op),
                                    c->other_slot == 0xff ? -1 : (int)c->other_slot, c->own_site,
                                    c->other_site, handler_names[c->handler < HANDLER_NKINDS ? c->handler : 0],
                                    c->handler_index, c->own_detail, c->other_detail);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
    }
    return out;
}
