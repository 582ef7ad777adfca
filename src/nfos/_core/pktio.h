/* Layer 6: the packet-I/O interface between the worker loop and its two
 * implementations, pktio_ring.c (replay, test harness and paced RX rings in
 * the arena; the TX ring) and pktio_afpacket.c (live interfaces).
 *
 * The loop (worker_loop.c) asks for one RX batch at a time and hands each
 * committed transaction's output over in one call: the interface costs a few
 * indirect calls per batch, none per packet. */
#ifndef NFOS_PKTIO_H
#define NFOS_PKTIO_H

#include "steer.h"

/* One unit of a transaction: a packet, or (pkt NULL) the expiry of a set. */
typedef struct {
    PktSlot *pkt;
    int32_t expire_id;
} Item;

/* What rx() found. */
enum pktio_event {
    PKTIO_BATCH,      /* n packets in items (their PktSlots parsed, keys extracted) */
    PKTIO_TICK,       /* advance the clock to `time` (expire idle sets), then done() */
    PKTIO_PERIODIC,   /* periodic handlers are due before the next descriptor (its time: `time`) */
    PKTIO_WAIT,       /* the next descriptor (time `time`) is past the drift horizon: wait, receive again */
    PKTIO_IDLE,       /* nothing to receive; `time`: the current time to advance to (0: none); then wait() */
    PKTIO_END,        /* the input is closed and fully processed */
    PKTIO_STOP        /* the control process asked the workers to stop */
};

typedef struct {
    Item *items;      /* room for `max` items (the loop's) */
    uint64_t horizon; /* in: take no descriptor with a later time (UINT64_MAX: no limit) */
    /* in (may be NULL): the backend is about to wait for other workers at a descriptor of
     * time t, every one before it done: the loop publishes its progress so none waits on it */
    void (*at_wait)(uint64_t t);
    int n;            /* PKTIO_BATCH: items filled */
    uint64_t time;
    uint64_t last;    /* PKTIO_BATCH: the time of its last descriptor */
    uint64_t count;   /* input units consumed (counted against worker_run's budget) */
    uint64_t mark;    /* the backend's own: where the batch was taken from */
    uint64_t t0;      /* the backend's own: when the batch was taken */
    int dev;          /* the backend's own */
} PktioRx;

/* A frame to send: a packet's (its buffer) or an emitted one (indev UINT32_MAX). */
typedef struct {
    const uint8_t *data;
    uint32_t len, wire, devmask, indev;   /* wire: the length on the wire (> len: a cut frame) */
    uint64_t time;
    const PktVnet *vnet;                  /* live: its offload metadata (NULL: none) */
} PktOut;

typedef struct {
    const char *name;
    /* Start of a worker_run call (spin: idle polls before returning):
     * 0 go, -1 stopped (worker_run returns -1), -2 exception set. */
    int (*enter)(int spin);
    /* The next batch, of at most `max` packets; `periodic_due` is the time
     * the next periodic handler is due (sequential mode and replay barriers;
     * else UINT64_MAX): a descriptor at or after it is PKTIO_PERIODIC first.
     * A descriptor later than rx->horizon is PKTIO_WAIT (replay rings only). */
    int (*rx)(PktioRx *rx, int max, uint64_t periodic_due);
    /* The last batch or tick is committed and its output published. */
    void (*done)(PktioRx *rx);
    /* After PKTIO_IDLE: 0 receive again, 1 return from worker_run, -2 exception set. */
    int (*wait)(void);
    /* worker_run returns its count (not after PKTIO_STOP or an exception); may be NULL. */
    void (*leave)(void);
    /* The output of one committed transaction (called once per batch of up to
     * NFOS_BATCH_MAX frames), then flush() once (NULL: nothing to flush). */
    void (*send)(const PktOut *out, int n);
    void (*flush)(void);
    /* Optional (NULL: output is sent after the commit): a batch's output staged
     * before its commit, invisible until it commits, so a worker that dies
     * leaves its batch either committed with its output and counted, or not
     * at all (respawn).  step 1: begin (send() stages), 2: staged (`packets`:
     * the batch's packets), 3: committed: publish and count packets_in; -1:
     * nothing was staged (no room): send normally; 0: aborted, drop it. */
    int (*stage)(int step, uint64_t packets);
} Pktio;

extern const Pktio pktio_ring;
extern const Pktio pktio_afpacket;

#endif
