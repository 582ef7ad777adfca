/* nfos._core: CPython glue only.  The hot path is in worker_loop.c,
 * packet.c and stm.c. */
#include "nfos_core.h"

#include <signal.h>
#include <sys/prctl.h>

extern PyMethodDef stm_methods[];
extern PyMethodDef packet_methods[];
extern PyMethodDef loop_methods[];

/* A forked worker dies with its control process (no orphans left behind). */
static PyObject *py_die_with_parent(PyObject *self, PyObject *noargs) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyMethodDef misc_methods[] = {
    {"die_with_parent", py_die_with_parent, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};

static int add_methods(PyObject *m, PyMethodDef *defs) {
    return PyModule_AddFunctions(m, defs);
}

static struct PyModuleDef core_module = {PyModuleDef_HEAD_INIT, "nfos._core",
                                         "nfos C core: STM, packets, structures, worker loop.", -1, NULL};

PyMODINIT_FUNC PyInit__core(void) {
    PyObject *m = PyModule_Create(&core_module);
    if (!m) return NULL;
    if (add_methods(m, stm_methods) < 0 || add_methods(m, packet_methods) < 0 ||
        add_methods(m, loop_methods) < 0 || add_methods(m, misc_methods) < 0 || add_methods(m, live_methods) < 0)
        goto fail;
    TransactionAborted = PyErr_NewExceptionWithDoc(
        "nfos.TransactionAborted",
        "Raised inside a handler when its transaction conflicts; the runtime retries it.  "
        "It derives from BaseException so that `except Exception` in NF code does not catch it.",
        PyExc_BaseException, NULL);
    TableFull = PyErr_NewExceptionWithDoc("nfos.TableFull", "A fixed-capacity table is full.", PyExc_Exception,
                                          NULL);
    if (!TransactionAborted || !TableFull) goto fail;
    PyModule_AddObjectRef(m, "TransactionAborted", TransactionAborted);
    PyModule_AddObjectRef(m, "TableFull", TableFull);
    if (record_types_init(m) < 0 || packet_types_init(m) < 0 || structures_init(m) < 0 ||
        map_init_module(m) < 0 || allocator_init_module(m) < 0)
        goto fail;
    if (tx_init() < 0) goto fail;
    PyModule_AddIntConstant(m, "TX_DIRECT", TX_DIRECT);
    PyModule_AddIntConstant(m, "TX_STM", TX_STM);
    PyModule_AddIntConstant(m, "TX_UNLOGGED", TX_UNLOGGED);
    PyModule_AddIntConstant(m, "BATCH_MAX", NFOS_BATCH_MAX);
    PyModule_AddIntConstant(m, "MAX_KEY", NFOS_MAX_KEY);
    static const char *kinds[] = {"K_U8", "K_U16", "K_U32", "K_U64", "K_I8", "K_I16",
                                  "K_I32", "K_I64", "K_F64", "K_BOOL", "K_BYTES"};
    for (int i = 0; i <= K_BYTES; i++) PyModule_AddIntConstant(m, kinds[i], i);
    static const char *kf[] = {"KF_ETH_SRC", "KF_ETH_DST", "KF_IP_SRC", "KF_IP_DST", "KF_PROTO", "KF_SPORT", "KF_DPORT"};
    for (int i = 0; i < KF_NFIELDS; i++) PyModule_AddIntConstant(m, kf[i], i);
    PyObject *causes = PyTuple_New(ABORT_NCAUSES);
    for (int i = 0; i < ABORT_NCAUSES; i++) PyTuple_SET_ITEM(causes, i, PyUnicode_FromString(abort_cause_names[i]));
    PyModule_AddObject(m, "ABORT_CAUSES", causes);
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
