/* Layer 1: the arena, one anonymous shared mapping and its bump allocator.
 *
 * Everything that several processes see lives here: it is mapped before the
 * workers are forked, so every pointer into it is valid in every process.
 * It is never named (nothing is left in /dev/shm), and its pages are backed
 * only when touched (MAP_NORESERVE): a fresh allocation reads as zeroes and
 * costs nothing until used.  Allocations are never freed; the whole mapping
 * goes at the end of the run.  Python-free. */
#ifndef NFOS_ARENA_H
#define NFOS_ARENA_H

#include "base.h"

typedef struct {
    char *base, *end;            /* NULL: no mapping */
    _Atomic uint64_t *bump;      /* next free offset; in the mapping, shared by every process */
} Arena;

/* Map `size` bytes: 0, or -1 with errno set. */
int arena_map(Arena *a, size_t size);
void arena_unmap(Arena *a);
/* `size` zeroed bytes aligned to `align` (at least 8); NULL when the arena is full. */
void *arena_alloc(Arena *a, size_t size, size_t align);
/* Map into this process's page tables the pages of the used part that are
 * backed (mincore), without backing any other: a forked process inherits no
 * page tables of a shared mapping, and its first touch of each page would be
 * a minor fault in the middle of its work.  Returns the pages mapped. */
size_t arena_prefault(const Arena *a);
static inline uint64_t arena_used(const Arena *a) { return a->base ? atomic_load(a->bump) : 0; }
static inline size_t arena_size(const Arena *a) { return (size_t)(a->end - a->base); }

#endif
