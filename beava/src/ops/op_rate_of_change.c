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
#include "endpoints.h"
#include "codec.h"

typedef struct roc_st {
    endpoints e;
    double rate;
    int64_t has_rate;         /* 0/1 */
} roc_st;

static void roc_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    roc_st *s = st;
    double x, prev, dt;
    if (!bv_as_f64(in->v, &x)) return;
    if (endpoints_add(&s->e, in->now_ms, x, &prev, &dt) && dt > 0) {
        s->rate = (x - prev) / dt;
        s->has_rate = 1;
    }
}

static void roc_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    roc_st *d = dst;
    const roc_st *s = src;
    double d_last_v, dt;
    if (d->e.n == 0) {
        if (s->e.n) *d = *s;
        return;
    }
    if (!endpoints_join(&d->e, &s->e, &d_last_v, &dt)) return;
    if (s->has_rate) {
        /* src's own pairs come after the step into it */
        d->rate = s->rate;
        d->has_rate = 1;
    } else if (dt > 0) {
        d->rate = (s->e.first_v - d_last_v) / dt;
        d->has_rate = 1;
    }
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
    endpoints_encode(&s->e, out);
    cod_put_f64(out, s->rate);
    cod_put_u8(out, (uint8_t)s->has_rate);
}

static int roc_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    roc_st t;
    uint8_t hr;
    if (endpoints_decode(&t.e, p, end) < 0 || cod_get_f64(p, end, &t.rate) < 0 ||
        cod_get_u8(p, end, &hr) < 0 || hr > 1 || (hr && t.e.n < 2))
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
