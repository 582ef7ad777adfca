/* nfos C core: shared declarations.
 *
 * One process is one "slot": worker 0..N-1, or the control process (slot N).
 * Everything that several processes see lives in the arena, one anonymous
 * shared mapping created before the workers are forked, so every pointer into
 * it is valid in every process.  Everything else (the transaction descriptor,
 * Python objects, DistributedObj merge caches) is private to its process.
 */
#ifndef NFOS_CORE_H
#define NFOS_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#define NFOS_MAX_SLOTS 128   /* workers + control; owner ids fit the lock word */
#define NFOS_MAX_DEVS 32     /* output device masks are 32-bit */
#define NFOS_MAX_KEY 48      /* bytes of a packet-set key */
#define NFOS_BATCH_MAX 32    /* packets per transaction (paper: one RX burst) */
#define NFOS_CACHELINE 64

/* PyErr_GetRaisedException / PyErr_SetRaisedException appeared in 3.12. */
static inline PyObject *nfos_fetch_exc(void) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (!t) return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb) PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}
static inline void nfos_restore_exc(PyObject *v) {
    if (!v) return;
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(v)), v, PyException_GetTraceback(v));
}

/* ------------------------------------------------------------------ arena */

void *arena_alloc(size_t size, size_t align);   /* zeroed, never freed */
int arena_ready(void);

/* --------------------------------------------------------- abort causes
 * One list shared by the statistics and the profiler.  A conflict cause
 * names what the *other* side did to an object this transaction used. */
enum abort_cause {
    ABORT_LOCKED = 0,        /* object write-locked by a committing worker */
    ABORT_VALIDATION,        /* object read here was committed by another worker */
    ABORT_SNAPSHOT,          /* newer version met on open; snapshot extension failed */
    ABORT_TOO_LARGE,         /* the transaction outgrew its descriptor */
    ABORT_HANDLER_ERROR,     /* not a conflict: the NF raised; its packet is dropped */
    ABORT_NCAUSES
};
extern const char *const abort_cause_names[ABORT_NCAUSES];

enum op_kind { OP_READ = 0, OP_WRITE = 1 };

/* Structure operations, recorded with every object a transaction opens and
 * in each object's last-writer word, so a conflict names both sides. */
enum op_code {
    OPC_NONE = 0,
    OPC_VEC_READ, OPC_VEC_WRITE,
    OPC_DOBJ_READ, OPC_DOBJ_UPDATE,
    OPC_MAP_GET, OPC_MAP_SET, OPC_MAP_DELETE,
    OPC_ALLOC_ALLOCATE, OPC_ALLOC_FREE, OPC_ALLOC_REFRESH, OPC_ALLOC_EXPIRE, OPC_ALLOC_QUERY,
    OPC_NCODES
};
extern const char *const op_code_names[OPC_NCODES];

/* ------------------------------------------------------ transactional objects
 * Every shared object (a Vector element, a DistributedObj replica, later a Map
 * bucket or allocator cell) starts with this 16-byte header; payload follows.
 *
 * lock word:  bits 63..8  version (the global clock value of the commit
 *                         that last wrote the object)
 *             bits  7..1  owner slot while locked
 *             bit      0  locked
 * The version stays in the word while it is locked, so the owner can check
 * that what it read is still what it is about to overwrite.  A fresh object
 * is all zeroes (unlocked, version 0), so structures need no initialisation
 * pass and untouched pages of the arena stay unbacked.
 * info word:  who wrote last: bits 7..0 slot, 15..8 operation (op_code),
 *             31..16 site (profiler line id, 0 when profiling is off),
 *             63..32 detail (e.g. the hash of the Map key written). */
typedef struct {
    _Atomic uint64_t lock;
    uint64_t info;
} ObjHdr;

#define LOCK_BIT 1ull
#define LOCK_OWNER(w) ((((w) >> 1) & 0x7f))
#define LOCK_VERSION(w) ((w) >> 8)
#define OBJ_DATA(o) ((char *)(o) + sizeof(ObjHdr))

/* Stride of an object with `payload` bytes: header + payload, cache-line
 * aligned so that two objects never share a line (no false conflicts). */
