/* Live packet I/O on Linux interfaces: AF_PACKET sockets with PACKET_MMAP
 * TPACKET_V3 RX rings, one per (worker, device), joined in a PACKET_FANOUT
 * group per device whose classic-BPF program is compiled from the packet-set
 * definition (nfos/io/bpf.py), so the kernel steers like software RSS.
 *
 * Set-up (driven by nfos/runtime/live.py through bind_live.c):
 *
 *   control, before the fork   live_setup(): the shared state in the arena;
 *                              the worker loop's packet I/O is this file's.
 *                              live_open_tx(dev, ifname): a send-only socket
 *                              per device (periodic / exit handlers emit).
 *                              live_open(dev, ifname, prog, max_frame): every
 *                              worker's socket on the device (RX ring mapped,
 *                              promiscuous, bound, a drop-everything socket
 *                              filter until its worker starts), joined to the
 *                              device's group in slot order — the fanout
 *                              member index is the join order, and the program
 *                              returns a worker index; slot 0 creates it (the
 *                              kernel picks a free id) and sets the program.
 *                              The control process holds them to the end.
 *   each worker, after it      live_take(): its slot's sockets (inherited).
 *   each worker, first run     drop the filter, go.
 *
 * Respawn: a dead worker's sockets stay open (the control holds them), so
 * they keep their member index and frames steered to the slot queue in its
 * ring.  Its replacement inherits the same sockets and mapping and goes on
 * from the block and packet the dead one had reached (kept in the arena per
 * slot and device); the batch it had taken and not committed is lost
 * (afp_recover: counted in packets_lost).
 *
 * Hot path (the Pktio below, driven by worker_loop.c): walk the ready
 * blocks of every device's ring in C — no system call per packet; PktSlots point into the ring (zero copy); a
 * batch never spans a block, and a block goes back to the kernel after its
 * last batch committed (its TX flushed, so queued frames still point into
 * it while they are sent).  poll() only when no block is ready, with a short
 * timeout so a stop request is seen.  Time is the monotonic clock.
 *
 * The fanout program runs on the skb at its network header; bpf.py loads
 * relative to the link layer (SKF_LL_OFF), so it steers on the frame as the
 * worker sees it.  The kernel strips a received VLAN tag into metadata: it
 * is put back into the frame (the software steering skips one tag, so the
 * worker is the same).
 *
 * Offloads (PACKET_VNET_HDR on every socket, as VPP's af_packet driver and
 * QEMU's tap backend carry struct virtio_net_hdr): each received frame
 * comes with the kernel's offload metadata, kept with the packet (PktVnet)
 * and sent with it.  A GSO super-frame (a TSO sender on a veth, GRO, a
 * local stack) stays one frame up to 64 KiB — a handler sees one packet —
 * and the kernel segments it on send (in software if the output device
 * cannot: validate_xmit_skb); it is not "oversize".  A TCP/UDP checksum left
 * to offload (VIRTIO_NET_HDR_F_NEEDS_CSUM: a local sender with tx checksum
 * offload, the default on a veth) keeps its request: the field holds the
 * pseudo-header sum, which header rewrites move by the address difference
 * (packet.c), and the kernel or the NIC completes it on send — in software
 * when the output device cannot (skb_checksum_help), so completing it here
 * would only cost a pass over every byte for nothing.  A super-frame that
 * GRO merged arrives with its checksum verified, not requested: it is given
 * a request (the pseudo-header sum, as a local sender's), so its segments
 * get valid checksums.  Kernels without PACKET_VNET_HDR (the probe in
 * live.py): checksums are completed here (TP_STATUS_CSUMNOTREADY) and
 * frames longer than the MTU are counted as oversize.
 *
 * TX: frames are queued per device and sent with one sendmmsg() per device
 * after each commit (the iovecs point at the ring frames or the emitted
 * frames; the kernel copies each into an skb).  Measured against a TPACKET_V2
 * TX ring on a second socket (memcpy into the ring, one send() per flush) on
 * the 2-core dev VM — veth, firewall, 1 worker, 64-byte UDP from a C sendmmsg
 * blaster on the other core, 2 runs each: the worker's busy time was
 * 1.56-1.60 us/packet with sendmmsg and 1.77-1.84 us/packet with the TX ring
 * (which also dropped at the RX ring in one run), both forwarding what the
 * sender offered (~370-500 kpps).  So sendmmsg it is: cheaper here, and no
 * second socket or full TX ring to wait on.
 */
