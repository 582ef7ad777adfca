/* Live packet I/O on Linux interfaces: AF_PACKET sockets with PACKET_MMAP
 * TPACKET_V3 RX rings, one per (worker, device), joined in a PACKET_FANOUT
 * group per device whose classic-BPF program is compiled from the packet-set
 * definition (nfos/io/bpf.py), so the kernel steers like software RSS.
 *
 * Set-up (driven by nfos/runtime/live.py):
 *
 *   control, before the fork   live_setup(): shared counters and the join
 *                              turn in the arena; g_live = 1.
 *                              live_open_tx(dev, ifname): a send-only socket
 *                              per device (periodic / exit handlers emit).
 *   each worker, after it      live_open(dev, ifname, prog, max_frame): its
 *                              socket, RX ring, promiscuous mode, bound to the
 *                              interface, with a drop-everything socket filter
 *                              until every worker has joined.
 *                              live_join(): in slot order (worker 0 first) —
 *                              the fanout member index is the join order, and
 *                              the program returns a worker index — join each
 *                              device's group; worker 0 creates it (the kernel
 *                              picks a free id) and sets the program.
 *   each worker, first run     once all have joined: drop the filter, go.
 *
 * Hot path (live_run): walk the ready blocks of every device's ring in C —
 * no system call per packet; PktSlots point into the ring (zero copy); a
 * batch never spans a block, and a block goes back to the kernel after its
 * last batch committed (its TX flushed, so queued frames still point into
 * it while they are sent).  poll() only when no block is ready, with a short
 * timeout so a stop request is seen.  Time is the monotonic clock.
 *
 * The fanout program runs on the skb at its network header; bpf.py loads
 * relative to the link layer (SKF_LL_OFF), so it steers on the frame as the
 * worker sees it.  The kernel strips a received VLAN tag into metadata: it
 * is put back into the frame (the software steering skips one tag, so the
 * worker is the same), and TCP/UDP checksums left to offload by a local
 * sender (TP_STATUS_CSUMNOTREADY: veth peers) are completed, so forwarded
 * frames are valid on the wire.
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
#include "nfos_core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
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

#define TXQ 256                    /* frames queued per device before a forced flush */
#define IDLE_POLL_MS 10            /* poll() timeout when no block is ready */
#define STATS_EVERY_NS 100000000ull  /* read PACKET_STATISTICS this often */
#define IDLE_RETURN_NS 200000000ull  /* give Python control back after this long idle */

/* ------------------------------------------------------ shared (arena) */

typedef struct {
    uint64_t kernel_packets;   /* PACKET_STATISTICS tp_packets, summed */
    uint64_t kernel_drops;     /* tp_drops: the ring was full */
    uint64_t freeze_q;         /* tp_freeze_q_cnt */
    uint64_t oversize;         /* frames longer than the device's MTU (GRO/GSO): not processed */
    uint64_t csum_fixed;       /* TCP/UDP checksums completed (left to offload by the sender) */
    uint64_t tx_sent;          /* frames handed to the kernel */
    uint64_t tx_errors;        /* frames the kernel refused (e.g. too large, link down) */
    uint64_t tx_calls;         /* sendmmsg() calls */
    uint64_t link_errors;      /* socket errors (ENETDOWN: the interface went down) */
} LiveSlot;

typedef struct {
    _Atomic uint32_t turn;     /* the worker whose turn it is to join the fanout groups */
    _Atomic uint32_t running;  /* workers past the start (filters dropped) */
    _Atomic uint32_t failed;   /* a worker could not open or join: everyone gives up */
    uint32_t nworkers;
    _Atomic uint32_t fanout_id[NFOS_MAX_DEVS];   /* set by worker 0, read by the others */
    char error[256];
    LiveSlot slot[];           /* per slot (workers, control) */
} LiveShared;

static LiveShared *LS;
static uint32_t LS_gen;        /* g_arena_gen when LS was allocated */
static uint32_t ring_block_size, ring_block_nr, ring_frame_size;

static int shared_ok(void) { return LS && g_arena && LS_gen == g_arena_gen; }
static LiveSlot *my_live(void) { return &LS->slot[g_slot]; }

/* --------------------------------------------------- per process: devices */

