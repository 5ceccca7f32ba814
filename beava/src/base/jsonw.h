/*
 * jsonw.h - a growable byte buffer and a JSON writer on top of it.
 *
 * Every JSON body beava emits goes through here so that numbers are formatted one way:
 * integers in decimal, f64 in the shortest form that reads back to the same double with
 * ".0" kept on integral values and ryu's exponent rules (1e16, 1.5e-7), NaN/Inf as null
 * (the wire contract). The writer does not sort keys itself: callers emit keys in
 * ascending byte order (the wire contract), which jsonw_json() does for jansson values.
 *
 * Ownership: a bv_buf owns its bytes; bv_buf_free() releases them, bv_buf_steal() hands
 * them to the caller (NUL-terminated, free with free()). Allocation failure aborts: every
 * buffer is bounded by the request caps, so an OOM here is not a recoverable condition.
 */
#ifndef BEAVA_JSONW_H
#define BEAVA_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <jansson.h>
#include "value.h"

typedef struct bv_buf {
    char *data;
    size_t len, cap;
} bv_buf;

void bv_buf_init(bv_buf *b);
void bv_buf_free(bv_buf *b);
void bv_buf_reserve(bv_buf *b, size_t extra);
/* Append n bytes (the data stays NUL-terminated). Inline: the codecs and writers append a
 * few constant-size bytes at a time, and with room in the buffer that is one store. */
static inline void bv_buf_put(bv_buf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) bv_buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}
void bv_buf_puts(bv_buf *b, const char *s);
static inline void bv_buf_putc(bv_buf *b, char c) { bv_buf_put(b, &c, 1); }
void bv_buf_printf(bv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *bv_buf_steal(bv_buf *b);          /* NUL-terminated; buffer is reset */
void bv_buf_put_u64(bv_buf *b, uint64_t v);   /* decimal */
/* v in decimal ("%lld", no NUL) into buf, which holds BV_I64_TEXT_MAX bytes; returns the
 * length. For integers on hot paths (acks, rows, integer categories), without printf. */
#define BV_I64_TEXT_MAX 20                    /* "-9223372036854775808" */
size_t bv_fmt_i64(int64_t v, char *buf);

/* Format a double the way the wire wants it (shortest round trip, ".0" kept, ryu exponent
 * style). Non-finite values produce "null". Returns the length written (buf >= 32 bytes). */
int bv_fmt_f64(double v, char *buf);

/* Writer: tracks whether a comma is needed at each nesting level. */
#define JSONW_MAX_DEPTH 64
typedef struct jsonw {
    bv_buf *out;
    int depth;
    bool need_comma[JSONW_MAX_DEPTH];
} jsonw;

void jsonw_init(jsonw *w, bv_buf *out);
void jsonw_obj_begin(jsonw *w);
void jsonw_obj_end(jsonw *w);
void jsonw_arr_begin(jsonw *w);
void jsonw_arr_end(jsonw *w);
void jsonw_key(jsonw *w, const char *key);                /* inside an object */
void jsonw_keyn(jsonw *w, const char *key, size_t n);
void jsonw_str(jsonw *w, const char *s);
void jsonw_strn(jsonw *w, const char *s, size_t n);
void jsonw_i64(jsonw *w, int64_t v);
void jsonw_u64(jsonw *w, uint64_t v);
void jsonw_f64(jsonw *w, double v);
void jsonw_bool(jsonw *w, bool v);
void jsonw_null(jsonw *w);
void jsonw_raw(jsonw *w, const char *json, size_t n);    /* a pre-rendered value */
void jsonw_value(jsonw *w, const bv_value *v);           /* BV_JSON via jsonw_json */
/* A jansson value with object keys sorted ascending, reals via bv_fmt_f64. */
void jsonw_json(jsonw *w, const json_t *j);

/* Append a JSON string literal (quoted, escaped) to a buffer. */
void bv_buf_json_str(bv_buf *b, const char *s, size_t n);


/* The error envelope, the one writer every listener and module answers with:
 *   {"error":{"code":CODE, members...}[,"registry_version":V]}
 * A member is a string (str), a number (str == NULL, raw == NULL: num) or pre-rendered
 * JSON (raw). Members are written in the order given: callers pass keys in ascending
 * byte order (the wire contract), except where a body is pinned byte for byte. */
typedef struct jsonw_member {
    const char *key;
    const char *str;
    const char *raw;
    long long num;
} jsonw_member;

void jsonw_error(bv_buf *out, const char *code, const jsonw_member *m, size_t n, bool with_version,
                 uint64_t version);

#endif
