/* Layer 6: the worker loop, the hot path (worker_loop.c). */
#ifndef NFOS_WORKER_LOOP_H
#define NFOS_WORKER_LOOP_H

#include "pktio.h"
#include "pktset.h"

#define LOOP_MAX_PERIODIC 16

/* The watchdog's heartbeat code of a handler call (process.h, watchdog.c): 0
 * between handlers, 1 + its handlers.def kind, or for the periodic handler i
 * of the schedule 1 + HANDLER_NKINDS + i; _core.H_<KIND> is the code of each
 * kind (for periodic: of the schedule's first). */
#define HB_CODE(ctx) \
    (CTX_HANDLER(ctx) == HANDLER_PERIODIC ? 1u + HANDLER_NKINDS + CTX_INDEX(ctx) : 1u + CTX_HANDLER(ctx))
#define HB_CODES (1 + HANDLER_NKINDS + LOOP_MAX_PERIODIC)

typedef struct {
    PyObject *fn;
    uint64_t interval, next;
} Periodic;

/* The NF's handlers and settings (references are borrowed: the loop takes its own). */
typedef struct {
    PyObject *h_new, *h_packet, *h_expired, *h_orphan, *h_malformed, *h_error;
    Periodic periodics[LOOP_MAX_PERIODIC];
    int nperiodic;
    PyTypeObject *state_type;   /* NULL: no packet-set state */
    uint32_t state_size;
    uint64_t expiry_ns;         /* 0: never */
    int batch;                  /* packets per transaction, 1..NFOS_BATCH_MAX */
    int has_sets;
    int sync;                   /* workers meet at periodic barriers and keep within the drift horizon
                                 * (virtual time: replay and the test harness; not live or paced) */
    uint64_t max_drift_ns;      /* the drift horizon Δ */
} LoopConfig;

int loop_init(void);                        /* module init: the output buffers */
int loop_configure(const LoopConfig *c);    /* -1: exception set (the arena is full) */
void loop_reset(void);                      /* the NF is unloaded */
void loop_set_io(const Pktio *io);          /* the packet I/O of this process (default: pktio_ring) */

/* Process input for up to `budget` units: the count, -1 when the input is
 * finished (or the run stopped), -2 with an exception set. */
long long loop_run(long long budget, int spin);
/* Run fn(*args) in one transaction of the control process (retried; after
 * its first abort, irrevocably) and publish its output: the result, or NULL
 * with its exception.  `handler` (handlers.def) and `index` (a periodic
 * handler's place in the schedule): what the profiler names. */
PyObject *loop_run_in_tx(PyObject *fn, PyObject *args, int handler, uint32_t index);
/* Run fn(*args) once, alone (every other slot outside its transactions), in
 * direct mode: no STM, no retries; publish its output.  The result, or NULL
 * with its exception (its effects rolled back).  The exit handler. */
PyObject *loop_run_alone(PyObject *fn, PyObject *args, int handler, uint32_t index);
/* Periodic handlers due up to `upto` (-1: exception set). */
int loop_run_periodics(uint64_t upto);
/* Real-time traffic: run at most `batches` batches of expiry handlers per
 * sweep before waiting packets (0: no limit). */
void loop_set_sweep_limit(int batches);
/* Expire this worker's idle packet sets (-1: exception set). */
int loop_sweep(void);

/* Commit records (nfos run --record-commits, nfos verify): one per committed
 * transaction of a slot, in a per-slot array in the arena, written by the slot
 * and read by the control process.  `order` places it in the serial order:
 * a writer's write version (the global clock value it took at commit; an
 * irrevocable or alone transaction bumps the clock too), else the snapshot it
 * read (rv), which comes after the writer of that version. */
typedef struct {
    uint64_t order;
    uint64_t clock;                  /* the attempt's starting clock (a periodic handler: its due time) */
    uint64_t seq;                    /* the slot's records before this one */
    uint8_t writer, handler, n, worker;   /* handler: handlers.def; n: items */
    uint32_t index;                  /* a periodic handler's place in the schedule */
    uint32_t item[NFOS_BATCH_MAX];   /* packets: their trace indexes; expiry: set ids in the worker's table */
} CommitRec;   /* 160 bytes */
/* Record every slot's commits, up to `per_slot` each (before the fork); -1: exception set. */
int loop_record_setup(uint64_t per_slot);
/* slot's records so far (*n) and how many did not fit (*lost); NULL: not recording. */
const CommitRec *loop_records(int slot, uint64_t *n, uint64_t *lost);
/* nfos verify: run one recorded transaction in this process, as slot `worker`
 * with that worker's packet-set table, at `clock`: a packet batch or expiry
 * sweep (items), or periodic handler `index` alone.  0 done, 1 an expiry item's
 * set is not expired here (it cannot be the recorded one), -2 exception set. */
int loop_replay_tx(int worker, int handler, uint32_t index, uint64_t clock, Item *items, int n);

/* The NF API inside handlers. */
void loop_tx_begin(int mode, int irrevocable);   /* a transaction for Python (frames discarded) */
int loop_tx_commit(void);                        /* its commit: 0 (its text written), -1 aborted */
PyObject *loop_register(PktSlot *s);             /* the state of the set of the new packet */
int loop_emit(const char *frame, uint32_t len, uint32_t devmask);   /* -1: MemoryError */
/* Text a handler printed (stream 1 stdout, 2 stderr; | TEXT_FLUSH: a flush,
 * with empty text): buffered with the transaction's output, written to
 * sys.stdout / sys.stderr at commit and flushed, discarded by an abort.
 * 1 buffered, 0 no transaction that could abort is running (write it
 * through), -1 MemoryError. */
#define TEXT_FLUSH 4
int loop_text(int stream, const char *text, size_t len);
/* The drift horizon's view (tests): worker w's progress (every descriptor
 * before it processed; UINT64_MAX: finished), or 0 without barriers. */
uint64_t loop_progress(int w);
/* Respawn: the control process, for dead worker w: a periodic barrier it had
 * claimed and not released is open again (its replacement leads it). */
void loop_recover(int w);
/* Respawn: a replacement worker, after attach: its clock, published progress
 * and periodic schedule continue where the dead one's stopped. */
void loop_resume(void);

#endif
