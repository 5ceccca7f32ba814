/*
 * sumn.h - (sum, n) state shared by `sum` and `mean`: numeric values (I64 as f64) are
 * added; n counts the contributing values. 16 bytes, all-zero = empty.
 */
#ifndef BEAVA_OPS_SUMN_H
#define BEAVA_OPS_SUMN_H

#include "counter.h"
#include "op.h"
#include "codec.h"

typedef struct sumn { double sum; int64_t n; } sumn;

static inline void sumn_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    double x;
    if (!bv_as_f64(in->v, &x)) return;
    sumn *s = st;
    s->sum += x;
    cnt_inc(&s->n);
}

static inline void sumn_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    sumn *d = dst;
    const sumn *s = src;
    d->sum += s->sum;
    d->n = cnt_add(d->n, s->n);
}

static inline void sumn_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const sumn *s = st;
    cod_put_f64(out, s->sum);
    cod_put_i64(out, s->n);
}

static inline int sumn_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    sumn t;
    if (cod_get_f64(p, end, &t.sum) < 0 || cod_get_i64(p, end, &t.n) < 0 || t.n < 0) return -1;
    *(sumn *)st = t;
    return 0;
}

#endif
