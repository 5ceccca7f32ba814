/*
 * op_rate_of_change.c - `rate_of_change`: change of the numeric value of `field` per ms
 * between the last two values (reference-pipelines.md §2.3 row 35, §2.4).
 *
 * Each value after the first: if dt = now - last_t > 0, rate = (x - last_x) / dt;
 * always (last_x, last_t) = (x, now). Output the latest rate (f64, units per ms); null
 * until one has been computed.
 *
 * Window (DECISIONS §4; the reference ignored it): a real sliding window over the
 * framework's 64 sub-buckets. A bucket keeps its first and last point and its own
 * latest rate; merging oldest first replays the step from one bucket's last point to the
 * next bucket's first, so the windowed value is the lifetime rule over the events of
 * the active buckets: the rate between the last two of them, null if fewer than two
 * (or only same-ms pairs) are in the window.
 *
 * State: 56 bytes, all-zero = empty (n == 0).
 */
#include "op.h"
#include "../sketch/codec.h"

typedef struct roc_st {
    int64_t n;                /* values seen */
    int64_t first_t, last_t;
    double first_v, last_v;
    double rate;
    int64_t has_rate;         /* 0/1 */
} roc_st;

static void roc_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    roc_st *s = st;
    double x;
    if (!bv_as_f64(in->v, &x)) return;
    if (s->n++ == 0) {
        s->first_v = x;
        s->first_t = in->now_ms;
    } else {
        double dt = (double)in->now_ms - (double)s->last_t;
        if (dt > 0) {
            s->rate = (x - s->last_v) / dt;
            s->has_rate = 1;
        }
    }
    s->last_v = x;
    s->last_t = in->now_ms;
}

static void roc_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    roc_st *d = dst;
    const roc_st *s = src;
    if (s->n == 0) return;
    if (d->n == 0) {
        *d = *s;
        return;
    }
    if (s->has_rate) {
        /* src's own pairs come after the step into it */
        d->rate = s->rate;
        d->has_rate = 1;
    } else {
        double dt = (double)s->first_t - (double)d->last_t;
        if (dt > 0) {
            d->rate = (s->first_v - d->last_v) / dt;
            d->has_rate = 1;
        }
    }
    d->last_v = s->last_v;
    d->last_t = s->last_t;
    d->n += s->n;
}

static void roc_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const roc_st *s = st;
    if (s->has_rate) jsonw_f64(w, s->rate);
    else jsonw_null(w);
}

static void roc_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const roc_st *s = st;
    cod_put_i64(out, s->n);
    cod_put_i64(out, s->first_t);
    cod_put_i64(out, s->last_t);
    cod_put_f64(out, s->first_v);
    cod_put_f64(out, s->last_v);
    cod_put_f64(out, s->rate);
    cod_put_u8(out, (uint8_t)s->has_rate);
}

static int roc_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    roc_st t;
    uint8_t hr;
    if (cod_get_i64(p, end, &t.n) < 0 || cod_get_i64(p, end, &t.first_t) < 0 ||
        cod_get_i64(p, end, &t.last_t) < 0 || cod_get_f64(p, end, &t.first_v) < 0 ||
        cod_get_f64(p, end, &t.last_v) < 0 || cod_get_f64(p, end, &t.rate) < 0 ||
        cod_get_u8(p, end, &hr) < 0 || t.n < 0 || hr > 1 || (hr && t.n < 2))
        return -1;
    t.has_rate = hr;
    *(roc_st *)st = t;
    return 0;
}

const struct op_vtable op_rate_of_change = {
    .name = "rate_of_change",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(roc_st),
    .update = roc_update,
    .merge = roc_merge,
    .read = roc_read,
    .encode = roc_encode,
    .decode = roc_decode,
};
