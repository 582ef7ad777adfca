/* What the structure plug-ins share: ids and the "still loaded" check. */
#include "structures.h"

static uint16_t next_struct_id = 1;
uint16_t struct_register(void) { return next_struct_id++; }

int struct_live(const void *base, uint32_t gen, const char *name) {
    if (base && gen == proc.arena_gen) return 0;
    PyErr_Format(PyExc_RuntimeError, "this %s belongs to an NF that is no longer loaded", name);
    return -1;
}
