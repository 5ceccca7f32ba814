/*
 * op_ewma.c - `ewma` (alias `ema`): exponentially weighted moving average of the
 * numeric values of `field` (reference-pipelines.md §2.4). The first value seeds; then
 * with dt > 0: alpha = 1 - e^(-lambda dt), v = alpha x + (1 - alpha) v, last_t = now;
 * with dt <= 0 (same ms or clock regression): v = (x + v) / 2, last_t kept.
 * half_life required. State: 24 bytes. Empty: null.
 */
#include "decay.h"

typedef struct ewma_st {
    double v;
    int64_t last_t;
    int64_t seeded;
} ewma_st;

static void ewma_update(const feature *f, void *st, const op_input *in) {
    ewma_st *s = st;
    double x;
    if (!bv_as_f64(in->v, &x)) return;
    if (!s->seeded) { s->v = x; s->last_t = in->now_ms; s->seeded = 1; return; }
    double a = decay_alpha(f, in->now_ms, s->last_t);
    if (a > 0) { s->v = a * x + (1 - a) * s->v; s->last_t = in->now_ms; }
    else s->v = 0.5 * x + 0.5 * s->v;
}

static void ewma_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const ewma_st *s = st;
    if (s->seeded) jsonw_f64(w, s->v); else jsonw_null(w);
}

static void ewma_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const ewma_st *s = st;
    cod_put_f64(out, s->v);
    cod_put_i64(out, s->last_t);
    cod_put_u8(out, (uint8_t)s->seeded);
}

static int ewma_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    ewma_st t;
    uint8_t seeded;
    if (cod_get_f64(p, end, &t.v) < 0 || cod_get_i64(p, end, &t.last_t) < 0 ||
        cod_get_u8(p, end, &seeded) < 0 || seeded > 1)
        return -1;
    t.seeded = seeded;
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
