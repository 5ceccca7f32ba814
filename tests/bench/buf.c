/*
 * buf.c - growable byte buffer (see buf.h). Growth doubles the capacity, so appends
 * are amortised O(1); the buffer never shrinks until bbuf_free.
 */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(void) {
    fputs("beava-bench: out of memory\n", stderr);
    abort();
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom();
    return p;
}

char *xstrdup(const char *s) {
    char *p = strdup(s);
    if (!p) oom();
    return p;
}

void bbuf_init(bbuf *b) {
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void bbuf_free(bbuf *b) {
    free(b->data);
    bbuf_init(b);
}

char *bbuf_reserve(bbuf *b, size_t extra) {
    if (b->len + extra + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + extra + 1) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) oom();
        b->data = p;
        b->cap = cap;
    }
    return b->data + b->len;
}

void bbuf_put(bbuf *b, const void *p, size_t n) {
    char *d = bbuf_reserve(b, n);
    if (n) memcpy(d, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void bbuf_putc(bbuf *b, char c) {
    char *d = bbuf_reserve(b, 1);
    d[0] = c;
    b->len++;
    b->data[b->len] = '\0';
}

void bbuf_puts(bbuf *b, const char *s) {
    bbuf_put(b, s, strlen(s));
}

void bbuf_printf(bbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n < sizeof tmp) {
        bbuf_put(b, tmp, (size_t)n);
    } else {
        char *d = bbuf_reserve(b, (size_t)n);
        vsnprintf(d, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void bbuf_consume(bbuf *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data) b->data[b->len] = '\0';
}

void bbuf_reset(bbuf *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}
