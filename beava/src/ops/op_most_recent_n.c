/*
 * op_most_recent_n.c - `most_recent_n(n)`: the latest n non-null matched values of
 * `field`, oldest to newest, n defaulting to 10 and raised to at least 1 (not validated
 * at register time; the lifetime pre-check wants it positive) (reference-pipelines.md
 * §2.4). Lifetime only; `field` not checked. n is capped at OP_MAX_RING so a huge n
 * cannot overflow the ring index; memory grows only as values arrive.
 * State: valbuf ring (16 bytes). Empty: [].
 */
#include "param.h"
#include "ring.h"

#define OP_MAX_RING (1 << 24)

static int mrn_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    int64_t n;
    if (param_int(params, "n", &n) != 1) n = 10;
    if (n < 1) n = 1;
    if (n > OP_MAX_RING) n = OP_MAX_RING;
    f->p.n = n;
    return 0;
}

static void mrn_update(const feature *f, void *st, const op_input *in) {
    valbuf_push(st, in->v, (uint32_t)f->p.n);
}

static void mrn_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    valbuf_write(st, w);
}

static int mrn_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    return ring_decode(st, p, end, (uint32_t)f->p.n);
}

const struct op_vtable op_most_recent_n = {
    .name = "most_recent_n",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
    .state_size = sizeof(valbuf),
    .parse = mrn_parse,
    .update = mrn_update,
    .read = mrn_read,
    .destroy = ring_destroy,
    .encode = ring_encode,
    .decode = mrn_decode,
};
