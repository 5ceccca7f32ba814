/*
 * op_most_recent_n.c - `most_recent_n(n)`: the latest n non-null matched values of
 * `field`, output oldest -> newest (the reference's docs say newest-first; its code,
 * which we follow, is oldest-first).
 * Lifetime only. `field` is neither required nor checked at register time (an unknown
 * name simply never matches). `n` defaults to 10 and is not validated by the reference
 * (values below 1 mean 1); we also clamp it to MRN_MAX_N so a huge n cannot grow one
 * entity without bound. Values are kept as sent (owned copies; lists and maps as
 * JSON), numerics coerced to the declared field type (opval_coerce, sketch/opval.h).
 * State: valring of capacity n (24 bytes, storage grown as values arrive). Empty: [].
 */
#include "param.h"
#include "valring.h"

#define MRN_DEFAULT_N 10
#define MRN_MAX_N (1 << 20)

static int mrn_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    int64_t n = MRN_DEFAULT_N;
    if (param_int(params, "n", &n) != 1) n = MRN_DEFAULT_N;
    if (n < 1) n = 1;
    if (n > MRN_MAX_N) n = MRN_MAX_N;
    f->p.n = n;
    return 0;
}

static void mrn_update(const feature *f, void *st, const op_input *in) {
    valring_push(st, (uint32_t)f->p.n, in->v);
}

static void mrn_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    valring_write(st, w);
}

static void mrn_destroy(const feature *f, void *st) {
    (void)f;
    valring_free(st);
}

static void mrn_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    valring_encode(out, st);
}

static int mrn_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    return valring_decode(p, end, st, (uint32_t)f->p.n);
}

static void mrn_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)v;
    valring_prefetch(st, (uint32_t)f->p.n, true);
}

OP_COERCING_VTABLES(op_most_recent_n,
    .name = "most_recent_n",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD | OPF_COERCE,
    .state_size = sizeof(valring),
    .parse = mrn_parse,
    .update = mrn_update,
    .prefetch = mrn_prefetch,
    .read = mrn_read,
    .destroy = mrn_destroy,
    .encode = mrn_encode,
    .decode = mrn_decode);
