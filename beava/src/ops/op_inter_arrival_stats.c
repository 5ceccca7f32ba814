/*
 * op_inter_arrival_stats.c - `inter_arrival_stats`: mean gap in ms between consecutive
 * matched events (reference-pipelines.md §2.3 row 36, §2.4). No field.
 *
 * The first matched event only sets last_t; each later one adds
 * gap = max(0, now - last_t) to a Welford summary of gaps and sets last_t = now.
 * Output the mean gap (f64 ms); null until two events.
 *
 * Window (DECISIONS §4; the reference ignored it): a real sliding window over the
 * framework's 64 sub-buckets. A bucket keeps its first and last arrival besides its
 * gap summary; merging oldest first adds the gap from one bucket's last arrival to the
 * next bucket's first (Chan merge of the summaries), so the windowed value is the mean
 * gap between consecutive events of the active buckets.
 *
 * State: 48 bytes, all-zero = empty (n == 0).
 */
#include "counter.h"
#include "op.h"
#include "welford.h"

typedef struct ia_st {
    int64_t n;                /* matched events */
    int64_t first_t, last_t;
    welford gaps;
} ia_st;

static void ia_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    ia_st *s = st;
    if (cnt_inc(&s->n) == 0) {
        s->first_t = in->now_ms;
    } else {
        double gap = (double)in->now_ms - (double)s->last_t;
        welford_add(&s->gaps, gap > 0 ? gap : 0.0);
    }
    s->last_t = in->now_ms;
}

static void ia_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    ia_st *d = dst;
    const ia_st *s = src;
    if (s->n == 0) return;
    if (d->n == 0) {
        *d = *s;
        return;
    }
    double gap = (double)s->first_t - (double)d->last_t;
    welford_add(&d->gaps, gap > 0 ? gap : 0.0);
    welford_merge(&d->gaps, &s->gaps);
    d->last_t = s->last_t;
    d->n = cnt_add(d->n, s->n);
}

static void ia_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const ia_st *s = st;
    if (s->gaps.n) jsonw_f64(w, s->gaps.mean);
    else jsonw_null(w);
}

static void ia_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const ia_st *s = st;
    cod_put_i64(out, s->n);
    cod_put_i64(out, s->first_t);
    cod_put_i64(out, s->last_t);
    welford_encode(out, &s->gaps);
}

static int ia_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    ia_st t;
    if (cod_get_i64(p, end, &t.n) < 0 || cod_get_i64(p, end, &t.first_t) < 0 ||
        cod_get_i64(p, end, &t.last_t) < 0 || welford_decode(p, end, &t.gaps) < 0 ||
        t.n < 0 || t.gaps.n != (t.n ? t.n - 1 : 0))
        return -1;
    *(ia_st *)st = t;
    return 0;
}

const struct op_vtable op_inter_arrival_stats = {
    .name = "inter_arrival_stats",
    .flags = OPF_WINDOWABLE,
    .state_size = sizeof(ia_st),
    .update = ia_update,
    .merge = ia_merge,
    .read = ia_read,
    .encode = ia_encode,
    .decode = ia_decode,
};
