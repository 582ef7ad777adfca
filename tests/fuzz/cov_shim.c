/* LD_PRELOADed before the ASan runtime when the fuzzers run under gcc's ASan
 * (run_fuzz.py --asan).  gcc's libasan defines the SanitizerCoverage hooks as
 * weak no-ops; preloaded first, it would take the calls that atheris's Python
 * instrumentation makes to its own libFuzzer (counters, comparisons), and the
 * fuzzer would run blind.  These strong definitions come first and forward
 * each call to the definition inside atheris's libFuzzer. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>

typedef void (*hook_fn)(uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t);

static void *fuzzer;
static __thread int busy;   /* resolving: libc calls below reach the weak hooks again */

static int contains(const char *s, const char *part) {   /* not strstr: ASan hooks it */
    for (; *s; s++) {
        const char *a = s, *b = part;
        while (*a && *b && *a == *b) a++, b++;
        if (!*b) return 1;
    }
    return 0;
}

static int find(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    if (info->dlpi_name && contains(info->dlpi_name, "atheris/core_with_libfuzzer")) {
        *(void **)data = dlopen(info->dlpi_name, RTLD_NOW | RTLD_NOLOAD);
        return 1;
    }
    return 0;
}

static hook_fn resolve(const char *name) {
    if (busy) return 0;
    busy = 1;
    if (!fuzzer) dl_iterate_phdr(find, &fuzzer);
    hook_fn fn = fuzzer ? (hook_fn)dlsym(fuzzer, name) : 0;
    busy = 0;
    return fn;
}

#define HOOK(name)                                                                           \
    void name(uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, uintptr_t e, uintptr_t f) { \
        static hook_fn fn;                                                                   \
        if (!fn) fn = resolve(#name);                                                        \
        if (fn) fn(a, b, c, d, e, f);                                                        \
    }

HOOK(__sanitizer_cov_8bit_counters_init)
HOOK(__sanitizer_cov_pcs_init)
HOOK(__sanitizer_cov_trace_cmp1)
HOOK(__sanitizer_cov_trace_cmp2)
HOOK(__sanitizer_cov_trace_cmp4)
HOOK(__sanitizer_cov_trace_cmp8)
HOOK(__sanitizer_cov_trace_const_cmp1)
HOOK(__sanitizer_cov_trace_const_cmp2)
HOOK(__sanitizer_cov_trace_const_cmp4)
HOOK(__sanitizer_cov_trace_const_cmp8)
HOOK(__sanitizer_cov_trace_div4)
HOOK(__sanitizer_cov_trace_div8)
HOOK(__sanitizer_cov_trace_gep)
HOOK(__sanitizer_cov_trace_switch)
HOOK(__sanitizer_weak_hook_memcmp)
HOOK(__sanitizer_weak_hook_strcmp)
HOOK(__sanitizer_weak_hook_strncmp)
HOOK(__sanitizer_weak_hook_strcasecmp)
HOOK(__sanitizer_weak_hook_strncasecmp)
HOOK(__sanitizer_weak_hook_strstr)
HOOK(__sanitizer_weak_hook_strcasestr)
HOOK(__sanitizer_weak_hook_memmem)
