/*
 * welford.h - running mean / sum of squared deviations (Welford) and the parallel merge
 * of two such summaries (Chan et al.), shared by var, std and the statistics kinds.
 * 24 bytes, all-zero = empty.
 */
#ifndef BEAVA_OPS_WELFORD_H
#define BEAVA_OPS_WELFORD_H

#include "counter.h"
#include <stdbool.h>
#include <stdint.h>
#include "codec.h"

typedef struct welford {
    int64_t n;
    double mean, m2;
} welford;

static inline void welford_add(welford *s, double x) {
    cnt_inc(&s->n);
    double d = x - s->mean;
    s->mean += d / (double)s->n;
    s->m2 += d * (x - s->mean);
}

static inline void welford_merge(welford *a, const welford *b) {
    if (b->n == 0) return;
    if (a->n == 0) { *a = *b; return; }
    double na = (double)a->n, nb = (double)b->n, n = na + nb;
    double d = b->mean - a->mean;
    a->mean += d * nb / n;
    a->m2 += b->m2 + d * d * na * nb / n;
    a->n = cnt_add(a->n, b->n);
}

/* Sample (n-1) variance; false when n < 2. */
static inline bool welford_var(const welford *s, double *out) {
    if (s->n < 2) return false;
    *out = s->m2 / (double)(s->n - 1);
    return true;
}

static inline void welford_encode(bv_buf *out, const welford *s) {
    cod_put_i64(out, s->n);
    cod_put_f64(out, s->mean);
    cod_put_f64(out, s->m2);
}

static inline int welford_decode(const uint8_t **p, const uint8_t *end, welford *s) {
    welford t;
    if (cod_get_i64(p, end, &t.n) < 0 || cod_get_f64(p, end, &t.mean) < 0 ||
        cod_get_f64(p, end, &t.m2) < 0 || t.n < 0)
        return -1;
    *s = t;
    return 0;
}

#endif
