/* The arena: one anonymous shared mapping, bump-allocated (see arena.h).
 *
 * The mapping's first cache line holds its magic and the bump offset, so a
 * process that allocates after the fork (the control process copying a
 * frame it injects) moves the same offset every process sees.  Only one
 * process allocates at a time (the control process, or a worker before it
 * runs): the bump is a plain load and store. */
#include "arena.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define ARENA_MAGIC 0x6e666f7361726e61ull   /* "nfosarna" */

typedef struct {
    uint64_t magic;
    _Atomic uint64_t bump;
} ArenaHead;

int arena_map(Arena *a, size_t size) {
    if (size < NFOS_CACHELINE) {
        errno = EINVAL;
        return -1;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -1;
    ArenaHead *h = p;
    h->magic = ARENA_MAGIC;
    atomic_store(&h->bump, NFOS_CACHELINE);
    a->base = p;
    a->end = (char *)p + size;
    a->bump = &h->bump;
    return 0;
}

void arena_unmap(Arena *a) {
    if (a->base) munmap(a->base, arena_size(a));
    a->base = a->end = NULL;
    a->bump = NULL;
}

void *arena_alloc(Arena *a, size_t size, size_t align) {
    if (!a->base) return NULL;
    if (align < 8) align = 8;
    uint64_t off = atomic_load(a->bump);
    off = (off + align - 1) & ~(uint64_t)(align - 1);
    if (off > arena_size(a) || size > arena_size(a) - off) return NULL;
    atomic_store(a->bump, off + size);
    return a->base + off;
}

size_t arena_prefault(const Arena *a) {
    if (!a->base) return 0;
    size_t page = (size_t)sysconf(_SC_PAGESIZE), used = (size_t)arena_used(a), mapped = 0;
    enum { CHUNK = 4096 };   /* pages per mincore() call */
    unsigned char vec[CHUNK];
    for (size_t off = 0; off < used; off += CHUNK * page) {
        size_t len = used - off < CHUNK * page ? used - off : CHUNK * page;
        if (mincore(a->base + off, len, vec) != 0) return mapped;
        size_t pages = (len + page - 1) / page;
        for (size_t i = 0; i < pages;) {   /* each run of backed pages: one populate call */
            if (!(vec[i] & 1)) {
                i++;
                continue;
            }
            size_t j = i;
            while (j < pages && (vec[j] & 1)) j++;
            char *lo = a->base + off + i * page;
            if (madvise(lo, (j - i) * page, MADV_POPULATE_READ) != 0)
                for (char *p = lo; p < lo + (j - i) * page; p += page) (void)*(volatile char *)p;
            mapped += j - i;
            i = j;
        }
    }
    return mapped;
}
