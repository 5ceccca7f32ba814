/*
 * buf.h - growable byte buffer used by every bench module.
 *
 * A bbuf owns its bytes (data is NUL-terminated after every append so it can be
 * printed). Allocation failure aborts the process: beava-bench is a measuring tool
 * and has nothing sensible to do without memory.
 */
#ifndef BENCH_BUF_H
#define BENCH_BUF_H

#include <stddef.h>

typedef struct bbuf {
    char *data;
    size_t len;
    size_t cap;
} bbuf;

void bbuf_init(bbuf *b);
void bbuf_free(bbuf *b);
/* Make room for `extra` more bytes past len; returns data + len. */
char *bbuf_reserve(bbuf *b, size_t extra);
void bbuf_put(bbuf *b, const void *p, size_t n);
void bbuf_putc(bbuf *b, char c);
void bbuf_puts(bbuf *b, const char *s);
void bbuf_printf(bbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes. */
void bbuf_consume(bbuf *b, size_t n);
void bbuf_reset(bbuf *b);

/* Abort-on-failure allocation helpers. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);

#endif
