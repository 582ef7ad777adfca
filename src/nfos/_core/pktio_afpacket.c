/* Live packet I/O on Linux interfaces: AF_PACKET sockets with PACKET_MMAP
 * TPACKET_V3 RX rings, one per (worker, device), joined in a PACKET_FANOUT
 * group per device whose classic-BPF program is compiled from the packet-set
 * definition (nfos/io/bpf.py), so the kernel steers like software RSS.
 *
 * (Being written: until then live mode reports that it is unavailable.)
 */
#include "nfos_core.h"

PyObject *live_run(long long budget) {
    (void)budget;
    PyErr_SetString(PyExc_NotImplementedError, "live interfaces are not available in this build");
    return NULL;
}

void live_tx(const uint8_t *frame, uint32_t len, uint32_t devmask, uint32_t indev) {
    (void)frame; (void)len; (void)devmask; (void)indev;
}

void live_tx_flush(void) {}

PyMethodDef live_methods[] = {{NULL, NULL, 0, NULL}};