typedef struct {
    int fd;                    /* -1: not open */
    int rx;                    /* has an RX ring (a worker's socket) */
    int ifindex;
    int joined;
    uint32_t max_frame;        /* longer frames were merged by GRO/GSO: not processed */
    uint8_t *map;
    size_t maplen;
    uint32_t cur;              /* the next block to read */
    struct tpacket_block_desc *blk;   /* the block being walked, or NULL */
    uint32_t left;             /* its packets not yet taken */
    uint8_t *next;             /* its next packet */
    struct sock_filter *prog;  /* steering program (worker 0 sets it on the group) */
    uint16_t prog_len;
    uint32_t ntx;
    struct mmsghdr msg[TXQ];
    struct iovec iov[TXQ];
} LiveDev;

static LiveDev D[NFOS_MAX_DEVS];
static int D_init;
static int started;
static uint64_t last_stats_ns;

static void dev_close(LiveDev *d) {
    if (d->map) munmap(d->map, d->maplen);
    if (d->fd >= 0) close(d->fd);
    free(d->prog);
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
    if (dev < 0 || dev >= NFOS_MAX_DEVS || dev >= g_cfg.ndevs) {
        PyErr_SetString(PyExc_ValueError, "bad device index");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- set-up */

/* live_setup(nworkers, frame_size=2048, block_size=256 KiB, block_nr=16):
 * in the control process, before the fork. */
static PyObject *py_live_setup(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"nworkers", "frame_size", "block_size", "block_nr", NULL};
    unsigned int nworkers, frame_size = 2048, block_size = 1u << 18, block_nr = 16;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "I|III", kwlist, &nworkers, &frame_size, &block_size, &block_nr))
        return NULL;
    if (!g_arena) return PyErr_Format(PyExc_RuntimeError, "create the arena first");
    long page = sysconf(_SC_PAGESIZE);
    if (frame_size < 256 || frame_size % TPACKET_ALIGNMENT || block_size % page || block_size < frame_size ||
        block_size % frame_size || block_nr < 2)
        return PyErr_Format(PyExc_ValueError, "bad ring geometry (frame %u, block %u x %u)", frame_size,
                            block_size, block_nr);
    LS = arena_alloc(sizeof(LiveShared) + sizeof(LiveSlot) * g_arena->nslots, NFOS_CACHELINE);
    if (!LS) return NULL;
    LS_gen = g_arena_gen;
    LS->nworkers = nworkers;
    ring_frame_size = frame_size;
    ring_block_size = block_size;
    ring_block_nr = block_nr;
    devs_init();
    for (int i = 0; i < NFOS_MAX_DEVS; i++) dev_close(&D[i]);
    started = 0;
    g_live = 1;
    Py_RETURN_NONE;
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
    for (int i = 0; i < TXQ; i++) {
        memset(&d->msg[i], 0, sizeof d->msg[i]);
        d->msg[i].msg_hdr.msg_iov = &d->iov[i];
        d->msg[i].msg_hdr.msg_iovlen = 1;
    }
}

/* live_open_tx(dev, ifname): a send-only socket (no RX: protocol 0). */
static PyObject *py_live_open_tx(PyObject *self, PyObject *args) {
    int dev;
    const char *ifname;
    if (!PyArg_ParseTuple(args, "is", &dev, &ifname)) return NULL;
    if (check_dev(dev) < 0) return NULL;
    if (!shared_ok()) return PyErr_Format(PyExc_RuntimeError, "live_setup() first");
    LiveDev *d = &D[dev];
    dev_close(d);
    int ifindex = (int)if_nametoindex(ifname);
    if (!ifindex) return os_error("no such interface", ifname);
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) return os_error("cannot open an AF_PACKET socket", ifname);
    if (bind_to(fd, ifindex, 0) < 0) {
        close(fd);
        return os_error("cannot bind to the interface", ifname);
    }
    d->fd = fd;
    d->ifindex = ifindex;
    d->max_frame = UINT32_MAX;
    init_msgs(d);
    Py_RETURN_NONE;
}

/* live_open(dev, ifname, program, max_frame): this worker's RX/TX socket on
 * the device: TPACKET_V3 ring, promiscuous, ignoring outgoing frames, bound,
 * dropping everything until live_run starts (so no frame is processed
 * before every worker has joined the fanout group). */
