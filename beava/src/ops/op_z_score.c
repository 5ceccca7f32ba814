/*
 * op_z_score.c - `z_score`: how many sample standard deviations the latest numeric value
 * of `field` lies from the mean of all values including itself: (last - mean) /
 * sqrt(m2/(n-1)). f64; null when n < 2 or the variance is 0.
 *
 * Window (the reference accepted `window`/`baseline_window` and ignored them): `window` is
 * a real sliding window over the framework's 64 sub-buckets (Welford summaries merge
 * exactly by Chan's formulas; the latest value is the newest bucket's), i.e. the latest
 * value scored against the events of the window. `baseline_window` stays unused.
 *
 * State: 32 bytes (welford + latest value), all-zero = empty.
 */
#include <math.h>
#include "op.h"
#include "welford.h"

typedef struct zs_st {
    welford w;
    double last;
} zs_st;

static void zs_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    zs_st *s = st;
    double x;
    if (!bv_as_f64(in->v, &x)) return;
    welford_add(&s->w, x);
    s->last = x;
}

static void zs_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    zs_st *d = dst;
    const zs_st *s = src;
    if (s->w.n == 0) return;
    welford_merge(&d->w, &s->w);
    d->last = s->last;
}

static void zs_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const zs_st *s = st;
    double var;
    if (welford_var(&s->w, &var) && var > 0) jsonw_f64(w, (s->last - s->w.mean) / sqrt(var));
    else jsonw_null(w);
}

static void zs_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const zs_st *s = st;
    welford_encode(out, &s->w);
    cod_put_f64(out, s->last);
}

static int zs_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    zs_st t;
    if (welford_decode(p, end, &t.w) < 0 || cod_get_f64(p, end, &t.last) < 0) return -1;
    *(zs_st *)st = t;
    return 0;
}

const struct op_vtable op_z_score = {
    .name = "z_score",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(zs_st),
    .update = zs_update,
    .merge = zs_merge,
    .read = zs_read,
    .encode = zs_encode,
    .decode = zs_decode,
};
