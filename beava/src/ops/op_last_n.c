/*
 * op_last_n.c - `last_n(n)`: the latest n non-null matched values of `field`, output
 * oldest -> newest. Lifetime only; `field`
 * and `n` (1..1024) required. Values are kept as sent (owned copies; lists and maps as
 * JSON), numerics coerced to the declared field type (opval_coerce, sketch/opval.h).
 * State: valring of capacity n (24 bytes, storage grown as values arrive). Empty: [].
 */
#include "valring.h"

static void last_n_update(const feature *f, void *st, const op_input *in) {
    valring_push(st, (uint32_t)f->p.n, in->v);
}

static void last_n_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    valring_write(st, w);
}

static void last_n_destroy(const feature *f, void *st) {
    (void)f;
    valring_free(st);
}

static void last_n_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    valring_encode(out, st);
}

static int last_n_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    return valring_decode(p, end, st, (uint32_t)f->p.n);
}

static void last_n_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)v;
    valring_prefetch(st, (uint32_t)f->p.n, true);
}

OP_COERCING_VTABLES(op_last_n,
    .name = "last_n",
    .flags = OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_N_REQUIRED | OPF_COERCE,
    .state_size = sizeof(valring),
    .update = last_n_update,
    .prefetch = last_n_prefetch,
    .read = last_n_read,
    .destroy = last_n_destroy,
    .encode = last_n_encode,
    .decode = last_n_decode);
