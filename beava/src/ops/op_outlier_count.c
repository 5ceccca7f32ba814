/*
 * op_outlier_count.c - `outlier_count`: how many numeric values of `field` lay more than
 * `sigma` (default 3.0, not validated) sample standard deviations from the mean of the
 * values before them. i64; empty 0.
 *
 * Rule per value x, judged before x is added: n >= 5 and sample variance > 0 and
 * |x - mean| > sigma * std -> outliers + 1; then Welford-add x.
 *
 * Window (the reference accepted it and ignored it; we honour it). The baseline an
 * outlier is judged against must itself be the window, so the framework's window.c (which
 * updates one bucket without seeing the others) does not fit; this file keeps its own 64
 * buckets with the same geometry (width ceil(W/64), epoch floor(now/b)*b, active iff 0 <=
 * q - e < W, a new epoch beyond 64 recycles the smallest). Each bucket holds the Welford
 * summary of its values and the outliers flagged on arrival. A value arriving at now is
 * judged against the Chan merge of the buckets active at now (the window ending at its
 * arrival, including earlier values of its own bucket); a read at q sums the flags of the
 * buckets active at q. Without `window` (or "forever") it is the reference's lifetime op.
 * feature_compile fills window_ms only for OPF_WINDOWABLE kinds, so the parse hook keeps
 * the window length in p.param_window_ms.
 *
 * State: 40 bytes {lifetime welford, lifetime outliers, bucket list pointer}; the
 * bucket list (8 + 40 bytes per bucket, grown by doubling to 64) is allocated on the
 * first windowed value.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "param.h"
#include "welford.h"
#include "window.h"

#define OC_MAX_BUCKETS 64

typedef struct oc_bucket {
    int64_t epoch;
    welford w;
    int64_t outliers;
} oc_bucket;

typedef struct oc_win {
    uint32_t n, cap;
    oc_bucket b[];
} oc_win;

typedef struct oc_st {
    welford w;                /* lifetime mode */
    int64_t outliers;         /* lifetime mode */
    oc_win *win;              /* windowed mode */
} oc_st;

static int oc_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    double sigma;
    const char *ws;
    int64_t w;
    if (param_num(params, "sigma", &sigma) == 1) f->p.sigma = sigma;
    /* an invalid window string is rejected by feature_compile right after this hook */
    if (param_str(params, "window", &ws) == 1 && bv_parse_duration(ws, &w) == 0) f->p.param_window_ms = w;
    return 0;
}

static bool is_outlier(const feature *f, const welford *base, double x) {
    double var;
    if (base->n < 5 || !welford_var(base, &var) || !(var > 0)) return false;
    return fabs(x - base->mean) > f->p.sigma * sqrt(var);
}

static oc_bucket *bucket_for(oc_st *s, int64_t e, op_stats *stats) {
    oc_win *w = s->win;
    if (w)
        for (uint32_t i = 0; i < w->n; i++)
            if (w->b[i].epoch == e) return &w->b[i];
    if (!w || w->n == w->cap) {
        if (w && w->cap == OC_MAX_BUCKETS) {
            uint32_t v = 0;
            for (uint32_t i = 1; i < w->n; i++)
                if (w->b[i].epoch < w->b[v].epoch) v = i;
            memset(&w->b[v], 0, sizeof w->b[v]);
            w->b[v].epoch = e;
            if (stats) stats->bucket_reclaim++;
            return &w->b[v];
        }
        uint32_t cap = w ? w->cap * 2 : 2;
        if (cap > OC_MAX_BUCKETS) cap = OC_MAX_BUCKETS;
        oc_win *nw = realloc(w, sizeof *nw + (size_t)cap * sizeof(oc_bucket));
        if (!nw) abort();
        if (!w) nw->n = 0;
        nw->cap = cap;
        s->win = w = nw;
    }
    oc_bucket *b = &w->b[w->n++];
    memset(b, 0, sizeof *b);
    b->epoch = e;
    return b;
}

static void oc_update(const feature *f, void *st, const op_input *in) {
    oc_st *s = st;
    double x;
    if (!bv_as_f64(in->v, &x)) return;
    int64_t W = f->p.param_window_ms;
    if (!W) {
        s->outliers += is_outlier(f, &s->w, x);
        welford_add(&s->w, x);
        return;
    }
    welford base = { 0, 0, 0 };
    if (s->win)
        for (uint32_t i = 0; i < s->win->n; i++)
            if (window_active(in->now_ms, s->win->b[i].epoch, W)) welford_merge(&base, &s->win->b[i].w);
    bool out = is_outlier(f, &base, x);
    oc_bucket *b = bucket_for(s, window_epoch(in->now_ms, (W + 63) / 64), in->stats);
    b->outliers += out;
    welford_add(&b->w, x);
}

static void oc_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    const oc_st *s = st;
    int64_t W = f->p.param_window_ms, total = 0;
    if (!W) {
        jsonw_i64(w, s->outliers);
        return;
    }
    if (s->win)
        for (uint32_t i = 0; i < s->win->n; i++)
            if (window_active(q, s->win->b[i].epoch, W)) total += s->win->b[i].outliers;
    jsonw_i64(w, total);
}

static void oc_destroy(const feature *f, void *st) {
    (void)f;
    oc_st *s = st;
    free(s->win);
    s->win = NULL;
}

/* welford, i64 outliers, u8 nbuckets, then per bucket i64 epoch, welford, i64 outliers */
static void oc_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const oc_st *s = st;
    uint32_t n = s->win ? s->win->n : 0;
    welford_encode(out, &s->w);
    cod_put_i64(out, s->outliers);
    cod_put_u8(out, (uint8_t)n);
    for (uint32_t i = 0; i < n; i++) {
        cod_put_i64(out, s->win->b[i].epoch);
        welford_encode(out, &s->win->b[i].w);
        cod_put_i64(out, s->win->b[i].outliers);
    }
}

static int oc_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    oc_st t = { { 0, 0, 0 }, 0, NULL };
    uint8_t n;
    if (welford_decode(p, end, &t.w) < 0 || cod_get_i64(p, end, &t.outliers) < 0 ||
        t.outliers < 0 || t.outliers > t.w.n || cod_get_u8(p, end, &n) < 0 || n > OC_MAX_BUCKETS)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        oc_bucket b;
        if (cod_get_i64(p, end, &b.epoch) < 0 || welford_decode(p, end, &b.w) < 0 ||
            cod_get_i64(p, end, &b.outliers) < 0 || b.outliers < 0 || b.outliers > b.w.n)
            goto err;
        for (uint32_t j = 0; j < i; j++)
            if (t.win->b[j].epoch == b.epoch) goto err;
        *bucket_for(&t, b.epoch, NULL) = b;
    }
    oc_destroy(f, st);
    *(oc_st *)st = t;
    return 0;
err:
    oc_destroy(f, &t);
    return -1;
}

static void oc_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)f; (void)v;
    op_prefetch_ptr(((const oc_st *)st)->win);
}

const struct op_vtable op_outlier_count = {
    .name = "outlier_count",
    .flags = OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(oc_st),
    .parse = oc_parse,
    .update = oc_update,
    .prefetch = oc_prefetch,
    .read = oc_read,
    .destroy = oc_destroy,
    .encode = oc_encode,
    .decode = oc_decode,
};
