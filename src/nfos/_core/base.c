/* The name tables generated from the lists (abort_causes.def,
 * operations.def, counters.def, handlers.def).  Python-free. */
#include "base.h"

const char *const abort_cause_names[ABORT_NCAUSES] = {
#define ABORT_CAUSE(E, name, doc) #name,
#include "abort_causes.def"
#undef ABORT_CAUSE
};

const char *const abort_cause_docs[ABORT_NCAUSES] = {
#define ABORT_CAUSE(E, name, doc) doc,
#include "abort_causes.def"
#undef ABORT_CAUSE
};

const char *const handler_names[HANDLER_NKINDS] = {
#define HANDLER(E, name, doc) #name,
#include "handlers.def"
#undef HANDLER
};

const char *const handler_docs[HANDLER_NKINDS] = {
#define HANDLER(E, name, doc) doc,
#include "handlers.def"
#undef HANDLER
};

const char *const op_code_names[OPC_NCODES] = {
    "none",
#define OPERATION(E, kind, name, rw) #name,
#include "operations.def"
#undef OPERATION
};

const char *const op_code_kinds[OPC_NCODES] = {
    "",
#define OPERATION(E, kind, name, rw) #kind,
#include "operations.def"
#undef OPERATION
};

const uint8_t op_code_writes[OPC_NCODES] = {
    OP_READ,
#define OPERATION(E, kind, name, rw) OP_##rw,
#include "operations.def"
#undef OPERATION
};

const CounterInfo counter_table[NCOUNTERS] = {
#define COUNTER(name, len, agg, row, prom, line, doc) \
    {#name, (uint32_t)offsetof(SlotCounters, name), (uint32_t)(len), AGG_##agg, row, prom, line, doc},
#include "counters.def"
#undef COUNTER
};

const char *const counter_aggregation_names[4] = {"sum", "live", "gauge", "internal"};
