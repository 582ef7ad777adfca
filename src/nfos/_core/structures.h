/* Layer 5: the structure plug-ins (structures.def) and what they share. */
#ifndef NFOS_STRUCTURES_H
#define NFOS_STRUCTURES_H

#include "record.h"

/* A new structure id (per process; the profiler's registry key). */
uint16_t struct_register(void);
/* `name` (e.g. "Vector") is still usable: its NF is loaded (0), else -1 with
 * RuntimeError. */
int struct_live(const void *base, uint32_t gen, const char *name);

#define STRUCTURE(name) int name##_module_init(PyObject *m);
#include "structures.def"
#undef STRUCTURE

#endif
