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

static inline char *bv_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = bv_xrealloc(NULL, n);
    memcpy(d, s, n);
    return d;
}

#endif