#include "pktio_afpacket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef PACKET_FANOUT_FLAG_IGNORE_OUTGOING
#define PACKET_FANOUT_FLAG_IGNORE_OUTGOING 0x4000
#endif
#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

_Static_assert(sizeof(PktVnet) == sizeof(struct virtio_net_hdr), "PktVnet is struct virtio_net_hdr");
_Static_assert(VNET_NEEDS_CSUM == VIRTIO_NET_HDR_F_NEEDS_CSUM && VNET_GSO_TCPV4 == VIRTIO_NET_HDR_GSO_TCPV4,
               "PktVnet's constants are virtio_net.h's");

#define TXQ 256                    /* frames queued per device before a forced flush */
#define SNDBUF (4 << 20)           /* socket send buffer: room for 64 KiB super-frames in flight */
#define IDLE_POLL_MS 10            /* poll() timeout when no block is ready */
#define STATS_EVERY_NS 100000000ull  /* read PACKET_STATISTICS this often */
#define IDLE_RETURN_NS 200000000ull  /* give Python control back after this long idle */

/* ------------------------------------------------------ shared (arena)
 * The counters (ring_packets, ring_drops, ... link_errors) are the slot's
 * SlotCounters (counters.def). */

typedef struct {
    _Atomic uint32_t running;  /* workers past the start (filters dropped) */
    _Atomic uint32_t failed;   /* a worker could not open or join: everyone gives up */
    uint32_t nworkers;
    _Atomic uint32_t fanout_id[NFOS_MAX_DEVS];   /* the group of each device */
    char error[256];
    /* per slot, for its replacement (respawn): where its worker is in each
     * device's ring (the block, the packets of it taken), the batch it had
     * taken (its size, its device, packets_in when taken), and whether it began */
    struct {
        uint32_t cur[NFOS_MAX_DEVS], pos[NFOS_MAX_DEVS];
        uint32_t inflight;
        uint64_t in_at_take;
        uint32_t began;
    } at[NFOS_MAX_SLOTS];
} LiveShared;

static LiveShared *LS;
static uint32_t LS_gen;        /* proc.arena_gen when LS was allocated */
static uint32_t ring_block_size, ring_block_nr, ring_frame_size;
static int use_vnet;           /* PACKET_VNET_HDR on every socket: offloads kept (see the top) */

static int shared_ok(void) { return LS && proc.shared && LS_gen == proc.arena_gen; }
static SlotCounters *my_live(void) { return &proc.me->counters; }
int afp_active(void) { return shared_ok(); }

/* --------------------------------------------------- per process: devices */

typedef struct {
    int fd;                    /* -1: not open */
    int rx;                    /* has an RX ring (a worker's socket) */
    int ifindex;
    int joined;
    uint32_t max_frame;        /* longer frames were merged by GRO/GSO: not processed */
    uint8_t *map;
    size_t maplen;
    uint8_t *ring;             /* the RX ring (this slot's SlotSock mapping) */
    uint32_t skip;             /* a replacement: packets of the first block the dead worker took */
    uint32_t cur;              /* the next block to read */
    struct tpacket_block_desc *blk;   /* the block being walked, or NULL */
    uint32_t left;             /* its packets not yet taken */
    uint8_t *next;             /* its next packet */
    uint32_t ntx;
    struct mmsghdr msg[TXQ];
    struct iovec iov[2 * TXQ];   /* per frame: its virtio_net_hdr (use_vnet), the frame */
    PktVnet vh[TXQ];
} LiveDev;

static LiveDev D[NFOS_MAX_DEVS];
static int D_init;

/* In the control process (and inherited by every worker): every worker's RX
 * socket and mapped ring per device, opened and joined in slot order before
 * the fork and held until the end, so a dead worker's socket keeps its place
 * (member index) in the fanout group and its replacement takes it over. */
typedef struct {
    int fd;                    /* -1: not open */
    uint8_t *map;
    size_t maplen;
} SlotSock;
static SlotSock SS[NFOS_MAX_SLOTS][NFOS_MAX_DEVS];
static int SS_init;

static void ss_close_all(void) {
    if (!SS_init) {
        for (int w = 0; w < NFOS_MAX_SLOTS; w++)
            for (int i = 0; i < NFOS_MAX_DEVS; i++) SS[w][i] = (SlotSock){-1, NULL, 0};
        SS_init = 1;
        return;
    }
    for (int w = 0; w < NFOS_MAX_SLOTS; w++)
        for (int i = 0; i < NFOS_MAX_DEVS; i++) {
            SlotSock *x = &SS[w][i];
            if (x->map) munmap(x->map, x->maplen);
            if (x->fd >= 0) close(x->fd);
            *x = (SlotSock){-1, NULL, 0};
        }
}
static int started;
static uint64_t last_stats_ns;

