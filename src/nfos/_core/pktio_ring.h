/* Layer 6: the replay rings (pktio_ring.c): the control process's side. */
#ifndef NFOS_PKTIO_RING_H
#define NFOS_PKTIO_RING_H

#include "pktio.h"

/* kind: DESC_PACKET, DESC_TICK or DESC_MIGRATE (an RSS++ epoch boundary; len: the
 * epoch), | DESC_TIMED (paced: the time is when the generator queued it) */
enum { DESC_PACKET = 0, DESC_TICK = 1, DESC_TIMED = 2, DESC_MIGRATE = 4 };

/* One RX ring per slot (room for rx_caps[s] descriptors), with a data ring of
 * data_bytes for streamed frames (0: none, frames are in the pool), and one
 * TX ring of tx_bytes per slot; -1: exception set.  ring_reset() forgets them. */
int ring_setup(const uint64_t *rx_caps, uint32_t nslots, uint64_t tx_bytes, uint64_t data_bytes);
int ring_ready(void);
void ring_reset(void);
/* Output is collected in the TX rings (else discarded). */
void ring_collect_output(int on);

/* Copy a frame into the arena (the replayed trace); NULL: exception set. */
uint8_t *ring_pool_copy(const char *frame, size_t len);
/* Streaming: copy a frame into slot's data ring, reused once consumed (waits
 * for room as ring_push does; no data ring: into the pool); NULL: exception set. */
uint8_t *ring_data_copy(int slot, const void *frame, uint32_t len);
/* The worker a frame goes to (0 in the sequential mode or with one worker). */
int ring_steer(uint8_t *data, uint32_t len, uint32_t wire, uint16_t dev);
int ring_steer_bucket(uint8_t *data, uint32_t len, uint32_t wire, uint16_t dev, int *bucket);   /* and its RSS bucket */
/* Queue a descriptor on slot's RX ring (`index`: a replayed frame's place in the trace): 0, or -1 full (wait: spin until room;
 * -2 with an exception set on a stop request or when this process would wait
 * on itself).  `len` bytes were captured of a frame of `wire` bytes (wire > len: cut). */
int ring_push(int slot, const uint8_t *frame, uint32_t len, uint32_t wire, uint16_t dev, uint16_t kind,
              uint64_t time, uint32_t index, int wait);
/* Walk every (loaded, closed) RX ring `laps` times, each lap `lap_ns` later
 * (a long saturation run from a short trace; frames are then copied before
 * the handlers see them). */
void ring_set_laps(uint32_t laps, uint64_t lap_ns);
void ring_close(uint32_t slot);
void ring_close_all(void);
uint64_t ring_rx_head(int slot);
uint64_t ring_rx_tail(int slot);    /* descriptors consumed and committed */
int ring_rx_finished(int slot);
/* A dead worker's rings (the control process, before its replacement
 * starts): the output of a batch that committed (`completed`: its commit was
 * completed from the redo log) is published and its packets counted; the
 * batch it had taken is skipped (the tail moves past it); returns its packets
 * that were not committed (lost; `c`: the slot's counters). */
uint64_t ring_rx_recover(int slot, SlotCounters *c, int completed);
/* Packets queued on slot's RX ring and not processed (ticks not counted). */
uint64_t ring_rx_pending_packets(int slot);

/* The TX ring of a slot, read by the control process: records from `*at`
 * (start at ring_tx_tail) to ring_tx_head; ring_tx_next returns 1 with a
 * frame, 0 for padding, and moves *at on; ring_tx_release frees up to `at`. */
typedef struct {
    const uint8_t *frame;
    uint32_t len, wire, devmask, indev;
    uint64_t time;
} RingFrame;
uint64_t ring_tx_tail(int slot);
/* Records spilled by this process (its own slot, drained by itself: see
 * pktio_ring.c), read after the ring's: bytes spilled, the next one from *at
 * (start at 0; 0 when none is left), and forget them after the drain. */
uint64_t ring_tx_spilled(int slot);
int ring_tx_spill_next(int slot, uint64_t *at, RingFrame *f);
void ring_tx_spill_clear(int slot);
uint64_t ring_tx_head(int slot);
int ring_tx_next(int slot, uint64_t *at, RingFrame *f);
void ring_tx_release(int slot, uint64_t at);

/* RSS++ rebalancing of a replay: `nepochs` epoch boundaries, at most
 * STEER_RETA moves each (moves[e * STEER_RETA ...], nmoves[e]); a worker
 * meeting the DESC_MIGRATE descriptor of boundary e hands the packet sets of
 * the buckets it loses to their new workers (an outbox in the arena) and takes
 * those of the buckets it gains, waiting for their old worker to have handed
 * them over; -1: exception set. */
int ring_migration_setup(uint32_t nworkers, uint32_t nepochs, const RsMove *moves, const uint8_t *nmoves);
/* Sets moved in and dropped (a full table) by this worker so far. */
void ring_migration_stats(int slot, uint64_t *moved_in, uint64_t *dropped);

/* Busy-poll without ever yielding the CPU while idle (paced traffic). */
void ring_set_busy_poll(int on);

/* Map this slot's view of the trace and of its RX ring (page tables). */
void ring_prefault(int slot);

/* Paced mode: a trace copied and steered once, then queued at a rate. */
int ring_pool_load(uint8_t **frames, uint32_t *lens, uint16_t *devs, size_t n);   /* takes the arrays */
int ring_pool_loaded(void);
/* Queue the pool (cycling) at rate_pps for duration_s on the monotonic clock;
 * a full ring is a loss; packets due while the generator was more than
 * PACED_SKIP_NS late (descheduled) are skipped, not sent in a burst.  In steps
 * (each up to the monotonic time `until`, so the caller can look for a stop
 * request in between): 1 once finished.  No Python (call it with the GIL released). */
#define PACED_SKIP_NS 20000
typedef struct {
    uint64_t t0, end, k, kend, queued, lost, skipped;
    size_t i;
    double gap;
} PacedFeed;
void ring_feed_paced_begin(PacedFeed *f, double rate_pps, double duration_s);
int ring_feed_paced_step(PacedFeed *f, uint64_t until);

#endif
