/* nfos._core: PyInit only.  The layers and what lives where: layers.txt and
 * docs/architecture.md.  Every constant below comes from a list. */
#include "bind.h"

static struct PyModuleDef core_module = {PyModuleDef_HEAD_INIT, "nfos._core",
                                         "nfos C core: STM, packets, structures, worker loop.", -1, NULL};

static PyObject *abort_causes(void) {
    PyObject *t = PyTuple_New(ABORT_NCAUSES);
    for (int i = 0; t && i < ABORT_NCAUSES; i++) {
        PyObject *e = Py_BuildValue("(ss)", abort_cause_names[i], abort_cause_docs[i]);
        if (!e) Py_CLEAR(t);
        else PyTuple_SET_ITEM(t, i, e);
    }
    return t;
}

static PyObject *handlers(void) {
    PyObject *t = PyTuple_New(HANDLER_NKINDS);
    for (int i = 0; t && i < HANDLER_NKINDS; i++) {
        PyObject *e = Py_BuildValue("(ss)", handler_names[i], handler_docs[i]);
        if (!e) Py_CLEAR(t);
        else PyTuple_SET_ITEM(t, i, e);
    }
    return t;
}

static PyObject *operations(void) {
    PyObject *t = PyTuple_New(OPC_NCODES);
    for (int i = 0; t && i < OPC_NCODES; i++) {
        PyObject *e = Py_BuildValue("(sss)", op_code_kinds[i], op_code_names[i],
                                    op_code_writes[i] == OP_WRITE ? "write" : "read");
        if (!e) Py_CLEAR(t);
        else PyTuple_SET_ITEM(t, i, e);
    }
    return t;
}

static PyObject *counters(void) {
    PyObject *t = PyTuple_New(NCOUNTERS);
    for (int i = 0; t && i < NCOUNTERS; i++) {
        const CounterInfo *c = &counter_table[i];
        PyObject *e = Py_BuildValue("(sIss)", c->name, c->length, counter_aggregation_names[c->aggregation], c->doc);
        if (!e) Py_CLEAR(t);
        else PyTuple_SET_ITEM(t, i, e);
    }
    return t;
}

/* {"per_worker": {name: alias}, "prometheus": {...}, "line": {...}}: the names existing
 * tests pin where they differ from the counter's name (counters.def's alias columns). */
static PyObject *counter_aliases(void) {
    static const char *const kinds[3] = {"per_worker", "prometheus", "line"};
    PyObject *out = PyDict_New();
    for (int k = 0; out && k < 3; k++) {
        PyObject *d = PyDict_New();
        for (int i = 0; d && i < NCOUNTERS; i++) {
            const CounterInfo *c = &counter_table[i];
            const char *alias = k == 0 ? c->row : k == 1 ? c->prometheus : c->line;
            if (!alias[0]) continue;
            PyObject *a = PyUnicode_FromString(alias);
            if (!a || PyDict_SetItemString(d, c->name, a) < 0) Py_CLEAR(d);
            Py_XDECREF(a);
        }
        if (!d || PyDict_SetItemString(out, kinds[k], d) < 0) Py_CLEAR(out);
        Py_XDECREF(d);
    }
    return out;
}

static int add_tuple(PyObject *m, const char *name, PyObject *v) {
    if (!v) return -1;
    int r = PyModule_AddObjectRef(m, name, v);
    Py_DECREF(v);
    return r;
}

PyMODINIT_FUNC PyInit__core(void) {
    PyObject *m = PyModule_Create(&core_module);
    if (!m) return NULL;
    PyMethodDef *tables[] = {bind_control_methods, bind_feed_methods, bind_output_methods,
                             bind_nf_methods,      bind_stats_methods, bind_live_methods};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        if (PyModule_AddFunctions(m, tables[i]) < 0) goto fail;
    if (proc_init(m) < 0 || record_types_init(m) < 0 || packet_types_init(m) < 0 || loop_init() < 0) goto fail;
#define STRUCTURE(name) \
    if (name##_module_init(m) < 0) goto fail;
#include "structures.def"
#undef STRUCTURE
    profile_init();
    if (PyModule_AddIntConstant(m, "TX_DIRECT", TX_DIRECT) < 0 || PyModule_AddIntConstant(m, "TX_STM", TX_STM) < 0 ||
        PyModule_AddIntConstant(m, "TX_UNLOGGED", TX_UNLOGGED) < 0 ||
        PyModule_AddIntConstant(m, "BATCH_MAX", NFOS_BATCH_MAX) < 0 ||
        PyModule_AddIntConstant(m, "COMMIT_REC_SIZE", (long)sizeof(CommitRec)) < 0 ||
        PyModule_AddIntConstant(m, "MAX_KEY", NFOS_MAX_KEY) < 0)
        goto fail;
    /* the heartbeat code of each handler kind (worker_loop.h: HB_CODE), for the watchdog's names */
#define HANDLER(E, name, doc) \
    if (PyModule_AddIntConstant(m, "H_" #E, (long)HB_CODE(HANDLER_CTX(HANDLER_##E, 0))) < 0) goto fail;
#include "handlers.def"
#undef HANDLER
#define ADD_KIND(k) \
    if (PyModule_AddIntConstant(m, "K_" #k, K_##k) < 0) goto fail;
    NFOS_FIELD_KINDS(ADD_KIND)
#undef ADD_KIND
#define ADD_KEY_FIELD(f) \
    if (PyModule_AddIntConstant(m, "KF_" #f, KF_##f) < 0) goto fail;
    NFOS_KEY_FIELDS(ADD_KEY_FIELD)
#undef ADD_KEY_FIELD
    if (add_tuple(m, "ABORT_CAUSES", abort_causes()) < 0 || add_tuple(m, "OPERATIONS", operations()) < 0 ||
        add_tuple(m, "HANDLERS", handlers()) < 0 ||
        add_tuple(m, "COUNTERS", counters()) < 0 || add_tuple(m, "COUNTER_ALIASES", counter_aliases()) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
