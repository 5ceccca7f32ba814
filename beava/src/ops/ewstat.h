/*
 * ewstat.h - exponentially weighted mean / variance state shared by `ewvar` and
 * `ew_zscore` (reference-pipelines.md §2.4): both keep {EW mean, m2, last value,
 * last_t} with one update rule and differ only in what they read.
 *
 * lambda = ln2 / half_life_ms. The first value seeds mean = x, m2 = 0, last_t = now.
 * Later alpha = 1 - e^(-lambda*(now - last_t)) when now > last_t, else 0 (same ms or
 * clock regression: the value still becomes last_value but moves nothing);
 * d = x - mean; mean += alpha*d; m2 = (1-alpha)*m2 + alpha*d*(x - mean); last_t
 * advances only when alpha > 0.
 *
 * 40 bytes, all-zero = empty (n == 0). Times are subtracted as doubles so that a
 * decoded extreme last_t cannot overflow int64 arithmetic.
 */
#ifndef BEAVA_OPS_EWSTAT_H
#define BEAVA_OPS_EWSTAT_H

#include "counter.h"
#include <math.h>
#include "op.h"
#include "codec.h"

typedef struct ewstat {
    double mean, m2, last_value;
    int64_t last_t;
    int64_t n;                /* values seen */
} ewstat;

static inline void ewstat_update(const feature *f, void *st, const op_input *in) {
    ewstat *s = st;
    double x;
    if (!bv_as_f64(in->v, &x)) return;
    if (cnt_inc(&s->n) == 0) {
        s->mean = x;
        s->m2 = 0;
        s->last_t = in->now_ms;
        s->last_value = x;
        return;
    }
    double dt = (double)in->now_ms - (double)s->last_t;
    double alpha = dt > 0 ? 1.0 - exp(-(M_LN2 / (double)f->p.half_life_ms) * dt) : 0.0;
    double d = x - s->mean;
    s->mean += alpha * d;
    s->m2 = (1.0 - alpha) * s->m2 + alpha * d * (x - s->mean);
    if (alpha > 0) s->last_t = in->now_ms;
    s->last_value = x;
}

static inline void ewstat_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const ewstat *s = st;
    cod_put_i64(out, s->n);
    cod_put_f64(out, s->mean);
    cod_put_f64(out, s->m2);
    cod_put_f64(out, s->last_value);
    cod_put_i64(out, s->last_t);
}

static inline int ewstat_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    ewstat t;
    if (cod_get_i64(p, end, &t.n) < 0 || cod_get_f64(p, end, &t.mean) < 0 ||
        cod_get_f64(p, end, &t.m2) < 0 || cod_get_f64(p, end, &t.last_value) < 0 ||
        cod_get_i64(p, end, &t.last_t) < 0 || t.n < 0)
        return -1;
    *(ewstat *)st = t;
    return 0;
}

#endif
