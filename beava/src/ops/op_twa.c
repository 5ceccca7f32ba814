/*
 * op_twa.c - `twa`: time-weighted average of the numeric values of `field`: each value
 * holds until the next one arrives, weighted by how long it held.
 *
 * The first value seeds (last_v, last_t). Each later value at now: if dt = now - last_t
 * > 0, sum_vdt += last_v*dt and sum_dt += dt; then (last_v, last_t) = (x, now). Output
 * sum_vdt / sum_dt, or last_v while sum_dt = 0; empty null. As in the reference, the
 * latest value carries no weight until the next one arrives.
 *
 * Window (the reference accepted `window` and ignored it; we honour it):
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
#include "endpoints.h"

typedef struct twa_st {
    endpoints e;
    double sum_vdt, sum_dt;
} twa_st;

static void twa_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    twa_st *s = st;
    double x, prev, dt;
    if (!bv_as_f64(in->v, &x)) return;
    if (endpoints_add(&s->e, in->now_ms, x, &prev, &dt) && dt > 0) {
        s->sum_vdt += prev * dt;
        s->sum_dt += dt;
    }
}

static void twa_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    twa_st *d = dst;
    const twa_st *s = src;
    double d_last_v, dt;
    if (d->e.n == 0) {
        if (s->e.n) *d = *s;
        return;
    }
    if (!endpoints_join(&d->e, &s->e, &d_last_v, &dt)) return;
    if (dt > 0) {
        d->sum_vdt += d_last_v * dt;
        d->sum_dt += dt;
    }
    d->sum_vdt += s->sum_vdt;
    d->sum_dt += s->sum_dt;
}

static void twa_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const twa_st *s = st;
    if (!s->e.n) jsonw_null(w);
    else if (s->sum_dt > 0) jsonw_f64(w, s->sum_vdt / s->sum_dt);
    else jsonw_f64(w, s->e.last_v);
}

static void twa_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const twa_st *s = st;
    endpoints_encode(&s->e, out);
    cod_put_f64(out, s->sum_vdt);
    cod_put_f64(out, s->sum_dt);
}

static int twa_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    twa_st t;
    if (endpoints_decode(&t.e, p, end) < 0 || cod_get_f64(p, end, &t.sum_vdt) < 0 ||
        cod_get_f64(p, end, &t.sum_dt) < 0 || !(t.sum_dt >= 0))
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
