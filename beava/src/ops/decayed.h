/*
 * decayed.h - the exponentially decayed total shared by `decayed_sum` and
 * `decayed_count` (reference-pipelines.md §2.4; DECISIONS §4 "decay applied at read
 * time").
 *
 * lambda = ln2 / half_life_ms. The first contribution seeds total = x, last_t = now;
 * later total = total * e^(-lambda * max(now - last_t, 0)) + x and last_t = max(last_t,
 * now) (the reference's update; keeping the later time on a clock regression keeps
 * "total as of last_t" true). A read at q reports total * e^(-lambda * max(q - last_t,
 * 0)): the amount decays between events too, where the reference froze it at the last
 * event. Empty (nothing contributed) reads null.
 *
 * 24 bytes, all-zero = empty (n == 0).
 */
#ifndef BEAVA_OPS_DECAYED_H
#define BEAVA_OPS_DECAYED_H

#include "counter.h"
#include <math.h>
#include "op.h"
#include "codec.h"

typedef struct decayed {
    double total;
    int64_t last_t;
    int64_t n;                /* contributions seen */
} decayed;

static inline double decayed_lambda(const feature *f) {
    return M_LN2 / (double)f->p.half_life_ms;
}

static inline void decayed_add(const feature *f, decayed *s, double x, int64_t now) {
    if (cnt_inc(&s->n) == 0) {
        s->total = x;
        s->last_t = now;
        return;
    }
    double dt = (double)now - (double)s->last_t;
    s->total = s->total * exp(-decayed_lambda(f) * (dt > 0 ? dt : 0.0)) + x;
    if (now > s->last_t) s->last_t = now;
}

static inline void decayed_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    const decayed *s = st;
    if (!s->n) {
        jsonw_null(w);
        return;
    }
    double dt = (double)q - (double)s->last_t;
    jsonw_f64(w, s->total * exp(-decayed_lambda(f) * (dt > 0 ? dt : 0.0)));
}

static inline void decayed_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const decayed *s = st;
    cod_put_i64(out, s->n);
    cod_put_f64(out, s->total);
    cod_put_i64(out, s->last_t);
}

static inline int decayed_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    decayed t;
    if (cod_get_i64(p, end, &t.n) < 0 || cod_get_f64(p, end, &t.total) < 0 ||
        cod_get_i64(p, end, &t.last_t) < 0 || t.n < 0)
        return -1;
    *(decayed *)st = t;
    return 0;
}

#endif