static void dev_close(LiveDev *d) {
    if (d->map) munmap(d->map, d->maplen);
    if (d->fd >= 0) close(d->fd);
    memset(d, 0, sizeof *d);
    d->fd = -1;
}

static void devs_init(void) {
    if (D_init) return;
    for (int i = 0; i < NFOS_MAX_DEVS; i++) {
        memset(&D[i], 0, sizeof D[i]);
        D[i].fd = -1;
    }
    D_init = 1;
}

/* OSError(errno, "IFNAME: what: strerror"), so Python sees the errno too. */
static PyObject *os_error(const char *what, const char *ifname) {
    int e = errno;
    PyObject *msg = PyUnicode_FromFormat("%s: %s: %s", ifname, what, strerror(e));
    if (msg) {
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO", e, msg);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        Py_DECREF(msg);
    }
    return NULL;
}

static int check_dev(int dev) {
    if (dev < 0 || dev >= NFOS_MAX_DEVS || dev >= proc.ndevs) {
        PyErr_SetString(PyExc_ValueError, "bad device index");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- set-up */

/* In the control process, before the fork. */
int afp_setup(unsigned nworkers, unsigned frame_size, unsigned block_size, unsigned block_nr, int vnet) {
    if (!proc.shared) {
        PyErr_SetString(PyExc_RuntimeError, "create the arena first");
        return -1;
    }
    long page = sysconf(_SC_PAGESIZE);
    if (frame_size < 256 || frame_size % TPACKET_ALIGNMENT || block_size % page || block_size < frame_size ||
        block_size % frame_size || block_nr < 2) {
        PyErr_Format(PyExc_ValueError, "bad ring geometry (frame %u, block %u x %u)", frame_size, block_size,
                     block_nr);
        return -1;
    }
    LS = proc_alloc(sizeof(LiveShared), NFOS_CACHELINE);
    if (!LS) return -1;
    LS_gen = proc.arena_gen;
    LS->nworkers = nworkers;
    ring_frame_size = frame_size;
    ring_block_size = block_size;
    ring_block_nr = block_nr;
    use_vnet = vnet;
    devs_init();
    for (int i = 0; i < NFOS_MAX_DEVS; i++) dev_close(&D[i]);
    ss_close_all();
    started = 0;
    return 0;
}

static int bind_to(int fd, int ifindex, int proto) {
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons((uint16_t)proto);
    sll.sll_ifindex = ifindex;
    return bind(fd, (struct sockaddr *)&sll, sizeof sll);
}

static void init_msgs(LiveDev *d) {
    for (int i = 0; i < TXQ; i++) {   /* without offload headers, the frame's iovec comes alone */
        memset(&d->msg[i], 0, sizeof d->msg[i]);
        d->msg[i].msg_hdr.msg_iov = use_vnet ? &d->iov[2 * i] : &d->iov[2 * i + 1];
        d->msg[i].msg_hdr.msg_iovlen = use_vnet ? 2 : 1;
        d->iov[2 * i].iov_base = (void *)&d->vh[i];
        d->iov[2 * i].iov_len = sizeof d->vh[i];
    }
}

/* The socket options every socket of a live run has: offload metadata with
 * each frame (before any ring: the kernel refuses it after), a send buffer
 * for super-frames.  -1: errno set. */
static int socket_options(int fd) {
    int one = 1, sndbuf = SNDBUF;
    if (use_vnet && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    return 0;
}

/* A send-only socket (no RX: protocol 0). */
int afp_open_tx(int dev, const char *ifname) {
    if (check_dev(dev) < 0) return -1;
    if (!shared_ok()) {
        PyErr_SetString(PyExc_RuntimeError, "live_setup() first");
        return -1;
    }
    LiveDev *d = &D[dev];
    dev_close(d);
    int ifindex = (int)if_nametoindex(ifname);
    if (!ifindex) {
        os_error("no such interface", ifname);
        return -1;
    }
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        os_error("cannot open an AF_PACKET socket", ifname);
        return -1;
    }
    if (socket_options(fd) < 0) {
        os_error("cannot have offload headers (PACKET_VNET_HDR)", ifname);
        close(fd);
        return -1;
    }
    if (bind_to(fd, ifindex, 0) < 0) {
        close(fd);
        os_error("cannot bind to the interface", ifname);
        return -1;
    }
    d->fd = fd;
    d->ifindex = ifindex;
    d->max_frame = UINT32_MAX;
    init_msgs(d);
    return 0;
}

/* One RX socket on the device: TPACKET_V3 ring (mapped), promiscuous,
 * ignoring outgoing frames, bound, dropping everything until its worker
 * starts.  0, or -1 with an exception set. */
static int open_rx(const char *ifname, int ifindex, SlotSock *out) {
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);   /* protocol 0: nothing arrives before bind */
    uint8_t *map = MAP_FAILED;
    size_t maplen = (size_t)ring_block_size * ring_block_nr;
    if (fd < 0) {
        os_error("cannot open an AF_PACKET socket", ifname);
        return -1;
    }
    int v3 = TPACKET_V3, one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v3, sizeof v3) < 0) {
        os_error("TPACKET_V3 is not supported", ifname);
        goto fail;
    }
    if (socket_options(fd) < 0) {
        os_error("cannot have offload headers (PACKET_VNET_HDR)", ifname);
        goto fail;
    }
    struct sock_filter drop = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog dropall = {1, &drop};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &dropall, sizeof dropall) < 0) {
        os_error("cannot attach a socket filter", ifname);
        goto fail;
    }
    struct tpacket_req3 req;
    memset(&req, 0, sizeof req);
    req.tp_block_size = ring_block_size;
    req.tp_block_nr = ring_block_nr;
    req.tp_frame_size = ring_frame_size;
    req.tp_frame_nr = ring_block_size / ring_frame_size * ring_block_nr;
    req.tp_retire_blk_tov = 1;   /* ms: a partly filled block is handed over after this */
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0) {
        os_error("cannot set up the RX ring", ifname);
        goto fail;
    }
    map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) {
        os_error("cannot map the RX ring", ifname);
        goto fail;
    }
    (void)setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);   /* >= 4.20 */
    if (bind_to(fd, ifindex, ETH_P_ALL) < 0) {
        os_error("cannot bind to the interface", ifname);
        goto fail;
    }
    struct packet_mreq mr;
    memset(&mr, 0, sizeof mr);
    mr.mr_ifindex = ifindex;
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) {
        os_error("cannot set promiscuous mode", ifname);
        goto fail;
    }
    *out = (SlotSock){fd, map, maplen};
    return 0;
