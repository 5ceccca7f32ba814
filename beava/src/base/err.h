/*
 * err.h - the one error record passed out of every fallible beava function.
 *
 * A bv_err carries a wire error code (the wire's snake_case strings,
 * e.g. "invalid_registration"), a path naming where in the input the problem is
 * (e.g. "nodes[2].upstreams[0]", may be empty) and a human reason. Functions that fail
 * fill it with bv_err_set() and return a negative value; callers own the struct
 * (usually on the stack). Nothing in here allocates.
 */
#ifndef BEAVA_ERR_H
#define BEAVA_ERR_H

#include <stdarg.h>
#include <stdio.h>

typedef struct bv_err {
    char code[64];
    char path[256];
    char reason[512];
} bv_err;

static inline void bv_err_clear(bv_err *e) {
    if (e) { e->code[0] = 0; e->path[0] = 0; e->reason[0] = 0; }
}

/* Set code/path and a printf-style reason. Any argument may be NULL (left empty). */
static inline void bv_err_set(bv_err *e, const char *code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline void bv_err_set(bv_err *e, const char *code, const char *path, const char *fmt, ...) {
    if (!e) return;
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    snprintf(e->path, sizeof e->path, "%s", path ? path : "");
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->reason, sizeof e->reason, fmt, ap);
        va_end(ap);
    } else {
        e->reason[0] = 0;
    }
}

#endif
