/* Layer 7: the module's functions, by role (bind_*.c).  All parsing of
 * Python arguments of module-level functions lives in these files; they
 * call the layers below with C values. */
#ifndef NFOS_BIND_H
#define NFOS_BIND_H

#include "pktio_afpacket.h"
#include "pktio_ring.h"
#include "profile.h"
#include "structures.h"
#include "watchdog.h"
#include "worker_loop.h"

extern PyMethodDef bind_control_methods[];   /* arena, configure, attach, start/stop, recovery */
extern PyMethodDef bind_feed_methods[];      /* RX rings: traces, injection, ticks, the paced generator */
extern PyMethodDef bind_output_methods[];    /* TX rings: frames, pcap records */
extern PyMethodDef bind_nf_methods[];        /* the NF API and transactions */
extern PyMethodDef bind_stats_methods[];     /* counters, conflicts, latency, memory */
extern PyMethodDef bind_live_methods[];      /* live interfaces */

/* `slot` of the loaded NF (0 <= slot < nslots), else -1 with ValueError. */
int bind_slot_arg(PyObject *arg, long *slot);

#endif
