/* Layer 4: the profiler's records (profile.c). */
#ifndef NFOS_PROFILE_H
#define NFOS_PROFILE_H

#include "process.h"

/* Install the STM's abort hook on this process's descriptor: every abort
 * leaves a conflict record (always on: the records cost nothing without
 * aborts). */
void profile_init(void);
/* Profiling on (the site hook walks the Python frames for the NF line of
 * every structure access; nf_file: the NF's file name) or off. */
void profile_configure(int on, PyObject *nf_file);
/* The conflict records of `slot` from `since` on, as tuples (cause, struct
 * id, index, own op, other op, other slot, own site, other site, handler,
 * handler index, own detail, other detail); *cursor is where to start next time, *lost counts records
 * overwritten before they were read. */
PyObject *profile_conflicts(uint32_t slot, uint64_t since, uint64_t *cursor, uint64_t *lost);

#endif