static inline size_t obj_stride(size_t payload) {
    size_t s = sizeof(ObjHdr) + payload;
    return (s + NFOS_CACHELINE - 1) & ~(size_t)(NFOS_CACHELINE - 1);
}

/* ------------------------------------------------------------ statistics */
typedef struct {
    uint64_t packets_in, packets_out, dropped, malformed, handler_errors, table_full;
    uint64_t out_per_dev[NFOS_MAX_DEVS];
    uint64_t tx_started, tx_committed, tx_aborted, irrevocable, splits;
    uint64_t aborts_by_cause[ABORT_NCAUSES];
    uint64_t sets_created, sets_expired, sets_live;
    uint64_t busy_ns;
    uint64_t clock_ns;        /* this slot's virtual clock, for the control process */
    uint64_t rx_done;         /* RX descriptors fully processed (commit included) */
    uint64_t peak_rss_kb, pss_kb;   /* reported by the worker when it exits */
    uint64_t begin_ns;        /* monotonic time the slot began processing */
    uint64_t finish_ns;       /* monotonic time the slot finished its RX ring */
    /* One transaction in STM_SAMPLE is timed: its whole duration, and the part
     * spent inside the STM (begin, opens, undo saves, commit or abort). */
    uint64_t tx_sampled, tx_sampled_ns, stm_sampled_ns;
} SlotStats;

/* Conflict records for the profiler: a ring per slot. */
#define CONFLICT_RING 16384
typedef struct {
    uint16_t cause, struct_id;
    uint8_t own_op, other_slot, other_op, pad;
    uint32_t index;
    uint32_t own_site, other_site;
    uint32_t own_detail, other_detail;
} ConflictRecord;

/* Latency histogram (paced mode): log-linear buckets, 16 per power of two. */
#define LAT_BUCKETS 640

/* Redo log kept in the arena during write-back, so that the control process
 * can finish (or ignore) the commit of a worker that died in the middle. */
#define REDO_BYTES (256 * 1024)
enum { REDO_IDLE = 0, REDO_WRITING = 1 };

typedef struct {
    _Atomic uint32_t in_tx;          /* inside a transaction (irrevocable waits for 0) */
    uint32_t pad0;
    SlotStats stats;
    _Atomic uint64_t conflict_count;
    ConflictRecord conflicts[CONFLICT_RING];
    uint64_t lat_hist[LAT_BUCKETS];   /* queue-to-commit latency of timed packets */
    _Atomic uint32_t redo_state;
    uint32_t redo_used;
    uint64_t redo_version;
    char redo[REDO_BYTES];
} SlotShared;

#define ERROR_SITES 512
typedef struct {
    uint64_t magic;
    char pad0[56];
    _Atomic uint64_t clock;             /* global version clock (TL2) */
    char pad1[56];
    _Atomic uint32_t irrevocable;       /* 0, or owner slot + 1 */
    uint32_t nslots;
    char pad2[56];
    _Atomic uint64_t error_sites[ERROR_SITES];  /* handler error lines already logged */
    SlotShared slots[];
} ArenaHeader;

extern ArenaHeader *g_arena;
extern uint32_t g_arena_gen;   /* bumped when an arena is destroyed */

/* ------------------------------------------------------------ transactions */
enum tx_mode {
    TX_DIRECT = 0,   /* write in place, undo log: sequential mode, irrevocable */
    TX_STM = 1,      /* copy on open, validate, write back on commit */
    TX_UNLOGGED = 2  /* write in place, no undo: @nf.init, before any worker exists */
};

typedef struct {
    ObjHdr *obj;          /* NULL for a private (undo-only) entry */
    char *data;           /* STM: private copy; DIRECT: the object itself */
    uint64_t version;     /* version seen when opened (STM) */
    uint32_t size;
    uint32_t index;
    uint16_t struct_id;
    uint8_t written;
    uint8_t undo_saved;
    uint8_t op;
    uint32_t site;
    uint32_t detail;
} TxEntry;