fail:
    if (map != MAP_FAILED) munmap(map, maplen);
    close(fd);
    return -1;
}

/* Slot w's socket joins the device's fanout group; slot 0 creates it (the
 * kernel picks a free id) and sets the steering program. */
static int join_group(int fd, int w, int dev, const void *prog, uint16_t prog_len) {
    int flags = PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
    for (int attempt = 0; attempt < 2; attempt++, flags = 0) {   /* kernels < 6.2 lack the flag */
        int val;
        if (w == 0) val = (PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_UNIQUEID | flags) << 16;
        else val = (int)atomic_load(&LS->fanout_id[dev]) | ((PACKET_FANOUT_CBPF | flags) << 16);
        if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &val, sizeof val) == 0) break;
        if (errno != EINVAL || attempt == 1) return -1;
    }
    if (w == 0) {
        int val = 0;
        socklen_t len = sizeof val;
        if (getsockopt(fd, SOL_PACKET, PACKET_FANOUT, &val, &len) < 0) return -1;
        atomic_store(&LS->fanout_id[dev], (uint32_t)val & 0xffff);
        struct sock_fprog fp = {prog_len, (struct sock_filter *)prog};
        if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT_DATA, &fp, sizeof fp) < 0) return -1;
    }
    return 0;
}

static uint32_t dev_max_frame[NFOS_MAX_DEVS];
static int dev_ifindex[NFOS_MAX_DEVS];

/* In the control process, before the fork: every worker's RX socket on the
 * device, joined to its fanout group in slot order (the member index is the
 * join order, and the program returns a worker index).  They stay open here
 * until live_close(): a dead worker's socket keeps its place. */
int afp_open(int dev, const char *ifname, const void *prog_buf, size_t prog_len, unsigned max_frame) {
    if (check_dev(dev) < 0) return -1;
    if (!shared_ok()) {
        PyErr_SetString(PyExc_RuntimeError, "live_setup() first");
        return -1;
    }
    if (prog_len == 0 || prog_len % sizeof(struct sock_filter) || prog_len / sizeof(struct sock_filter) > 4096) {
        PyErr_SetString(PyExc_ValueError, "the steering program is not a classic-BPF program");
        return -1;
    }
    int ifindex = (int)if_nametoindex(ifname);
    if (!ifindex) {
        os_error("no such interface", ifname);
        return -1;
    }
    dev_max_frame[dev] = max_frame;
    dev_ifindex[dev] = ifindex;
    for (uint32_t w = 0; w < LS->nworkers; w++) {
        SlotSock *x = &SS[w][dev];
        if (x->fd >= 0) continue;
        if (open_rx(ifname, ifindex, x) < 0) return -1;
        if (join_group(x->fd, (int)w, dev, prog_buf, (uint16_t)(prog_len / sizeof(struct sock_filter))) < 0) {
            os_error("cannot join the fanout group", ifname);
            return -1;
        }
    }
    return 0;
}