static PyObject *py_live_open(PyObject *self, PyObject *args) {
    int dev;
    const char *ifname;
    Py_buffer prog;
    unsigned int max_frame;
    if (!PyArg_ParseTuple(args, "isy*I", &dev, &ifname, &prog, &max_frame)) return NULL;
    PyObject *ret = NULL;
    int fd = -1;
    if (check_dev(dev) < 0) goto out;
    if (!shared_ok()) {
        PyErr_SetString(PyExc_RuntimeError, "live_setup() first");
        goto out;
    }
    if (prog.len == 0 || prog.len % sizeof(struct sock_filter) || prog.len / sizeof(struct sock_filter) > 4096) {
        PyErr_SetString(PyExc_ValueError, "the steering program is not a classic-BPF program");
        goto out;
    }
    LiveDev *d = &D[dev];
    dev_close(d);   /* e.g. the control's send-only socket, inherited by the fork */
    int ifindex = (int)if_nametoindex(ifname);
    if (!ifindex) {
        os_error("no such interface", ifname);
        goto out;
    }
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);   /* protocol 0: nothing arrives before bind */
    if (fd < 0) {
        os_error("cannot open an AF_PACKET socket", ifname);
        goto out;
    }
    int v3 = TPACKET_V3, one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v3, sizeof v3) < 0) {
        os_error("TPACKET_V3 is not supported", ifname);
        goto out;
    }
    struct sock_filter drop = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog dropall = {1, &drop};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &dropall, sizeof dropall) < 0) {
        os_error("cannot attach a socket filter", ifname);
        goto out;
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
        goto out;
    }
    size_t maplen = (size_t)ring_block_size * ring_block_nr;
    uint8_t *map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) {
        os_error("cannot map the RX ring", ifname);
        goto out;
    }
    (void)setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);   /* >= 4.20 */
    if (bind_to(fd, ifindex, ETH_P_ALL) < 0) {
        munmap(map, maplen);
        os_error("cannot bind to the interface", ifname);
        goto out;
    }
    struct packet_mreq mr;
    memset(&mr, 0, sizeof mr);
    mr.mr_ifindex = ifindex;
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) {
        munmap(map, maplen);
        os_error("cannot set promiscuous mode", ifname);
        goto out;
    }
    d->prog = malloc(prog.len);
    if (!d->prog) {
        munmap(map, maplen);
        PyErr_NoMemory();
        goto out;
    }
    memcpy(d->prog, prog.buf, prog.len);
    d->prog_len = (uint16_t)(prog.len / sizeof(struct sock_filter));
    d->fd = fd;
    fd = -1;
    d->rx = 1;
    d->ifindex = ifindex;
    d->max_frame = max_frame;
    d->map = map;
    d->maplen = maplen;
    init_msgs(d);
    ret = Py_NewRef(Py_None);
out:
    if (fd >= 0) close(fd);
    PyBuffer_Release(&prog);
    return ret;
}

static int join_group(LiveDev *d, int dev) {
    int flags = PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
    for (int attempt = 0; attempt < 2; attempt++, flags = 0) {   /* kernels < 6.2 lack the flag */
        int val;
        if (g_slot == 0) val = (PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_UNIQUEID | flags) << 16;
        else val = (int)atomic_load(&LS->fanout_id[dev]) | ((PACKET_FANOUT_CBPF | flags) << 16);
        if (setsockopt(d->fd, SOL_PACKET, PACKET_FANOUT, &val, sizeof val) == 0) break;
        if (errno != EINVAL || attempt == 1) return -1;
    }
    if (g_slot == 0) {
        int val = 0;
        socklen_t len = sizeof val;
        if (getsockopt(d->fd, SOL_PACKET, PACKET_FANOUT, &val, &len) < 0) return -1;
        atomic_store(&LS->fanout_id[dev], (uint32_t)val & 0xffff);
        struct sock_fprog fp = {d->prog_len, d->prog};
        if (setsockopt(d->fd, SOL_PACKET, PACKET_FANOUT_DATA, &fp, sizeof fp) < 0) return -1;
    }
    d->joined = 1;
    return 0;
}

/* live_join(timeout_s=20): wait for this worker's turn, join every opened
 * device's fanout group (in device order), pass the turn on. */
