/*
 * op_reservoir_sample.c - `reservoir_sample(samples=K)`: a uniform sample of K of the
 * non-null matched values of `field` (Algorithm R with the reference's deterministic
 * xorshift64, so a given event sequence always yields the same sample)
 * (reference-pipelines.md §2.4). K = samples, else k, else 10; at least 1 (capped like
 * most_recent_n). Lifetime only; `field` not checked. Output in slot order.
 * State: valbuf + items seen (24 bytes). Empty: [].
 */
#include "op.h"
#include "param.h"
#include "valbuf.h"

#define OP_MAX_SAMPLES (1 << 24)

typedef struct reservoir {
    valbuf b;
    uint64_t seen;
} reservoir;

static int rs_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    int64_t n;
    if (param_int(params, "samples", &n) != 1 && param_int(params, "k", &n) != 1) n = 10;
    if (n < 1) n = 1;
    if (n > OP_MAX_SAMPLES) n = OP_MAX_SAMPLES;
    f->p.samples = n;
    return 0;
}

static uint64_t rs_random(uint64_t seen) {
    uint64_t s = seen ^ 0xA0B1C2D3E4F50617ull ^ 0x9E3779B97F4A7C15ull;
    if (s == 0) s = 0xD2B74E4572D7C2B0ull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static void rs_update(const feature *f, void *st, const op_input *in) {
    reservoir *r = st;
    uint32_t k = (uint32_t)f->p.samples;
    r->seen++;
    if (valbuf_append(&r->b, in->v, k)) return;
    uint64_t j = rs_random(r->seen) % r->seen;
    if (j < k) opval_set(&r->b.v[j], in->v);
}

static void rs_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    valbuf_write(&((const reservoir *)st)->b, w);
}

static void rs_destroy(const feature *f, void *st) {
    (void)f;
    reservoir *r = st;
    valbuf_free(&r->b);
    r->seen = 0;
}

static void rs_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const reservoir *r = st;
    cod_put_u64(out, r->seen);
    valbuf_encode(out, &r->b);
}

static int rs_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    reservoir *r = st;
    rs_destroy(f, st);
    if (cod_get_u64(p, end, &r->seen) < 0) return -1;
    if (valbuf_decode(p, end, &r->b, (uint32_t)f->p.samples) < 0 || r->b.head != 0 || r->seen < r->b.n)
        return -1;
    return 0;
}

const struct op_vtable op_reservoir_sample = {
    .name = "reservoir_sample",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
    .state_size = sizeof(reservoir),
    .parse = rs_parse,
    .update = rs_update,
    .read = rs_read,
    .destroy = rs_destroy,
    .encode = rs_encode,
    .decode = rs_decode,
};
