/* Layer 6: live interfaces (pktio_afpacket.c): the set-up side.  Each call
 * returns 0, or -1 with an exception set (OSError naming the interface). */
#ifndef NFOS_PKTIO_AFPACKET_H
#define NFOS_PKTIO_AFPACKET_H

#include "pktio.h"

/* Control, before the fork: shared counters and the join turn in the arena. */
/* vnet: every socket carries offload metadata (PACKET_VNET_HDR; pktio_afpacket.c). */
int afp_setup(unsigned nworkers, unsigned frame_size, unsigned block_size, unsigned block_nr, int vnet);
/* A send-only socket on the device (periodic / exit handlers emit). */
int afp_open_tx(int dev, const char *ifname);
/* Control, before the fork: every worker's RX/TX socket on the device, joined
 * to its fanout group (steering program) in slot order; held until afp_close. */
int afp_open(int dev, const char *ifname, const void *prog, size_t prog_len, unsigned max_frame);
/* A worker (first or replacement): take over its slot's sockets. */
int afp_take(void);
/* Control, before a dead worker's replacement: the packets of its batch in flight (lost). */
uint64_t afp_recover(int slot);
void afp_fail(const char *message);      /* this worker could not start */
const char *afp_error(void);             /* the first worker's start-up error, or NULL */
unsigned afp_running(void);              /* workers past the start */
int afp_active(void);                    /* set up in this arena */
void afp_close(void);                    /* close this process's sockets */

#endif
