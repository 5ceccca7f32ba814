/*
 * op_lag.c - `lag(n)`: the value of `field` exactly n matched non-null events before
 * the latest one (n = 1: the previous value).
 * Lifetime only; `field` and `n` (1..1024) required. Values are kept as sent
 * (owned copies), numerics coerced to the declared field type (opval_coerce, sketch/opval.h).
 * State: valring of capacity n + 1; the answer is its oldest value once it is full.
 * Empty (fewer than n + 1 values): null.
 */
#include "valring.h"

static uint32_t lag_cap(const feature *f) { return (uint32_t)f->p.n + 1; }

static void lag_update(const feature *f, void *st, const op_input *in) {
    valring_push(st, lag_cap(f), in->v);
}

static void lag_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)q;
    const valring *r = st;
    if (r->len == lag_cap(f)) opval_write(valring_at(r, 0), w);
    else jsonw_null(w);
}

static void lag_destroy(const feature *f, void *st) {
    (void)f;
    valring_free(st);
}

static void lag_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    valring_encode(out, st);
}

static int lag_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    return valring_decode(p, end, st, lag_cap(f));
}

static void lag_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)v;
    valring_prefetch(st, lag_cap(f), true);
}

OP_COERCING_VTABLES(op_lag,
    .name = "lag",
    .flags = OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_N_REQUIRED | OPF_COERCE,
    .state_size = sizeof(valring),
    .update = lag_update,
    .prefetch = lag_prefetch,
    .read = lag_read,
    .destroy = lag_destroy,
    .encode = lag_encode,
    .decode = lag_decode);
