/*
 * op_trend_residual.c - `trend_residual`: the latest value of `field` minus the
 * least-squares line (over arrival time, trendstat.h) evaluated at its arrival: last_y -
 * (slope*last_t + intercept), intercept = (Sy - slope*Sx)/n. f64; null whenever the slope
 * is (n < 2 or all arrivals in one ms).
 *
 * Window (the reference accepted it and ignored it; we honour it): a real sliding window
 * over the framework's 64 sub-buckets; the line is fitted to the active buckets' events
 * and the latest point is the newest bucket's (buckets merge oldest first).
 *
 * State: 64 bytes (trendstat + latest point), all-zero = empty.
 */
#include "trendstat.h"

typedef struct tres_st {
    trendstat ts;
    double last_y;
    int64_t last_t;
} tres_st;

static void tres_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    tres_st *s = st;
    double y;
    if (!bv_as_f64(in->v, &y)) return;
    trendstat_add(&s->ts, in->now_ms, y);
    s->last_y = y;
    s->last_t = in->now_ms;
}

static void tres_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    tres_st *d = dst;
    const tres_st *s = src;
    if (s->ts.n == 0) return;
    trendstat_merge(&d->ts, &s->ts);
    d->last_y = s->last_y;
    d->last_t = s->last_t;
}

static void tres_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const tres_st *s = st;
    double slope;
    if (trendstat_slope(&s->ts, &slope)) jsonw_f64(w, trendstat_residual(&s->ts, slope, s->last_t, s->last_y));
    else jsonw_null(w);
}

static void tres_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const tres_st *s = st;
    trendstat_encode(out, &s->ts);
    cod_put_f64(out, s->last_y);
    cod_put_i64(out, s->last_t);
}

static int tres_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    tres_st t;
    if (trendstat_decode(p, end, &t.ts) < 0 || cod_get_f64(p, end, &t.last_y) < 0 ||
        cod_get_i64(p, end, &t.last_t) < 0)
        return -1;
    *(tres_st *)st = t;
    return 0;
}

const struct op_vtable op_trend_residual = {
    .name = "trend_residual",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(tres_st),
    .update = tres_update,
    .merge = tres_merge,
    .read = tres_read,
    .encode = tres_encode,
    .decode = tres_decode,
};
