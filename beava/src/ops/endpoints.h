/*
 * endpoints.h - the first and last (time, value) points of a numeric stream, shared by
 * the kinds whose per-bucket state is "what happened between consecutive points" (twa,
 * rate_of_change). A bucket keeps its own first and last point so that merging buckets
 * oldest first can account for the step from one bucket's last point to the next
 * bucket's first. All-zero is empty (n == 0); layout and encoding are five fixed fields.
 */
#ifndef BEAVA_OPS_ENDPOINTS_H
#define BEAVA_OPS_ENDPOINTS_H

#include "counter.h"
#include <stdbool.h>
#include <stdint.h>
#include "codec.h"

typedef struct endpoints {
    int64_t n;                /* values seen */
    int64_t first_t, last_t;
    double first_v, last_v;
} endpoints;

/* Add (t, x). For every point but the first, returns true with the previous value and
 * the gap t - previous t; the point then becomes the last one. */
static inline bool endpoints_add(endpoints *e, int64_t t, double x, double *prev_v, double *dt) {
    bool had = cnt_inc(&e->n) > 0;
    if (had) {
        *prev_v = e->last_v;
        *dt = (double)t - (double)e->last_t;
    } else {
        e->first_v = x;
        e->first_t = t;
    }
    e->last_v = x;
    e->last_t = t;
    return had;
}

/* Append bucket s after bucket d. Returns false when there is no step to account for
 * (s empty: nothing changes; d empty: the caller copies its whole state from s).
 * Otherwise returns true with d's last value and the gap to s's first point, and d's
 * endpoints now end where s ends. */
static inline bool endpoints_join(endpoints *d, const endpoints *s, double *d_last_v, double *dt) {
    if (s->n == 0 || d->n == 0) return false;
    *d_last_v = d->last_v;
    *dt = (double)s->first_t - (double)d->last_t;
    d->last_v = s->last_v;
    d->last_t = s->last_t;
    d->n = cnt_add(d->n, s->n);
    return true;
}

static inline void endpoints_encode(const endpoints *e, bv_buf *out) {
    cod_put_i64(out, e->n);
    cod_put_i64(out, e->first_t);
    cod_put_i64(out, e->last_t);
    cod_put_f64(out, e->first_v);
    cod_put_f64(out, e->last_v);
}

static inline int endpoints_decode(endpoints *e, const uint8_t **p, const uint8_t *end) {
    if (cod_get_i64(p, end, &e->n) < 0 || cod_get_i64(p, end, &e->first_t) < 0 ||
        cod_get_i64(p, end, &e->last_t) < 0 || cod_get_f64(p, end, &e->first_v) < 0 ||
        cod_get_f64(p, end, &e->last_v) < 0 || e->n < 0)
        return -1;
    return 0;
}

#endif
