/*
 * op_twa.c - `twa`: time-weighted average of the numeric values of `field`
 * (reference-pipelines.md §2.3 row 34, §2.4): each value holds until the next one
 * arrives, weighted by how long it held.
 *
 * The first value seeds (last_v, last_t). Each later value at now: if dt = now - last_t
 * > 0, sum_vdt += last_v*dt and sum_dt += dt; then (last_v, last_t) = (x, now). Output
 * sum_vdt / sum_dt, or last_v while sum_dt = 0; empty null. As in the reference, the
 * latest value carries no weight until the next one arrives.
 *
 * Window (DECISIONS §4: the reference accepted `window` and ignored it; we honour it):
 * a real sliding window over the framework's 64 sub-buckets (window.c). A bucket keeps
 * its own first and last point besides the sums, and merging buckets oldest first adds
 * the interval between one bucket's last point and the next bucket's first, so a
 * windowed twa equals the lifetime rule applied to the events of the active buckets
 * only (the value held before the window's first event is not counted). Without
 * `window` (or "forever") it is the reference's lifetime op.
 *
 * State: 56 bytes, all-zero = empty (n == 0).
 */
#include "op.h"
#include "../sketch/codec.h"

typedef struct twa_st {
    int64_t n;                /* values seen */
    int64_t first_t, last_t;
    double first_v, last_v;
    double sum_vdt, sum_dt;
} twa_st;

static void twa_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    twa_st *s = st;
    double x;
    if (!bv_as_f64(in->v, &x)) return;
    if (s->n++ == 0) {
        s->first_v = x;
        s->first_t = in->now_ms;
    } else {
        double dt = (double)in->now_ms - (double)s->last_t;
        if (dt > 0) {
            s->sum_vdt += s->last_v * dt;
            s->sum_dt += dt;
        }
    }
    s->last_v = x;
    s->last_t = in->now_ms;
}

static void twa_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    twa_st *d = dst;
    const twa_st *s = src;
    if (s->n == 0) return;
    if (d->n == 0) {
        *d = *s;
        return;
    }
    double dt = (double)s->first_t - (double)d->last_t;
    if (dt > 0) {
        d->sum_vdt += d->last_v * dt;
        d->sum_dt += dt;
    }
    d->sum_vdt += s->sum_vdt;
    d->sum_dt += s->sum_dt;
    d->last_v = s->last_v;
    d->last_t = s->last_t;
    d->n += s->n;
}

static void twa_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const twa_st *s = st;
    if (!s->n) jsonw_null(w);
    else if (s->sum_dt > 0) jsonw_f64(w, s->sum_vdt / s->sum_dt);
    else jsonw_f64(w, s->last_v);
}

static void twa_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const twa_st *s = st;
    cod_put_i64(out, s->n);
    cod_put_i64(out, s->first_t);
    cod_put_i64(out, s->last_t);
    cod_put_f64(out, s->first_v);
    cod_put_f64(out, s->last_v);
    cod_put_f64(out, s->sum_vdt);
    cod_put_f64(out, s->sum_dt);
}

static int twa_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    twa_st t;
    if (cod_get_i64(p, end, &t.n) < 0 || cod_get_i64(p, end, &t.first_t) < 0 ||
        cod_get_i64(p, end, &t.last_t) < 0 || cod_get_f64(p, end, &t.first_v) < 0 ||
        cod_get_f64(p, end, &t.last_v) < 0 || cod_get_f64(p, end, &t.sum_vdt) < 0 ||
        cod_get_f64(p, end, &t.sum_dt) < 0 || t.n < 0 || !(t.sum_dt >= 0))
        return -1;
    *(twa_st *)st = t;
    return 0;
}

const struct op_vtable op_twa = {
    .name = "twa",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(twa_st),
    .update = twa_update,
    .merge = twa_merge,
    .read = twa_read,
    .encode = twa_encode,
    .decode = twa_decode,
};
