/*
 * op_ewma.c - `ewma` (alias `ema`): exponentially weighted moving average of the numeric
 * values of `field` (reference-pipelines.md §2.3 row 29, §2.4). `half_life` required.
 *
 * lambda = ln2 / half_life_ms. The first value seeds v and last_t. Later, with
 * dt = now - last_t: dt > 0 -> alpha = 1 - e^(-lambda*dt), v = alpha*x + (1-alpha)*v,
 * last_t = now; dt <= 0 (same ms or clock regression) -> v = 0.5*x + 0.5*v, last_t
 * unchanged. Output f64; empty (no value yet) null.
 *
 * Read time (DECISIONS §4 "decay applied at read time"): the decayed amounts
 * (decayed_sum, decayed_count) shrink towards 0 between events, because "how much,
 * recently" genuinely fades. An average does not: with no new observation the best
 * estimate of the level is still the last EW mean, and decaying it towards 0 would
 * report a level the stream never had (an ewma of 100, 100, 100 would drift to 0
 * overnight). So ewma reports v unchanged at any query time, exactly as the reference
 * does; ewvar and ew_zscore follow the same reasoning.
 *
 * `window` is accepted and ignored, as in the reference: the half-life is this kind's
 * recency control. (A windowed EW state would need the affine composition of bucket
 * states; for ewvar/ew_zscore that does not fit OP_MAX_STATE, so the decay family stays
 * window-free as a whole.)
 *
 * State: 24 bytes {v, last_t, n}, all-zero = empty.
 */
#include "counter.h"
#include <math.h>
#include "op.h"
#include "codec.h"

typedef struct ewma_st {
    double v;
    int64_t last_t;
    int64_t n;                /* values seen (0 = empty) */
} ewma_st;

static void ewma_update(const feature *f, void *st, const op_input *in) {
    ewma_st *s = st;
    double x;
    if (!bv_as_f64(in->v, &x)) return;
    if (cnt_inc(&s->n) == 0) {
        s->v = x;
        s->last_t = in->now_ms;
        return;
    }
    /* times subtract as doubles: a decoded extreme last_t cannot overflow */
    double dt = (double)in->now_ms - (double)s->last_t;
    if (dt > 0) {
        double alpha = 1.0 - exp(-(M_LN2 / (double)f->p.half_life_ms) * dt);
        s->v = alpha * x + (1.0 - alpha) * s->v;
        s->last_t = in->now_ms;
    } else {
        s->v = 0.5 * x + 0.5 * s->v;
    }
}

static void ewma_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const ewma_st *s = st;
    if (s->n) jsonw_f64(w, s->v);
    else jsonw_null(w);
}

static void ewma_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const ewma_st *s = st;
    cod_put_i64(out, s->n);
    cod_put_f64(out, s->v);
    cod_put_i64(out, s->last_t);
}

static int ewma_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    ewma_st t;
    if (cod_get_i64(p, end, &t.n) < 0 || cod_get_f64(p, end, &t.v) < 0 ||
        cod_get_i64(p, end, &t.last_t) < 0 || t.n < 0)
        return -1;
    *(ewma_st *)st = t;
    return 0;
}

const struct op_vtable op_ewma = {
    .name = "ewma",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(ewma_st),
    .update = ewma_update,
    .read = ewma_read,
    .encode = ewma_encode,
    .decode = ewma_decode,
};
