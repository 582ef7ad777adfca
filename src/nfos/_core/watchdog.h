/* Layer 6: the watchdog (watchdog.c): a thread of the control process that
 * names a worker stuck in one handler call. */
#ifndef NFOS_WATCHDOG_H
#define NFOS_WATCHDOG_H

#include "worker_loop.h"

#define WATCHDOG_CODES HB_CODES
#define WATCHDOG_NAME 200

/* Watch `nslots` slots (0..nslots-1) for a handler call longer than
 * `limit_ns`; names[code] describes each handler ("@nf.packet on_packet
 * (nf.py:42)"; the caller's strings are copied).  -1: exception set. */
int watchdog_start(uint64_t limit_ns, int nslots, const char *const names[WATCHDOG_CODES]);
/* Stop and join the thread (before the arena goes); safe when none runs. */
void watchdog_stop(void);
/* Reports written so far (one per stuck handler call). */
uint64_t watchdog_reports(void);

#endif
