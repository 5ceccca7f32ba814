/*
 * op_delta_from_prev.c - `delta_from_prev`: the latest numeric value of `field` minus
 * the one before it (reference-pipelines.md §2.3 row 38, §2.4). Output f64 (the docs
 * say "type of field"; the reference's value is always f64); null until two values.
 *
 * Window (DECISIONS §4; the reference ignored it): a real sliding window over the
 * framework's 64 sub-buckets. A bucket keeps its first and last value and its own
 * latest delta; merging oldest first takes the step between buckets into account, so
 * the windowed value is the difference of the last two values in the window, null when
 * the window holds fewer than two.
 *
 * State: 32 bytes, all-zero = empty (n == 0).
 */
#include "counter.h"
#include "op.h"
#include "codec.h"

typedef struct dfp_st {
    int64_t n;                /* values seen */
    double first_v, last_v;
    double delta;             /* valid when n >= 2 */
} dfp_st;

static void dfp_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    dfp_st *s = st;
    double x;
    if (!bv_as_f64(in->v, &x)) return;
    if (cnt_inc(&s->n) == 0) s->first_v = x;
    else s->delta = x - s->last_v;
    s->last_v = x;
}

static void dfp_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    dfp_st *d = dst;
    const dfp_st *s = src;
    if (s->n == 0) return;
    if (d->n == 0) {
        *d = *s;
        return;
    }
    d->delta = s->n >= 2 ? s->delta : s->first_v - d->last_v;
    d->last_v = s->last_v;
    d->n = cnt_add(d->n, s->n);
}

static void dfp_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const dfp_st *s = st;
    if (s->n >= 2) jsonw_f64(w, s->delta);
    else jsonw_null(w);
}

static void dfp_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const dfp_st *s = st;
    cod_put_i64(out, s->n);
    cod_put_f64(out, s->first_v);
    cod_put_f64(out, s->last_v);
    cod_put_f64(out, s->delta);
}

static int dfp_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    dfp_st t;
    if (cod_get_i64(p, end, &t.n) < 0 || cod_get_f64(p, end, &t.first_v) < 0 ||
        cod_get_f64(p, end, &t.last_v) < 0 || cod_get_f64(p, end, &t.delta) < 0 || t.n < 0)
        return -1;
    *(dfp_st *)st = t;
    return 0;
}

const struct op_vtable op_delta_from_prev = {
    .name = "delta_from_prev",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(dfp_st),
    .update = dfp_update,
    .merge = dfp_merge,
    .read = dfp_read,
    .encode = dfp_encode,
    .decode = dfp_decode,
};
