/*
 * op_ratio.c - `ratio`: matched / total, where every event reaching the feature counts
 * in total and the where-matched ones in matched (reference-pipelines.md §2.4). It is
 * the one kind updated when `where` is false; without `where` it is 1.0.
 * Windowable. State: two int64 (16 bytes). Empty: null (total = 0).
 */
#include "counter.h"
#include "op.h"
#include "codec.h"

typedef struct ratio_st { int64_t matched, total; } ratio_st;

static void ratio_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    ratio_st *s = st;
    cnt_inc(&s->total);
    if (in->matched && s->matched < s->total) cnt_inc(&s->matched);
}

static void ratio_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    ratio_st *d = dst;
    const ratio_st *s = src;
    d->matched = cnt_add(d->matched, s->matched);
    d->total = cnt_add(d->total, s->total);
}

static void ratio_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const ratio_st *s = st;
    if (s->total) jsonw_f64(w, (double)s->matched / (double)s->total);
    else jsonw_null(w);
}

static void ratio_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const ratio_st *s = st;
    cod_put_i64(out, s->matched);
    cod_put_i64(out, s->total);
}

static int ratio_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    ratio_st t;
    if (cod_get_i64(p, end, &t.matched) < 0 || cod_get_i64(p, end, &t.total) < 0) return -1;
    if (t.matched < 0 || t.total < t.matched) return -1;
    *(ratio_st *)st = t;
    return 0;
}

const struct op_vtable op_ratio = {
    .name = "ratio",
    .flags = OPF_WINDOWABLE | OPF_SEES_UNMATCHED,
    .state_size = sizeof(ratio_st),
    .update = ratio_update,
    .merge = ratio_merge,
    .read = ratio_read,
    .encode = ratio_encode,
    .decode = ratio_decode,
};
