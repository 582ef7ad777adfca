/* Layer 0 of the C core: constants, the monotonic clock, and the name lists.
 *
 * The layers (layers.txt; docs/architecture.md): base -> arena -> stm ->
 * process -> record, profile -> structures, packet, steer, pktset -> pktio,
 * worker loop -> bindings -> module.  A file includes only headers of its own
 * unit or of units listed before it.  This layer, the arena and the STM are
 * Python-free: tests/c/test_stm.c links them alone.
 *
 * The name lists are X-macro files, one line per name, included here:
 *   abort_causes.def  why a transaction aborted
 *   operations.def    what a structure operation is called and whether it writes
 *   counters.def      every per-slot counter (the SlotCounters struct)
 *   handlers.def      which handler a transaction runs (conflict records, the profiler)
 * Everything that names an abort cause, an operation or a counter (the C
 * struct, slot_stats(), --stats-json, the CLI summary, the live line,
 * Prometheus, the profiler, the docs' tables) comes from these lists. */
#ifndef NFOS_BASE_H
#define NFOS_BASE_H

#ifndef _GNU_SOURCE   /* (Python.h defines it where it comes first) */
#define _GNU_SOURCE 1
#endif
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define NFOS_MAX_SLOTS 128   /* workers + control; owner ids fit the lock word */
#define NFOS_MAX_DEVS 32     /* output device masks are 32-bit */
#define NFOS_MAX_KEY 48      /* bytes of a packet-set key */
#define NFOS_BATCH_MAX 32    /* packets per transaction (paper: one RX burst) */
#define NFOS_CACHELINE 64

/* CLOCK_MONOTONIC in ns (a vDSO call, no system call). */
static inline uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ abort causes */
enum abort_cause {
#define ABORT_CAUSE(E, name, doc) ABORT_##E,
#include "abort_causes.def"
#undef ABORT_CAUSE
    ABORT_NCAUSES
};
extern const char *const abort_cause_names[ABORT_NCAUSES];
extern const char *const abort_cause_docs[ABORT_NCAUSES];

/* ---------------------------------------------------------------- handlers */
enum handler_kind {
#define HANDLER(E, name, doc) HANDLER_##E,
#include "handlers.def"
#undef HANDLER
    HANDLER_NKINDS
};
extern const char *const handler_names[HANDLER_NKINDS];
extern const char *const handler_docs[HANDLER_NKINDS];
/* The runtime's word for "what is running" (the STM's opaque ctx): the handler
 * kind and an index (the periodic handler's place in the schedule). */
#define HANDLER_CTX(kind, index) ((uint64_t)(uint8_t)(kind) | ((uint64_t)(uint32_t)(index) << 8))
#define CTX_HANDLER(ctx) ((uint8_t)((ctx) & 0xff))
#define CTX_INDEX(ctx) ((uint32_t)((ctx) >> 8))

/* -------------------------------------------------- structure operations */
enum op_kind { OP_READ = 0, OP_WRITE = 1 };

enum op_code {
    OPC_NONE = 0,
#define OPERATION(E, kind, name, rw) OPC_##E,
#include "operations.def"
#undef OPERATION
    OPC_NCODES
};
extern const char *const op_code_names[OPC_NCODES];   /* "none", "read", ... */
extern const char *const op_code_kinds[OPC_NCODES];   /* "", "Vector", ... */
extern const uint8_t op_code_writes[OPC_NCODES];      /* OP_READ / OP_WRITE */

/* A per-open tag: the operation and its detail (the Map key's hash), which the
 * STM keeps, opaque, with each object opened and stores in the object's
 * last-writer word at commit (the bits STM_TAG_MASK of stm.h reserves). */
#define OP_TAG(op, detail) (((uint64_t)(uint8_t)(op) << 8) | ((uint64_t)(uint32_t)(detail) << 32))
#define TAG_OP(tag) ((uint8_t)((tag) >> 8))
#define TAG_DETAIL(tag) ((uint32_t)((tag) >> 32))

/* ----------------------------------------------------------------- counters */
enum counter_aggregation { AGG_SUM, AGG_LIVE, AGG_GAUGE, AGG_INTERNAL };

typedef struct {
#define COUNTER(name, len, agg, row, prom, line, doc) uint64_t name[len];
#include "counters.def"
#undef COUNTER
} SlotCounters;

/* One row per counter, in struct order: what slot_stats() and _core.COUNTERS export. */
typedef struct {
    const char *name;
    uint32_t offset;          /* bytes into SlotCounters */
    uint32_t length;          /* 1, NFOS_MAX_DEVS or ABORT_NCAUSES */
    uint8_t aggregation;      /* enum counter_aggregation */
    const char *row;          /* pinned per-worker row key, or "" */
    const char *prometheus;   /* pinned Prometheus name, or "" */
    const char *line;         /* pinned --stats-interval label, or "" */
    const char *doc;
} CounterInfo;

enum {
#define COUNTER(name, len, agg, row, prom, line, doc) COUNTER_IDX_##name,
#include "counters.def"
#undef COUNTER
    NCOUNTERS
};
extern const CounterInfo counter_table[NCOUNTERS];
extern const char *const counter_aggregation_names[4];   /* "sum", "live", "gauge", "internal" */

#endif