/* In a worker (first or replacement): take this slot's sockets over (the
 * control's send-only ones are closed in this process; the ring sockets
 * send too). */
int afp_take(void) {
    if (!shared_ok() || proc.slot < 0 || (uint32_t)proc.slot >= LS->nworkers) {
        PyErr_SetString(PyExc_RuntimeError, "live_setup() and attach() first");
        return -1;
    }
    for (int i = 0; i < proc.ndevs; i++) {
        SlotSock *x = &SS[proc.slot][i];
        if (x->fd < 0) continue;
        LiveDev *d = &D[i];
        dev_close(d);
        d->fd = x->fd;
        d->rx = 1;
        d->joined = 1;
        d->ifindex = dev_ifindex[i];
        d->max_frame = dev_max_frame[i];
        d->ring = x->map;   /* inherited; the SlotSock owns it (d->map stays NULL) */
        init_msgs(d);
    }
    return 0;
}

/* In the control process, before slot s's replacement is forked: the packets
 * of the batch its dead worker had taken and not committed (lost). */
uint64_t afp_recover(int s) {
    if (!shared_ok() || s < 0 || (uint32_t)s >= LS->nworkers) return 0;
    uint64_t taken = LS->at[s].inflight, counted = proc.shared->slots[s].counters.packets_in[0] - LS->at[s].in_at_take;
    LS->at[s].inflight = 0;
    return taken > counted ? taken - counted : 0;
}

/* A worker could not start; the control process reports it. */
void afp_fail(const char *msg) {
    if (!shared_ok()) return;
    uint32_t zero = 0;
    if (atomic_compare_exchange_strong(&LS->failed, &zero, (uint32_t)proc.slot + 1))
        snprintf(LS->error, sizeof LS->error, "%s", msg);
}

const char *afp_error(void) { return shared_ok() && atomic_load(&LS->failed) ? LS->error : NULL; }

unsigned afp_running(void) { return shared_ok() ? atomic_load(&LS->running) : 0; }

/* Close this process's sockets; live mode off. */
void afp_close(void) {
    devs_init();
    for (int i = 0; i < NFOS_MAX_DEVS; i++) dev_close(&D[i]);
    ss_close_all();
    LS = NULL;
    started = 0;
}

/* ------------------------------------------------------------------ TX */