static PyObject *py_live_join(PyObject *self, PyObject *args) {
    double timeout = 20.0;
    if (!PyArg_ParseTuple(args, "|d", &timeout)) return NULL;
    if (!shared_ok()) return PyErr_Format(PyExc_RuntimeError, "live_setup() first");
    uint64_t deadline = mono_ns() + (uint64_t)(timeout * 1e9);
    while (atomic_load(&LS->turn) != (uint32_t)g_slot) {
        if (atomic_load(&LS->failed) || live_stopping())
            return PyErr_Format(PyExc_RuntimeError, "another worker failed to start");
        if (mono_ns() > deadline) return PyErr_Format(PyExc_TimeoutError, "timed out waiting to join");
        usleep(200);
    }
    for (int i = 0; i < g_cfg.ndevs; i++) {
        LiveDev *d = &D[i];
        if (!d->rx || d->joined) continue;
        if (join_group(d, i) < 0) {
            char name[IF_NAMESIZE] = "?";
            if_indextoname((unsigned)d->ifindex, name);
            return os_error("cannot join the fanout group", name);
        }
    }
    atomic_fetch_add(&LS->turn, 1);
    Py_RETURN_NONE;
}

/* live_fail(message): a worker could not start; the control process reports it. */
static PyObject *py_live_fail(PyObject *self, PyObject *arg) {
    const char *msg = PyUnicode_AsUTF8(arg);
    if (!msg) return NULL;
    if (shared_ok()) {
        uint32_t zero = 0;
        if (atomic_compare_exchange_strong(&LS->failed, &zero, (uint32_t)g_slot + 1)) {
            snprintf(LS->error, sizeof LS->error, "%s", msg);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *py_live_error(PyObject *self, PyObject *noargs) {
    if (!shared_ok() || !atomic_load(&LS->failed)) Py_RETURN_NONE;
    return PyUnicode_FromString(LS->error);
}

static PyObject *py_live_running(PyObject *self, PyObject *noargs) {
    return PyLong_FromUnsignedLong(shared_ok() ? atomic_load(&LS->running) : 0);
}

static PyObject *py_live_stats(PyObject *self, PyObject *arg) {
    long s = PyLong_AsLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (!shared_ok() || s < 0 || (uint32_t)s >= g_arena->nslots)
        return PyErr_Format(PyExc_ValueError, "bad slot (or no live run)");
    LiveSlot *l = &LS->slot[s];
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsK}", "kernel_packets", l->kernel_packets, "kernel_drops",
                         l->kernel_drops, "freeze_q", l->freeze_q, "oversize", l->oversize, "csum_fixed",
                         l->csum_fixed, "tx_sent", l->tx_sent, "tx_errors", l->tx_errors, "tx_calls",
                         l->tx_calls, "link_errors", l->link_errors);
}

/* live_close(): close this process's sockets; live mode off. */
static PyObject *py_live_close(PyObject *self, PyObject *noargs) {
    devs_init();
    for (int i = 0; i < NFOS_MAX_DEVS; i++) dev_close(&D[i]);
    g_live = 0;
    LS = NULL;
    started = 0;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ TX */

static void flush_dev(LiveDev *d) {
    LiveSlot *st = shared_ok() ? my_live() : NULL;
    uint32_t at = 0;
    while (at < d->ntx) {
        int r = sendmmsg(d->fd, d->msg + at, d->ntx - at, 0);
        if (st) st->tx_calls++;
        if (r > 0) {
            at += (uint32_t)r;
            if (st) st->tx_sent += (uint64_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {   /* this frame is refused (too large, link down, no buffer): skip it */
            at++;
            if (st) st->tx_errors++;
        }
    }
    d->ntx = 0;
}

void live_tx(const uint8_t *frame, uint32_t len, uint32_t devmask, uint32_t indev) {
    (void)indev;
    for (int i = 0; devmask && i < NFOS_MAX_DEVS; i++, devmask >>= 1) {
        if (!(devmask & 1)) continue;
        LiveDev *d = &D[i];
        if (d->fd < 0) {
            if (shared_ok()) my_live()->tx_errors++;
            continue;
        }
        if (d->ntx == TXQ) flush_dev(d);
        d->iov[d->ntx].iov_base = (void *)frame;
        d->iov[d->ntx].iov_len = len;
        d->ntx++;
    }
}

void live_tx_flush(void) {
    if (!D_init) return;
    for (int i = 0; i < g_cfg.ndevs && i < NFOS_MAX_DEVS; i++)
        if (D[i].ntx) flush_dev(&D[i]);
}

/* ------------------------------------------------------------------ RX */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* A local sender (veth peer) left the TCP/UDP checksum to offload: complete it. */
static void finish_l4_checksum(PktSlot *s) {
    if (!(s->flags & (PF_TCP | PF_UDP)) || (s->flags & (PF_FRAG | PF_MALFORMED))) return;
    uint8_t *d = s->data;
    uint32_t l3 = s->l3, l4 = s->l4;
    uint32_t l4len = rd16(d + l3 + 2) - (l4 - l3);
    uint32_t at = (s->flags & PF_TCP) ? 16 : 6;
    if (l4len < at + 2) return;
    d[l4 + at] = d[l4 + at + 1] = 0;
    uint64_t sum = (uint64_t)rd16(d + l3 + 12) + rd16(d + l3 + 14) + rd16(d + l3 + 16) + rd16(d + l3 + 18) +
                   s->proto + l4len;
    const uint8_t *p = d + l4;
    uint32_t i = 0;
    for (; i + 1 < l4len; i += 2) sum += rd16(p + i);
    if (l4len & 1) sum += (uint32_t)p[l4len - 1] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    uint16_t c = (uint16_t)~sum;
    if (c == 0 && (s->flags & PF_UDP)) c = 0xffff;
    d[l4 + at] = (uint8_t)(c >> 8);
    d[l4 + at + 1] = (uint8_t)c;
}

static void read_kernel_stats(void) {
    if (!shared_ok()) return;
    LiveSlot *st = my_live();
    for (int i = 0; i < g_cfg.ndevs; i++) {
        if (!D[i].rx) continue;
        struct tpacket_stats_v3 ks;
        socklen_t len = sizeof ks;
        if (getsockopt(D[i].fd, SOL_PACKET, PACKET_STATISTICS, &ks, &len) == 0) {   /* read resets */
            st->kernel_packets += ks.tp_packets;
            st->kernel_drops += ks.tp_drops;
            st->freeze_q += ks.tp_freeze_q_cnt;
        }
    }
}

static inline struct tpacket_block_desc *block_at(LiveDev *d, uint32_t i) {
    return (struct tpacket_block_desc *)(d->map + (size_t)i * ring_block_size);
}

static void release_block(LiveDev *d) {
    __atomic_store_n(&d->blk->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    d->blk = NULL;
    d->cur = (d->cur + 1) % ring_block_nr;
}

/* Fill `slots` with up to `max` frames of the device's current block. */
static int take_batch(LiveDev *d, int dev, PktSlot *slots, Item *items, int max, uint64_t now) {
    if (!d->blk) {
        struct tpacket_block_desc *b = block_at(d, d->cur);
        if (!(__atomic_load_n(&b->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) return 0;
        d->blk = b;
        d->left = b->hdr.bh1.num_pkts;
        d->next = (uint8_t *)b + b->hdr.bh1.offset_to_first_pkt;
    }
    LiveSlot *st = my_live();
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
        }
        if (len < h->tp_len || len > d->max_frame) {   /* truncated, or a merged (GRO/GSO) frame */
            st->oversize++;
            continue;
        }
        PktSlot *s = &slots[n];
        s->data = data;
        s->len = len;
        s->dev = (uint16_t)dev;
        s->time = now;
        s->undo_serial = 0;
        s->enq_ns = 0;
        pkt_parse(s);
        if (h->tp_status & TP_STATUS_CSUMNOTREADY) {
            finish_l4_checksum(s);
            st->csum_fixed++;
        }
        set_key_extract(s);
        items[n].pkt = s;
        items[n].expire_id = -1;
        n++;
    }
    return n;
}

/* First call in a worker: wait until every worker has joined, then let
 * frames in (drop the filter installed by live_open). */
static int live_begin(void) {
    while (atomic_load(&LS->turn) < LS->nworkers) {
        if (atomic_load(&LS->failed) || live_stopping()) return -1;
        usleep(200);
    }
    for (int i = 0; i < g_cfg.ndevs; i++) {
        if (!D[i].rx) continue;
        int dummy = 0;
        (void)setsockopt(D[i].fd, SOL_SOCKET, SO_DETACH_FILTER, &dummy, sizeof dummy);
    }
    read_kernel_stats();   /* start from zero */
    if (shared_ok()) memset(my_live(), 0, sizeof(LiveSlot));
    my_shared()->stats.begin_ns = mono_ns();
    last_stats_ns = mono_ns();
    atomic_fetch_add(&LS->running, 1);
    started = 1;
    return 0;
}

static PktSlot lslots[NFOS_BATCH_MAX];

PyObject *live_run(long long budget) {
    if (!shared_ok()) {
        PyErr_SetString(PyExc_RuntimeError, "live mode is not set up (live_setup / live_open)");
        return NULL;
    }
    if (!started && live_begin() < 0) return PyLong_FromLong(-1);
    SlotShared *sh = my_shared();
    Item items[NFOS_BATCH_MAX];
    struct pollfd pfd[NFOS_MAX_DEVS];
    int npfd = 0;
    for (int i = 0; i < g_cfg.ndevs; i++)
        if (D[i].rx) {
            pfd[npfd].fd = D[i].fd;
            pfd[npfd].events = POLLIN | POLLERR;
            npfd++;
        }
    long long done = 0;
    uint64_t idle_since = 0;
    int batch = g_cfg.batch > 0 ? g_cfg.batch : NFOS_BATCH_MAX;
    while (done < budget) {
        if (live_stopping()) {
            read_kernel_stats();
            sh->stats.finish_ns = mono_ns();
            return PyLong_FromLong(-1);
        }
        int got = 0;
        for (int i = 0; i < g_cfg.ndevs; i++) {
            LiveDev *d = &D[i];
            if (!d->rx) continue;
            uint64_t t0 = mono_ns();
            int n = take_batch(d, i, lslots, items, batch, t0);
            if (n) {
                if (t0 > g_clock) {
                    g_clock = t0;
                    loop_sweep_expired();
                    if (PyErr_Occurred()) return NULL;
                }
                loop_run_batch(items, n);   /* commits, publishes, flushes TX */
                if (PyErr_Occurred()) return NULL;
                got += n;
                done += n;
                sh->stats.rx_done += (uint64_t)n;
            }
            if (d->blk && !d->left) release_block(d);
            if (n) {
                sh->stats.clock_ns = g_clock;
                sh->stats.busy_ns += mono_ns() - t0;
            }
        }
        uint64_t now = mono_ns();
        if (now - last_stats_ns >= STATS_EVERY_NS) {
            read_kernel_stats();
            last_stats_ns = now;
        }
        if (got) {
            idle_since = 0;
            continue;
        }
        /* idle: expire sets on the monotonic clock, then wait for a block */
        if (now > g_clock) {
            g_clock = now;
            loop_sweep_expired();
            if (PyErr_Occurred()) return NULL;
            sh->stats.clock_ns = g_clock;
        }
        if (!idle_since) idle_since = now;
        else if (now - idle_since > IDLE_RETURN_NS) break;
        int r = poll(pfd, (nfds_t)npfd, IDLE_POLL_MS);
        if (r < 0 && errno != EINTR) return PyErr_SetFromErrno(PyExc_OSError);
        for (int k = 0; r > 0 && k < npfd; k++)
            if (pfd[k].revents & POLLERR) {   /* read (and so clear) it, or poll() returns at once forever */
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(pfd[k].fd, SOL_SOCKET, SO_ERROR, &err, &len);
                my_live()->link_errors++;
            }
    }
    return PyLong_FromLongLong(done);
}

PyMethodDef live_methods[] = {
    {"live_setup", (PyCFunction)(void (*)(void))py_live_setup, METH_VARARGS | METH_KEYWORDS,
     "live_setup(nworkers, frame_size=2048, block_size=262144, block_nr=16): before the fork"},
    {"live_open_tx", py_live_open_tx, METH_VARARGS, "live_open_tx(dev, ifname): a send-only socket"},
    {"live_open", py_live_open, METH_VARARGS,
     "live_open(dev, ifname, program, max_frame): a worker's ring socket on the device"},
    {"live_join", py_live_join, METH_VARARGS, "live_join(timeout_s=20): join the fanout groups in slot order"},
    {"live_fail", py_live_fail, METH_O, "live_fail(message): this worker could not start"},
    {"live_error", py_live_error, METH_NOARGS, "the first worker's start-up error, or None"},
    {"live_running", py_live_running, METH_NOARGS, "workers that are receiving"},
    {"live_stats", py_live_stats, METH_O, "live_stats(slot) -> ring and TX counters"},
    {"live_close", py_live_close, METH_NOARGS, "close this process's sockets; live mode off"},
    {NULL, NULL, 0, NULL}};
