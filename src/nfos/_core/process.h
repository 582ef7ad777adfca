/* Layer 3: the per-process state, and the STM seen from Python.
 *
 * One process is one "slot": worker 0..N-1, or the control process (slot N;
 * slot 0 in the sequential mode).  What several files of this process share
 * lives in ONE struct, `proc`, owned by process.c: the slot, its clock, the
 * arena and the shared blocks in it, the transaction descriptor, the device
 * names and the Python exception objects.  A layer's private state (the
 * steering tables, the selected packet-set table, the rings, the live
 * devices, the loop's handlers) stays static in its own file, behind its
 * functions.
 *
 * From here up, files include Python.h (this header includes it first). */
#ifndef NFOS_PROCESS_H
#define NFOS_PROCESS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "stm.h"

/* Conflict records for the profiler: a ring per slot (written by profile.c's
 * abort hook, read by the control process). */
#define CONFLICT_RING 16384
typedef struct {
    uint16_t cause, struct_id;
    uint8_t own_op, other_slot, other_op, handler;   /* handler: handlers.def */
    uint32_t index;
    uint32_t own_site, other_site;
    uint32_t own_detail, other_detail;
    uint32_t handler_index;                          /* a periodic handler's place in the schedule */
} ConflictRecord;

/* Latency histogram (paced mode): log-linear buckets, 16 per power of two. */
#define LAT_BUCKETS 640
/* Handler error lines already logged (across all processes). */
#define ERROR_SITES 512

/* What a slot shares with the control process (in the arena). */
typedef struct {
    SlotCounters counters;             /* counters.def */
    _Atomic uint64_t conflict_count;
    ConflictRecord conflicts[CONFLICT_RING];
    uint64_t lat_hist[LAT_BUCKETS];    /* queue-to-commit latency of timed packets */
    /* The watchdog's heartbeat (worker_loop.c writes, the control's watchdog reads):
     * the handler running now (worker_loop.h: HB_CODE; 0: none) and a count of handler calls. */
    _Atomic uint32_t hb_handler;
    _Atomic uint64_t hb_calls;
} SlotShared;

typedef struct {
    uint32_t nslots;
    _Atomic uint32_t start;            /* the start signal (signal_start) */
    _Atomic uint32_t ready;            /* workers set up and waiting for it */
    _Atomic uint32_t stop;             /* the control process asks the workers to leave now */
    uint64_t start_ns;                 /* monotonic time of the start signal */
    _Atomic uint64_t error_sites[ERROR_SITES];
    SlotShared slots[];
} ProcShared;

typedef struct {
    Arena arena;              /* no mapping: no NF loaded */
    uint32_t arena_gen;       /* bumped when an arena is destroyed: old views are refused */
    ProcShared *shared;       /* in the arena */
    StmShared *stm;           /* in the arena */
    uint32_t nslots;
    int slot;                 /* this process's slot */
    SlotShared *me;           /* its shared block (NULL: no arena) */
    uint64_t clock;           /* this process's clock (ns): virtual in a replay */
    StmTx tx;                 /* this process's transaction descriptor */
    int local;                /* sequential reference mode: one process, no STM */
    int nworkers;
    int ndevs;                /* the NF's devices */
    PyObject *dev_names;      /* tuple of str */
    PyObject *dev_index;      /* dict name -> index */
    PyObject *TransactionAborted;
    PyObject *TableFull;
} Process;

extern Process proc;

/* Module init: the descriptor, the exception objects (added to module m). */
int proc_init(PyObject *m);
/* Map the arena for `nslots` slots (-1: exception set); unmap it. */
int proc_arena_create(unsigned long long size, unsigned int nslots);
void proc_arena_destroy(void);
/* This process becomes slot s (-1: ValueError). */
int proc_set_slot(long s);
/* Zeroed arena memory, or NULL with the exception set (no NF loaded, full). */
void *proc_alloc(size_t size, size_t align);
/* The NF's device names (a validated tuple); name or index -> index (-1: ValueError). */
int proc_set_devices(PyObject *names);
int dev_lookup(PyObject *dev);
static inline uint32_t all_devs_mask(void) {
    return proc.ndevs >= 32 ? 0xffffffffu : (1u << proc.ndevs) - 1;
}
static inline int proc_stopping(void) {
    return proc.shared && atomic_load_explicit(&proc.shared->stop, memory_order_relaxed);
}
/* A stop request for a C loop that can run long (call it every iteration; it
 * looks at most every ~1 ms): the control process's (the arena's stop flag: 1)
 * or a signal whose Python handler raised (KeyboardInterrupt: -1, exception
 * set).  Needs the GIL; signals are seen in the main thread only. */
int proc_poll_stop(void);
/* The same, for loops that run without the GIL: 1 when the arena's stop flag
 * is set or the parent this process was forked from is gone. */
int proc_stop_nogil(void);
/* The pid of the process that forked this one (0: not a forked worker). */
void proc_set_parent(long pid);

/* The STM from Python: the same calls on this process's descriptor, with a
 * failure turned into an exception (TransactionAborted, or RuntimeError
 * outside a transaction). */
PyObject *proc_stm_error(void);
static inline char *tx_open(ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, int write,
                            uint64_t tag) {
    char *p = stm_open(&proc.tx, obj, size, struct_id, index, write, tag);
    if (!p) proc_stm_error();
    return p;
}
/* In-place reads (stm.h: stm_read_open / stm_read_check): load from the
 * returned pointer, then tx_read_check(ent): 0 valid, 1 load again, -1 aborted
 * (TransactionAborted set). */
static inline char *tx_read_open(ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, uint64_t tag,
                                 int32_t *ent) {
    char *p = stm_read_open(&proc.tx, obj, size, struct_id, index, tag, ent);
    if (!p) proc_stm_error();
    return p;
}
static inline int tx_read_check(int32_t ent) {
    int r = stm_read_check(&proc.tx, ent);
    if (r < 0) proc_stm_error();
    return r;
}
static inline int tx_read_bytes(int32_t ent, const char *src, void *dst, size_t len) {
    if (stm_read_bytes(&proc.tx, ent, src, dst, len) == 0) return 0;
    proc_stm_error();
    return -1;
}
static inline int tx_save_private(void *ptr, uint32_t size) {
    if (stm_save_private(&proc.tx, ptr, size) == 0) return 0;
    proc_stm_error();
    return -1;
}
static inline int tx_push_undo(undo_fn fn, const void *payload, uint32_t size) {
    if (stm_push_undo(&proc.tx, fn, payload, size) == 0) return 0;
    proc_stm_error();
    return -1;
}

/* PyErr_GetRaisedException / PyErr_SetRaisedException appeared in 3.12. */
static inline PyObject *nfos_fetch_exc(void) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (!t) return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb) PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}
static inline void nfos_restore_exc(PyObject *v) {
    if (!v) return;
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(v)), v, PyException_GetTraceback(v));
}

#endif