typedef struct {
    int active;
    int mode;
    int irrevocable;
    int doomed;               /* an abort was raised; later opens fail too */
    uint64_t serial;          /* changes at every attempt: stale views are refused */
    uint64_t rv;              /* snapshot version */
    TxEntry *entries;
    uint32_t nentries, cap;
    int32_t *htab;            /* open addressing: pointer -> entry index */
    uint32_t *hgen;
    uint32_t hmask, gen;
    char *copybuf;
    size_t copy_used, copy_cap;
    char *undo;
    size_t undo_used, undo_cap;
    char *emit;               /* frames from nf.emit, published at commit */
    size_t emit_used, emit_cap;
    int conflict_valid;
    ConflictRecord conflict;
    uint32_t site;            /* profiler: current access site */
    uint8_t op;               /* structure operation of the next open (op_code) */
    uint32_t detail;          /* its detail (Map: key hash) */
    int sampled;              /* this transaction is timed (1 in STM_SAMPLE) */
    uint64_t t_begin, t_commit, stm_ns;
} Tx;

#define STM_SAMPLE 64

extern Tx g_tx;
extern int g_slot;            /* this process's slot */
extern uint64_t g_clock;      /* this process's virtual clock (ns) */
extern PyObject *TransactionAborted;
extern PyObject *TableFull;

int tx_init(void);
void tx_begin(int mode, int irrevocable);
int tx_commit(void);          /* 0 ok, -1 aborted (state rolled back) */
void tx_abort(void);          /* roll back everything of the attempt */
/* Open shared object `obj` for reading or writing; returns where to access
 * its payload, or NULL with TransactionAborted set. */
char *tx_open(ObjHdr *obj, uint32_t size, uint16_t struct_id, uint32_t index, int write);
/* Profiling: the line of the NF source that is running (0 if none). */
uint32_t current_site(void);
/* Before writing private memory (packet-set state, packet bytes, caches):
 * remember its old bytes so an abort can restore them. */
int tx_save_private(void *ptr, uint32_t size);
/* Generic undo record with a callback (structural changes of tables). */
typedef void (*undo_fn)(void *payload);
int tx_push_undo(undo_fn fn, const void *payload, uint32_t size);
int tx_emit(const char *frame, uint32_t len, uint32_t devmask);
PyObject *tx_raise_abort(int cause, ObjHdr *obj, uint16_t struct_id, uint32_t index, int own_op);
void stats_count_abort(void);
SlotShared *my_shared(void);

/* ---------------------------------------------------------- record views */
enum field_kind { K_U8, K_U16, K_U32, K_U64, K_I8, K_I16, K_I32, K_I64, K_F64, K_BOOL, K_BYTES };

typedef struct {
    PyObject_VAR_HEAD         /* var-sized: a free record keeps its bytes inline */
    char *data;
    ObjHdr *obj;
    uint64_t serial;
    uint32_t size;            /* record bytes */
    uint32_t objsize;         /* payload of `obj` to open for a write (0: size) */
    uint32_t index;
    uint16_t struct_id;
    uint8_t flags;
    uint8_t wop;              /* op_code of a write through this view */
} RecordView;

#define RV_OPENED_W 1   /* write access already recorded */
#define RV_READONLY 2
#define RV_PRIVATE 4    /* not a shared object: undo only */
#define RV_FREE 8       /* not inside a transaction at all (scratch record) */

extern PyTypeObject *RecordView_Type;
extern PyTypeObject *Field_Type;
PyObject *record_view_new(PyTypeObject *type, char *data, ObjHdr *obj, uint32_t size,
                          uint16_t struct_id, uint32_t index, uint8_t flags);
int record_types_init(PyObject *m);
PyObject *load_field(const char *p, uint8_t kind, uint16_t size);
int store_field(char *p, uint8_t kind, uint16_t size, PyObject *value, PyObject *name);

/* ---------------------------------------------------------------- packets */
enum pkt_flags {
    PF_VLAN = 1, PF_IP = 2, PF_TCP = 4, PF_UDP = 8, PF_ICMP = 16,
    PF_FRAG = 32, PF_MALFORMED = 64
};

