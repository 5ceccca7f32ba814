/*
 * op_first_n.c - `first_n(n)`: the first n non-null matched values of `field`, in
 * arrival order, then frozen. Lifetime only;
 * `field` and `n` (1..1024) required. Values are kept as sent (owned copies; lists and
 * maps as JSON), numerics coerced to the declared field type (opval_coerce, sketch/opval.h).
 * State: valring (24 bytes, storage grown as values arrive). Empty: [].
 */
#include "valring.h"

static void first_n_update(const feature *f, void *st, const op_input *in) {
    valring_append(st, (uint32_t)f->p.n, in->v);
}

static void first_n_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    valring_write(st, w);
}

static void first_n_destroy(const feature *f, void *st) {
    (void)f;
    valring_free(st);
}

static void first_n_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    valring_encode(out, st);
}

static int first_n_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    return valring_decode(p, end, st, (uint32_t)f->p.n);
}

static void first_n_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)v;
    valring_prefetch(st, (uint32_t)f->p.n, false);
}

OP_COERCING_VTABLES(op_first_n,
    .name = "first_n",
    .flags = OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_N_REQUIRED | OPF_COERCE,
    .state_size = sizeof(valring),
    .update = first_n_update,
    .prefetch = first_n_prefetch,
    .read = first_n_read,
    .destroy = first_n_destroy,
    .encode = first_n_encode,
    .decode = first_n_decode);
