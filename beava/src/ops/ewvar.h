/*
 * ewvar.h - exponentially weighted mean / variance state shared by ewvar and ew_zscore
 * (reference-pipelines.md §2.4): the first value seeds mean = x, m2 = 0; then alpha as
 * in decay.h (0 when dt <= 0), d = x - mean, mean += alpha d,
 * m2 = (1 - alpha) m2 + alpha d (x - mean'), last_t advances only when alpha > 0,
 * last value = x. 40 bytes.
 */
#ifndef BEAVA_OPS_EWVAR_H
#define BEAVA_OPS_EWVAR_H

#include "decay.h"

typedef struct ewvar_st {
    double mean, m2, last_value;
    int64_t last_t;
    int64_t seeded;
} ewvar_st;

static inline void ewvar_update(const feature *f, void *st, const op_input *in) {
    ewvar_st *s = st;
    double x;
    if (!bv_as_f64(in->v, &x)) return;
    if (!s->seeded) {
        s->mean = x; s->m2 = 0; s->last_t = in->now_ms; s->last_value = x; s->seeded = 1;
        return;
    }
    double a = decay_alpha(f, in->now_ms, s->last_t);
    double d = x - s->mean, mean = s->mean + a * d;
    s->m2 = (1 - a) * s->m2 + a * d * (x - mean);
    s->mean = mean;
    if (a > 0) s->last_t = in->now_ms;
    s->last_value = x;
}

static inline void ewvar_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const ewvar_st *s = st;
    cod_put_f64(out, s->mean);
    cod_put_f64(out, s->m2);
    cod_put_f64(out, s->last_value);
    cod_put_i64(out, s->last_t);
    cod_put_u8(out, (uint8_t)s->seeded);
}

static inline int ewvar_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    ewvar_st t;
    uint8_t seeded;
    if (cod_get_f64(p, end, &t.mean) < 0 || cod_get_f64(p, end, &t.m2) < 0 ||
        cod_get_f64(p, end, &t.last_value) < 0 || cod_get_i64(p, end, &t.last_t) < 0 ||
        cod_get_u8(p, end, &seeded) < 0 || seeded > 1)
        return -1;
    t.seeded = seeded;
    *(ewvar_st *)st = t;
    return 0;
}

#endif
