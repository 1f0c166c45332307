/* lib/core/alloc.c -- every heap allocation of the library, with fault injection.
 *
 * All library code allocates through these wrappers so that tests can make
 * the k-th allocation fail and check that every caller returns
 * DD_ERR_OUT_OF_MEMORY and leaks nothing (the SQLite/libuv OOM-sweep idea).
 * The injection state is thread-local: dd__alloc_fail_after(k) lets the
 * next k allocations on the calling thread succeed and fails every later
 * one until it is called again (-1 disables failures); dd__alloc_count()
 * returns how many allocations succeeded on this thread since the last
 * dd__alloc_fail_after() call, which tells a sweep how far to go.
 * Allocations made by OpenMP workers or inside oneDNN are not counted.
 * Zero-byte requests are rounded up to one byte (or one alignment unit), so
 * NULL always means failure. Large buffers are 64-byte aligned (one cache
 * line, one AVX-512 vector) and zero-filled, so padding channels start at 0.
 */
/* posix_memalign is POSIX.1-2001; the project builds as strict C11. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdlib.h>
#include <string.h>

#include "core.h"

/* Cache-line and AVX-512 register width. */
#define DD_ALIGN 64

static _Thread_local long dd_fail_after = -1;
static _Thread_local long dd_alloc_ok;

/* 1 if the next allocation may proceed (and counts it), 0 if it must fail. */
static int dd_alloc_gate(void) {
    if (dd_fail_after >= 0 && dd_alloc_ok >= dd_fail_after) return 0;
    return 1;
}

static void *dd_counted(void *p) {
    if (p != NULL) dd_alloc_ok++;
    return p;
}

void dd__alloc_fail_after(long count) {
    dd_fail_after = count < 0 ? -1 : count;
    dd_alloc_ok = 0;
}

long dd__alloc_count(void) { return dd_alloc_ok; }

void *dd__malloc(size_t bytes) {
    if (!dd_alloc_gate()) return NULL;
    return dd_counted(malloc(bytes != 0 ? bytes : 1));
}

void *dd__calloc(size_t count, size_t size) {
    if (!dd_alloc_gate()) return NULL;
    if (count == 0 || size == 0) count = size = 1;
    return dd_counted(calloc(count, size));
}

void *dd__realloc(void *p, size_t bytes) {
    if (!dd_alloc_gate()) return NULL;
    return dd_counted(realloc(p, bytes != 0 ? bytes : 1));
}

void dd__free(void *p) { free(p); }

void *dd__aligned_alloc(size_t bytes) {
    if (!dd_alloc_gate()) return NULL;
    void *p = NULL;
    if (bytes == 0) bytes = DD_ALIGN;
    if (posix_memalign(&p, DD_ALIGN, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return dd_counted(p);
}

void dd__free_aligned(void *p) { free(p); }

void *dd__alloc_views(const dd__view *views, int n) {
    size_t total = 0, offset[64];
    if (n < 1 || n > 64) return NULL;
    for (int i = 0; i < n; i++) {
        size_t b = (views[i].bytes + DD_ALIGN - 1) / DD_ALIGN * DD_ALIGN;
        if (b < views[i].bytes || total > SIZE_MAX - b) return NULL; /* size_t overflow */
        offset[i] = total;
        total += b;
    }
    char *block = dd__aligned_alloc(total);
    for (int i = 0; i < n; i++) {
        void *p = block ? block + offset[i] : NULL;
        /* the view is a T * object; copying the pointer's bytes (not storing
         * through a void **) keeps the aliasing rules */
        memcpy(views[i].ptr, &p, sizeof p);
    }
    return block;
}

char *dd__strdup(const char *s) {
    if (s == NULL) return NULL;
    size_t len = strlen(s) + 1;
    char *d = dd__malloc(len);
    if (d != NULL) memcpy(d, s, len);
    return d;
}
