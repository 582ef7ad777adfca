/* Layer 6: the worker loop, the hot path (worker_loop.c). */
#ifndef NFOS_WORKER_LOOP_H
#define NFOS_WORKER_LOOP_H

#include "pktio.h"
#include "pktset.h"

#define LOOP_MAX_PERIODIC 16

typedef struct {
    PyObject *fn;
    uint64_t interval, next;
} Periodic;

/* The NF's handlers and settings (references are borrowed: the loop takes its own). */
typedef struct {
    PyObject *h_new, *h_packet, *h_expired, *h_orphan, *h_error;
    Periodic periodics[LOOP_MAX_PERIODIC];
    int nperiodic;
    PyTypeObject *state_type;   /* NULL: no packet-set state */
    uint32_t state_size;
    uint64_t expiry_ns;         /* 0: never */
    int batch;                  /* packets per transaction, 1..NFOS_BATCH_MAX */
    int has_sets;
} LoopConfig;

int loop_init(void);                        /* module init: the emit buffer */
void loop_configure(const LoopConfig *c);
void loop_reset(void);                      /* the NF is unloaded */
void loop_set_io(const Pktio *io);          /* the packet I/O of this process (default: pktio_ring) */

/* Process input for up to `budget` units: the count, -1 when the input is
 * finished (or the run stopped), -2 with an exception set. */
long long loop_run(long long budget, int spin);
/* Run fn(*args) in one transaction (retried; irrevocably after repeated
 * aborts) and publish its output: the result, or NULL with its exception. */
PyObject *loop_run_in_tx(PyObject *fn, PyObject *args);
/* Periodic handlers due up to `upto` (-1: exception set). */
int loop_run_periodics(uint64_t upto);
/* Real-time traffic: run at most `batches` batches of expiry handlers per
 * sweep before waiting packets (0: no limit). */
void loop_set_sweep_limit(int batches);
/* Expire this worker's idle packet sets (-1: exception set). */
int loop_sweep(void);

/* The NF API inside handlers. */
void loop_tx_begin(int mode, int irrevocable);   /* a transaction for Python (output discarded) */
PyObject *loop_register(PktSlot *s);             /* the state of the set of the new packet */
int loop_emit(const char *frame, uint32_t len, uint32_t devmask);   /* -1: MemoryError */

#endif
