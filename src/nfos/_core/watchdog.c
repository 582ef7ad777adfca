/* The watchdog: a handler in an endless loop must not freeze a run silently.
 *
 * Each slot publishes a heartbeat in the arena (worker_loop.c, process.h):
 * the handler it is in (HB_CODE of worker_loop.h, 0 between handlers) and a count of
 * handler calls, two relaxed stores per call, no clock.  This thread, in the
 * control process (started after the fork: workers never have it), samples
 * them every WATCH_EVERY_NS; a slot whose count has not moved while it stayed
 * in one handler for `limit` is named on stderr once per call:
 *
 *   nfos: worker 1 has been in @nf.packet on_packet (nf.py:42) for 10 s
 *
 * It is C, not Python, so it reports even when the stuck code holds the GIL
 * (the sequential mode runs handlers in the control process itself), and it
 * writes with write(2): no lock that a stuck thread could hold. */
#include "watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define WATCH_EVERY_NS 50000000ull   /* 50 ms */

static struct {
    pthread_t thread;
    int running;
    pid_t pid;   /* the process that runs it (a forked child has no thread) */
    _Atomic int quit;
    uint64_t limit;
    int nslots;
    char names[WATCHDOG_CODES][WATCHDOG_NAME];
    _Atomic uint64_t reports;
} W;

static void *watch(void *arg) {
    (void)arg;
    ProcShared *sh = proc.shared;
    uint64_t seen_calls[NFOS_MAX_SLOTS] = {0}, since[NFOS_MAX_SLOTS] = {0};
    int reported[NFOS_MAX_SLOTS] = {0};
    while (!atomic_load(&W.quit)) {
        uint64_t now = mono_ns();
        for (int s = 0; s < W.nslots; s++) {
            SlotShared *me = &sh->slots[s];
            uint32_t code = atomic_load_explicit(&me->hb_handler, memory_order_relaxed);
            uint64_t calls = atomic_load_explicit(&me->hb_calls, memory_order_relaxed);
            if (!code || calls != seen_calls[s] || !since[s]) {   /* moving (or new): restart the clock */
                seen_calls[s] = calls;
                since[s] = now;
                reported[s] = 0;
                continue;
            }
            if (reported[s] || now - since[s] < W.limit) continue;
            reported[s] = 1;
            const char *name = code < WATCHDOG_CODES && W.names[code][0] ? W.names[code] : "a handler";
            char line[WATCHDOG_NAME + 96];
            int n = snprintf(line, sizeof line, "nfos: worker %d has been in %s for %.0f s\n", s, name,
                             (double)(now - since[s]) / 1e9);
            if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
            for (int at = 0; at < n;) {
                ssize_t w = write(2, line + at, (size_t)(n - at));
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) break;
                at += (int)w;
            }
            atomic_fetch_add(&W.reports, 1);
        }
        struct timespec ts = {0, (long)WATCH_EVERY_NS};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int watchdog_start(uint64_t limit_ns, int nslots, const char *const names[WATCHDOG_CODES]) {
    watchdog_stop();
    if (!proc.shared || nslots < 1 || (uint32_t)nslots > proc.nslots) {
        PyErr_SetString(PyExc_RuntimeError, "the watchdog watches the slots of a loaded NF");
        return -1;
    }
    W.limit = limit_ns ? limit_ns : 1;
    W.nslots = nslots;
    for (int i = 0; i < WATCHDOG_CODES; i++)
        snprintf(W.names[i], WATCHDOG_NAME, "%s", names[i] ? names[i] : "");
    atomic_store(&W.quit, 0);
    atomic_store(&W.reports, 0);
    int e = pthread_create(&W.thread, NULL, watch, NULL);
    if (e) {
        errno = e;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    W.running = 1;
    W.pid = getpid();
    return 0;
}

void watchdog_stop(void) {
    if (!W.running) return;
    if (W.pid != getpid()) {   /* inherited by a fork: the thread is not in this process */
        W.running = 0;
        return;
    }
    atomic_store(&W.quit, 1);
    pthread_join(W.thread, NULL);
    W.running = 0;
}

uint64_t watchdog_reports(void) { return atomic_load(&W.reports); }
