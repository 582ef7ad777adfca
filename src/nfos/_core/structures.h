/* Layer 5: the structure plug-ins (structures.def) and what they share. */
#ifndef NFOS_STRUCTURES_H
#define NFOS_STRUCTURES_H

#include "record.h"

/* A new structure id (per process; the profiler's registry key). */
uint16_t struct_register(void);
/* `name` (e.g. "Vector") is still usable: its NF is loaded (0), else -1 with
 * RuntimeError. */
int struct_live(const void *base, uint32_t gen, const char *name);
/* Structure `sid`'s objects: `count` objects `stride` bytes apart from `base`
 * (each an ObjHdr then its payload), for struct_dump (nfos verify). */
void struct_region(uint16_t sid, const void *base, size_t stride, size_t count);
/* The state of every structure of the loaded NF, in creation order: a list of
 * (sid, bytes), one per region, the bytes its objects whose payload is not all
 * zero as {u32 region number, u64 object, payload} (object headers left out:
 * versions differ between runs); NULL with an exception set. */
PyObject *struct_dump(void);

#define STRUCTURE(name) int name##_module_init(PyObject *m);
#include "structures.def"
#undef STRUCTURE

#endif
