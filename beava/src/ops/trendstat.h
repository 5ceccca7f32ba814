/*
 * trendstat.h - the least-squares line of value over arrival time shared by `trend`
 * and `trend_residual` (reference-pipelines.md §2.4).
 *
 * The reference keeps raw sums (n, Sx, Sy, Sxx, Sxy) over x = now_ms and computes
 * slope = (n*Sxy - Sx*Sy) / (n*Sxx - Sx^2), which cancels catastrophically with epoch-ms
 * abscissae (x ~ 1.7e12, x^2 ~ 3e24: the difference of two such numbers keeps almost no
 * significant digits). We keep the same line in a well-conditioned form: x is taken
 * relative to t0, the arrival of the first point (exact in a double), and the summary is
 * Welford's co-moments (n, mean_x, mean_y, Cxx, Cxy); slope = Cxy / Cxx is the same
 * quantity (n*Sxy - Sx*Sy = n*Cxy, n*Sxx - Sx^2 = n*Cxx, both shift-invariant), null
 * when n < 2 or all x are equal (Cxx = 0, the reference's zero denominator).
 * Intercept and residual are evaluated in the same shifted frame, which does not
 * change them: residual = y - (mean_y + slope * (x - mean_x)).
 *
 * Two summaries merge with the Chan formulas after moving one to the other's origin,
 * which lets both kinds use the framework's 64-sub-bucket windows (DECISIONS §4: the
 * reference accepted `window` and ignored it; we honour it).
 *
 * 48 bytes, all-zero = empty (n == 0).
 */
#ifndef BEAVA_OPS_TRENDSTAT_H
#define BEAVA_OPS_TRENDSTAT_H

#include "counter.h"
#include <stdbool.h>
#include "op.h"
#include "codec.h"

typedef struct trendstat {
    int64_t n;
    int64_t t0;               /* origin of x: arrival of the first point */
    double mx, my;            /* means of x - t0 and of y */
    double cxx, cxy;          /* co-moments */
} trendstat;

static inline void trendstat_add(trendstat *s, int64_t t, double y) {
    if (s->n == 0) s->t0 = t;
    double x = (double)t - (double)s->t0;
    cnt_inc(&s->n);
    double dx = x - s->mx;
    s->mx += dx / (double)s->n;
    s->my += (y - s->my) / (double)s->n;
    s->cxx += dx * (x - s->mx);
    s->cxy += dx * (y - s->my);
}

static inline void trendstat_merge(trendstat *a, const trendstat *b) {
    if (b->n == 0) return;
    if (a->n == 0) {
        *a = *b;
        return;
    }
    double na = (double)a->n, nb = (double)b->n, n = na + nb;
    double dx = (b->mx + ((double)b->t0 - (double)a->t0)) - a->mx;
    double dy = b->my - a->my;
    a->mx += dx * nb / n;
    a->my += dy * nb / n;
    a->cxx += b->cxx + dx * dx * na * nb / n;
    a->cxy += b->cxy + dx * dy * na * nb / n;
    a->n = cnt_add(a->n, b->n);
}

/* OLS slope per ms; false when undefined (n < 2 or every x equal). */
static inline bool trendstat_slope(const trendstat *s, double *slope) {
    if (s->n < 2 || !(s->cxx > 0)) return false;
    *slope = s->cxy / s->cxx;
    return true;
}

/* y minus the fitted line at arrival t. */
static inline double trendstat_residual(const trendstat *s, double slope, int64_t t, double y) {
    double x = (double)t - (double)s->t0;
    return y - (s->my + slope * (x - s->mx));
}

static inline void trendstat_encode(bv_buf *out, const trendstat *s) {
    cod_put_i64(out, s->n);
    cod_put_i64(out, s->t0);
    cod_put_f64(out, s->mx);
    cod_put_f64(out, s->my);
    cod_put_f64(out, s->cxx);
    cod_put_f64(out, s->cxy);
}

static inline int trendstat_decode(const uint8_t **p, const uint8_t *end, trendstat *s) {
    trendstat t;
    if (cod_get_i64(p, end, &t.n) < 0 || cod_get_i64(p, end, &t.t0) < 0 ||
        cod_get_f64(p, end, &t.mx) < 0 || cod_get_f64(p, end, &t.my) < 0 ||
        cod_get_f64(p, end, &t.cxx) < 0 || cod_get_f64(p, end, &t.cxy) < 0 || t.n < 0)
        return -1;
    *s = t;
    return 0;
}

#endif
