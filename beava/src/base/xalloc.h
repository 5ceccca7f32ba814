/*
 * xalloc.h - allocation that cannot fail: on out-of-memory the process prints
 * "beava: out of memory" and aborts. For the cold paths (register, compile, snapshot
 * decode) and small per-entity structures, where unwinding a half-built object on OOM
 * buys nothing. Hot-path allocators that can answer an error keep calling malloc.
 */
#ifndef BEAVA_XALLOC_H
#define BEAVA_XALLOC_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void bv_oom(void) {
    fputs("beava: out of memory\n", stderr);
    abort();
}

/* realloc(p, n), n == 0 treated as 1 (never NULL). */
static inline void *bv_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) bv_oom();
    return q;
}

/* Zeroed n * sz bytes (n or sz 0 treated as 1). */
static inline void *bv_xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) bv_oom();
    return p;
}

/* Page size assumed by bv_xcalloc_written: a smaller stride than the real page size
 * would only write some pages twice. */
#define BV_TOUCH_STRIDE 4096

/* Like bv_xcalloc, and every page of the block written once now. A large calloc from
 * fresh heap leaves its pages unmapped; a sketch that reads a cell before writing it
 * (count-min, HLL registers, hash tables, bloom bits) would then fault the shared zero
 * page in on the read and copy it on the write, and that copy flushes the TLB of every
 * CPU running another thread of the process (an IPI each). Writing first takes one
 * fault per page and no flush. */
static inline void *bv_xcalloc_written(size_t n, size_t sz) {
    volatile char *p = bv_xcalloc(n, sz);
    size_t len = (n ? n : 1) * (sz ? sz : 1);
    for (size_t off = 0; off < len; off += BV_TOUCH_STRIDE) p[off] = 0;
    return (void *)p;
}

static inline char *bv_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = bv_xrealloc(NULL, n);
    memcpy(d, s, n);
    return d;
}

#endif
