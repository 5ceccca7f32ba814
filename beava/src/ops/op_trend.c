/*
 * op_trend.c - `trend`: least-squares slope of the numeric values of `field` over
 * arrival time, per ms. f64; null when
 * n < 2 or all arrivals share one ms. The summary and why it is centred: trendstat.h.
 *
 * Window (the reference accepted it and ignored it; we honour it): a real sliding window
 * over the framework's 64 sub-buckets; buckets merge exactly (Chan), so the windowed
 * slope is the OLS slope of the events of the active buckets.
 *
 * State: trendstat (48 bytes).
 */
#include "trendstat.h"

static void trend_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    double y;
    if (bv_as_f64(in->v, &y)) trendstat_add(st, in->now_ms, y);
}

static void trend_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    trendstat_merge(dst, src);
}

static void trend_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    double slope;
    if (trendstat_slope(st, &slope)) jsonw_f64(w, slope);
    else jsonw_null(w);
}

static void trend_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    trendstat_encode(out, st);
}

static int trend_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    return trendstat_decode(p, end, st);
}

const struct op_vtable op_trend = {
    .name = "trend",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(trendstat),
    .update = trend_update,
    .merge = trend_merge,
    .read = trend_read,
    .encode = trend_encode,
    .decode = trend_decode,
};