static void flush_dev(LiveDev *d) {
    SlotCounters *st = shared_ok() ? my_live() : NULL;
    uint32_t at = 0;
    while (at < d->ntx) {
        int r = sendmmsg(d->fd, d->msg + at, d->ntx - at, 0);
        if (st) st->tx_calls[0]++;
        if (r > 0) {
            at += (uint32_t)r;
            if (st) st->tx_sent[0] += (uint64_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {   /* this frame is refused (too large, link down, no buffer): skip it */
            at++;
            if (st) st->tx_errors[0]++;
        }
    }
    d->ntx = 0;
}

/* Queue a frame on every device of devmask, with its offload metadata (NULL: none). */
static void live_tx(const uint8_t *frame, uint32_t len, uint32_t devmask, const PktVnet *vnet) {
    for (int i = 0; devmask && i < NFOS_MAX_DEVS; i++, devmask >>= 1) {
        if (!(devmask & 1)) continue;
        LiveDev *d = &D[i];
        if (d->fd < 0) {
            if (shared_ok()) my_live()->tx_errors[0]++;
            continue;
        }
        if (d->ntx == TXQ) flush_dev(d);
        if (use_vnet) {
            if (vnet) d->vh[d->ntx] = *vnet;
            else memset(&d->vh[d->ntx], 0, sizeof d->vh[d->ntx]);
        }
        d->iov[2 * d->ntx + 1].iov_base = (void *)frame;
        d->iov[2 * d->ntx + 1].iov_len = len;
        d->ntx++;
    }
}

static void afp_send(const PktOut *out, int n) {
    for (int i = 0; i < n; i++) live_tx(out[i].data, out[i].len, out[i].devmask, out[i].vnet);
}

static void afp_flush(void) {
    if (!D_init) return;
    for (int i = 0; i < proc.ndevs && i < NFOS_MAX_DEVS; i++)
        if (D[i].ntx) flush_dev(&D[i]);
}

/* ------------------------------------------------------------------ RX */

/* The ones' complement sum of the TCP/UDP pseudo-header of s (not folded). */
static uint64_t pseudo_sum(const PktSlot *s, uint32_t l4len) {
    const uint8_t *d = s->data;
    uint32_t l3 = s->l3;
    return (uint64_t)rd16(d + l3 + 12) + rd16(d + l3 + 14) + rd16(d + l3 + 16) + rd16(d + l3 + 18) + s->proto +
           l4len;
}

static uint16_t fold(uint64_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

/* A super-frame GRO merged has its checksum verified, not requested: give it
 * a request (the pseudo-header sum in the field), as a local sender's. */
static void request_l4_checksum(PktSlot *s) {
    if (!(s->flags & (PF_TCP | PF_UDP)) || (s->flags & (PF_FRAG | PF_MALFORMED))) return;
    uint8_t *d = s->data;
    uint32_t l4 = s->l4, at = (s->flags & PF_TCP) ? 16 : 6;
    uint32_t l4len = rd16(d + s->l3 + 2) - (l4 - s->l3);
    wr16(d + l4 + at, fold(pseudo_sum(s, l4len)));
    s->vnet.flags = (uint8_t)((s->vnet.flags & ~VNET_DATA_VALID) | VNET_NEEDS_CSUM);
    s->vnet.csum_start = (uint16_t)l4;
    s->vnet.csum_offset = (uint16_t)at;
}

/* No offload headers (an old kernel): a local sender (veth peer) left the
 * TCP/UDP checksum to offload: complete it. */
static void finish_l4_checksum(PktSlot *s) {
    if (!(s->flags & (PF_TCP | PF_UDP)) || (s->flags & (PF_FRAG | PF_MALFORMED))) return;
    uint8_t *d = s->data;
    uint32_t l3 = s->l3, l4 = s->l4;
    uint32_t l4len = rd16(d + l3 + 2) - (l4 - l3);
    uint32_t at = (s->flags & PF_TCP) ? 16 : 6;
    if (l4len < at + 2) return;
    d[l4 + at] = d[l4 + at + 1] = 0;
    uint64_t sum = pseudo_sum(s, l4len);
    const uint8_t *p = d + l4;
    uint32_t i = 0;
    for (; i + 1 < l4len; i += 2) sum += rd16(p + i);
    if (l4len & 1) sum += (uint32_t)p[l4len - 1] << 8;
    uint16_t c = (uint16_t)~fold(sum);
    if (c == 0 && (s->flags & PF_UDP)) c = 0xffff;
    d[l4 + at] = (uint8_t)(c >> 8);
    d[l4 + at + 1] = (uint8_t)c;
}

static void read_kernel_stats(void) {
    if (!shared_ok()) return;
    SlotCounters *st = my_live();
    for (int i = 0; i < proc.ndevs; i++) {
        if (!D[i].rx) continue;
        struct tpacket_stats_v3 ks;
        socklen_t len = sizeof ks;
        if (getsockopt(D[i].fd, SOL_PACKET, PACKET_STATISTICS, &ks, &len) == 0) {   /* read resets */
            st->ring_packets[0] += ks.tp_packets;
            st->ring_drops[0] += ks.tp_drops;
            st->ring_freezes[0] += ks.tp_freeze_q_cnt;
        }
    }
}

static inline struct tpacket_block_desc *block_at(LiveDev *d, uint32_t i) {
    return (struct tpacket_block_desc *)(d->ring + (size_t)i * ring_block_size);
}

static void release_block(LiveDev *d, int dev) {
    __atomic_store_n(&d->blk->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    d->blk = NULL;
    d->cur = (d->cur + 1) % ring_block_nr;
    LS->at[proc.slot].pos[dev] = 0;
    atomic_store_explicit((_Atomic uint32_t *)&LS->at[proc.slot].cur[dev], d->cur, memory_order_release);
}

/* Fill `slots` with up to `max` frames of the device's current block. */
static int take_batch(LiveDev *d, int dev, PktSlot *slots, Item *items, int max, uint64_t now) {
    if (!d->blk) {
        struct tpacket_block_desc *b = block_at(d, d->cur);
        if (!(__atomic_load_n(&b->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) return 0;
        d->blk = b;
        d->left = b->hdr.bh1.num_pkts;
        d->next = (uint8_t *)b + b->hdr.bh1.offset_to_first_pkt;
        for (; d->skip && d->left; d->skip--, d->left--)   /* taken by the dead worker of this slot */
            d->next += ((struct tpacket3_hdr *)d->next)->tp_next_offset;
        d->skip = 0;
    }
    SlotCounters *st = my_live();
    int n = 0;
    while (d->left && n < max) {
        struct tpacket3_hdr *h = (struct tpacket3_hdr *)d->next;
        d->next += h->tp_next_offset;
        d->left--;
        const struct sockaddr_ll *sll =
            (const struct sockaddr_ll *)((uint8_t *)h + TPACKET_ALIGN(sizeof(struct tpacket3_hdr)));
        if (sll->sll_pkttype == PACKET_OUTGOING) continue;   /* kernels without the fanout flag */
        uint8_t *data = (uint8_t *)h + h->tp_mac;
        uint32_t len = h->tp_snaplen;
        PktVnet vn = {0};
        if (use_vnet) memcpy(&vn, data - sizeof vn, sizeof vn);   /* before the tag overwrites it */
        if ((h->tp_status & TP_STATUS_VLAN_VALID) && len >= 12 &&
            h->tp_mac >= TPACKET3_HDRLEN + 4) {   /* put the stripped tag back */
            uint16_t tpid = (h->tp_status & TP_STATUS_VLAN_TPID_VALID) && h->hv1.tp_vlan_tpid
                                ? (uint16_t)h->hv1.tp_vlan_tpid : ETH_P_8021Q;
            uint16_t tci = (uint16_t)h->hv1.tp_vlan_tci;
            memmove(data - 4, data, 12);
            data -= 4;
            data[12] = (uint8_t)(tpid >> 8);
            data[13] = (uint8_t)tpid;
            data[14] = (uint8_t)(tci >> 8);
            data[15] = (uint8_t)tci;
            len += 4;
            if (vn.flags & VNET_NEEDS_CSUM) vn.csum_start += 4;   /* offsets into the frame, tag included */
            if (vn.hdr_len) vn.hdr_len += 4;
        }
        /* cut by the ring, or longer than the MTU with no GSO header to explain it */
        if (h->tp_snaplen < h->tp_len || (len > d->max_frame && (vn.gso_type == VNET_GSO_NONE || !vn.gso_size))) {
            st->oversize[0]++;
            continue;
        }
        PktSlot *s = &slots[n];
        s->data = data;
        s->len = s->wire = len;
        s->dev = (uint16_t)dev;
        s->time = now;
        s->undo_serial = 0;
        s->enq_ns = 0;
        s->vnet = vn;
        pkt_parse(s);
        if (vn.gso_type != VNET_GSO_NONE) {
            st->gso_frames[0]++;
            if (!(vn.flags & VNET_NEEDS_CSUM)) request_l4_checksum(s);
            if (s->flags & (PF_TCP | PF_UDP)) s->vnet.hdr_len = s->payload;   /* the headers each segment repeats */
        }
        if (s->vnet.flags & VNET_NEEDS_CSUM) {
            st->checksums_offloaded[0]++;
        } else if (!use_vnet && (h->tp_status & TP_STATUS_CSUMNOTREADY)) {
            finish_l4_checksum(s);
            st->checksums_completed[0]++;
        }
        set_key_extract(s);
        items[n].pkt = s;
        items[n].expire_id = -1;
        n++;
    }
    if (n) {   /* for a replacement: the batch in flight, and where the next one starts */
        LS->at[proc.slot].in_at_take = st->packets_in[0];
        LS->at[proc.slot].inflight = (uint32_t)n;
    }
    LS->at[proc.slot].pos[dev] = d->blk->hdr.bh1.num_pkts - d->left;
    return n;
}

/* First call in a worker: wait until every worker has joined, then let
 * frames in (drop the filter installed by live_open). */
static int live_begin(void) {
    if (LS->at[proc.slot].began) {   /* a replacement: on from where the dead worker stopped */
        for (int i = 0; i < proc.ndevs; i++) {
            if (!D[i].rx) continue;
            D[i].cur = LS->at[proc.slot].cur[i] % ring_block_nr;
            D[i].skip = LS->at[proc.slot].pos[i];
            D[i].blk = NULL;
        }
        LS->at[proc.slot].inflight = 0;
        last_stats_ns = mono_ns();
        started = 1;
        return 0;
    }
    for (int i = 0; i < proc.ndevs; i++) {
        if (!D[i].rx) continue;
        int dummy = 0;
        (void)setsockopt(D[i].fd, SOL_SOCKET, SO_DETACH_FILTER, &dummy, sizeof dummy);
    }
    read_kernel_stats();   /* start from zero */
    SlotCounters *c = my_live();
    c->ring_packets[0] = c->ring_drops[0] = c->ring_freezes[0] = c->oversize[0] = 0;
    c->gso_frames[0] = c->checksums_offloaded[0] = c->checksums_completed[0] = 0;
    c->tx_sent[0] = c->tx_errors[0] = c->tx_calls[0] = c->link_errors[0] = 0;
    c->begin_ns[0] = mono_ns();
    last_stats_ns = mono_ns();
    LS->at[proc.slot].began = 1;
    atomic_fetch_add(&LS->running, 1);
    started = 1;
    return 0;
}

/* ------------------------------------------------------- the worker's Pktio
 * A round visits every device once: each gives at most one batch (of its
 * current block).  A round that gave nothing is idle: the loop expires sets
 * on the monotonic clock, then afp_wait() polls. */

static PktSlot lslots[NFOS_BATCH_MAX];
static struct pollfd pfd[NFOS_MAX_DEVS];
static int npfd;
static int cursor;             /* the next device of the round */
static int round_got;          /* packets taken in this round */
static uint64_t round_now;     /* when the last round ended */
static uint64_t idle_since;

static int afp_enter(int spin) {
    (void)spin;
    if (!shared_ok()) {
        PyErr_SetString(PyExc_RuntimeError, "live mode is not set up (live_setup / live_open)");
        return -2;
    }
    if (!started) {
        if (live_begin() < 0) return -1;
        cursor = round_got = 0;
    }
    npfd = 0;
    for (int i = 0; i < proc.ndevs; i++)
        if (D[i].rx) {
            pfd[npfd].fd = D[i].fd;
            pfd[npfd].events = POLLIN | POLLERR;
            npfd++;
        }
    idle_since = 0;
    return 0;
}

static int afp_rx(PktioRx *b, int max, uint64_t due) {
    (void)due;
    for (;;) {
        if (cursor == 0 && proc_stopping()) {
            read_kernel_stats();
            my_live()->finish_ns[0] = mono_ns();
            return PKTIO_STOP;
        }
        while (cursor < proc.ndevs) {
            int i = cursor++;
            LiveDev *d = &D[i];
            if (!d->rx) continue;
            uint64_t t0 = mono_ns();
            int n = take_batch(d, i, lslots, b->items, max, t0);
            if (n) {
                round_got += n;
                b->n = n;
                b->time = t0;
                b->t0 = t0;
                b->count = (uint64_t)n;
                b->dev = i;
                return PKTIO_BATCH;
            }
            if (d->blk && !d->left) release_block(d, i);
        }
        cursor = 0;
        uint64_t now = mono_ns();
        if (now - last_stats_ns >= STATS_EVERY_NS) {
            read_kernel_stats();
            last_stats_ns = now;
        }
        round_now = now;
        if (round_got) {
            round_got = 0;
            idle_since = 0;
            continue;
        }
        b->time = now;
        return PKTIO_IDLE;
    }
}

/* The batch committed and its TX is flushed: its block may go back. */
static void afp_done(PktioRx *b) {
    SlotCounters *c = my_live();
    LiveDev *d = &D[b->dev];
    c->rx_done[0] += b->count;
    LS->at[proc.slot].inflight = 0;
    if (d->blk && !d->left) release_block(d, b->dev);
    c->busy_ns[0] += mono_ns() - b->t0;
}

static int afp_wait(void) {
    if (!idle_since) idle_since = round_now;
    else if (round_now - idle_since > IDLE_RETURN_NS) return 1;
    int r = poll(pfd, (nfds_t)npfd, IDLE_POLL_MS);
    if (r < 0 && errno != EINTR) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -2;
    }
    for (int k = 0; r > 0 && k < npfd; k++)
        if (pfd[k].revents & POLLERR) {   /* read (and so clear) it, or poll() returns at once forever */
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(pfd[k].fd, SOL_SOCKET, SO_ERROR, &err, &len);
            my_live()->link_errors[0]++;
        }
    return 0;
}

const Pktio pktio_afpacket = {
    .name = "afpacket",
    .enter = afp_enter,
    .rx = afp_rx,
    .done = afp_done,
    .wait = afp_wait,
    .leave = NULL,
    .send = afp_send,
    .flush = afp_flush,
};
