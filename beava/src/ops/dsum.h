/*
 * dsum.h - forward-decayed total shared by decayed_sum and decayed_count
 * (reference-pipelines.md §2.4): the first contribution seeds the total; later
 * total = total e^(-lambda max(dt, 0)) + x and last_t = max(last_t, now). No decay at
 * query time. 24 bytes.
 */
#ifndef BEAVA_OPS_DSUM_H
#define BEAVA_OPS_DSUM_H

#include "decay.h"

typedef struct dsum_st {
    double total;
    int64_t last_t;
    int64_t seeded;
} dsum_st;

static inline void dsum_add(const feature *f, dsum_st *s, double x, int64_t now) {
    if (!s->seeded) { s->total = x; s->last_t = now; s->seeded = 1; return; }
    s->total = s->total * decay_factor(f, now, s->last_t) + x;
    if (now > s->last_t) s->last_t = now;
}

static inline void dsum_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const dsum_st *s = st;
    if (s->seeded) jsonw_f64(w, s->total); else jsonw_null(w);
}

static inline void dsum_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const dsum_st *s = st;
    cod_put_f64(out, s->total);
    cod_put_i64(out, s->last_t);
    cod_put_u8(out, (uint8_t)s->seeded);
}

static inline int dsum_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    dsum_st t;
    uint8_t seeded;
    if (cod_get_f64(p, end, &t.total) < 0 || cod_get_i64(p, end, &t.last_t) < 0 ||
        cod_get_u8(p, end, &seeded) < 0 || seeded > 1)
        return -1;
    t.seeded = seeded;
    *(dsum_st *)st = t;
    return 0;
}

#endif