typedef struct {
    uint8_t *data;
    uint32_t len;
    uint16_t dev;
    int16_t out;              /* -1 drop, -2 flood, >= 0 device */
    uint64_t time;
    uint16_t l3, l4, payload; /* offsets */
    uint8_t flags, proto;
    uint8_t has_set, keylen;
    uint32_t rss;             /* Toeplitz hash (steering) */
    uint64_t khash;           /* table hash */
    uint64_t undo_serial;     /* header bytes saved for this attempt */
    uint64_t enq_ns;          /* paced mode: monotonic time the generator queued it (0: not timed) */
    uint8_t key[NFOS_MAX_KEY];
} PktSlot;

typedef struct Packet {
    PyObject_HEAD
    PktSlot *slot;            /* NULL once the handler has returned */
    PyObject *views[4];       /* eth, ip, l4, icmp: created on first use */
} Packet;

extern PyTypeObject *Packet_Type;
int packet_types_init(PyObject *m);
void pkt_parse(PktSlot *s);
PyObject *packet_new(PktSlot *s);
void packet_invalidate(PyObject *p);

/* ------------------------------------------------------ runtime config */
enum key_field { KF_ETH_SRC, KF_ETH_DST, KF_IP_SRC, KF_IP_DST, KF_PROTO, KF_SPORT, KF_DPORT, KF_NFIELDS };

typedef struct {
    int defined;
    int nfields;
    uint8_t fields[12];
} DevSetDef;

typedef struct {
    int ndevs;
    PyObject *dev_names;      /* tuple of str */
    DevSetDef defs[NFOS_MAX_DEVS];
    uint32_t proto_mask;      /* bit per IP protocol class: 1 tcp, 2 udp, 4 icmp, 8 other ip */
    int has_sets;
    uint32_t state_size;
    PyTypeObject *state_type;
    uint32_t capacity;        /* packet sets per worker */
    uint64_t expiry_ns;       /* 0: never */
    int batch;
    int nworkers;
    PyObject *h_new, *h_packet, *h_expired, *h_orphan, *h_error;
    uint32_t reta[128];
    uint32_t toeplitz[NFOS_MAX_KEY][256];
    int collect_output;
    int profile;              /* record the NF source line of every structure access */
    PyObject *nf_file;        /* the NF's file name (code objects' co_filename) */
    int configured;
} Config;

extern Config g_cfg;

void set_key_extract(PktSlot *s);
uint32_t toeplitz_hash(const uint8_t *key, int len);
void toeplitz_setup(const uint8_t *rss_key, int keylen);

/* packet-set table of this worker */
int pst_init(uint32_t capacity, uint32_t state_size);
int32_t pst_lookup(const PktSlot *s);
int32_t pst_insert(const PktSlot *s);   /* -1: full */
void pst_remove(int32_t slot);
char *pst_state(int32_t slot);
uint64_t pst_last_seen(int32_t slot);
void pst_touch(int32_t slot, uint64_t now);
int32_t pst_oldest(void);
uint32_t pst_count(void);

/* structures */
int structures_init(PyObject *m);
int map_init_module(PyObject *m);
int allocator_init_module(PyObject *m);
uint16_t struct_register(void);

/* worker loop: the pieces a packet-I/O backend drives (worker_loop.c) */
typedef struct {
    PktSlot *pkt;             /* a packet, or NULL for ... */
    int32_t expire_id;        /* ... the expiry of this packet set */
} Item;
void loop_run_batch(Item *items, int n);   /* one transaction (with retries, splits, fallbacks) */
void loop_sweep_expired(void);             /* expire this worker's idle packet sets */
uint64_t mono_ns(void);

/* Live packet I/O (pktio_afpacket.c).  When live, the worker loop takes its
 * packets from the backend instead of the RX ring, and output goes to
 * live_tx() (queued) and live_tx_flush() (after each commit). */
extern int g_live;
PyObject *live_run(long long budget);      /* like worker_run: count, or -1 when stopped */
void live_tx(const uint8_t *frame, uint32_t len, uint32_t devmask, uint32_t indev);
void live_tx_flush(void);
int live_stopping(void);                   /* the control process asked the workers to stop */
extern PyMethodDef live_methods[];

#endif
