/*
 * op_reservoir_sample.c - `reservoir_sample(samples)`: a uniform sample of K non-null
 * matched values of `field` by Algorithm R, deterministic.
 * Lifetime only; `field` neither required nor checked at register time.
 *
 * K = `samples`, else `k`, else 10; values below 1 mean 1, and we clamp K to
 * RS_MAX_SAMPLES so one entity cannot grow without bound. Per value: items_seen += 1;
 * while fewer than K are kept, append; otherwise r = one xorshift64 step (shifts
 * 13/7/17) from the seed items_seen ^ 0xA0B1C2D3E4F50617 ^ 0x9E3779B97F4A7C15 (or
 * 0xD2B74E4572D7C2B0 if that is zero), j = r mod items_seen, and slot j is replaced if
 * j < K. The same event sequence always gives the same sample, as in the reference.
 * Values are kept as sent (owned copies), numerics coerced to the declared field type
 * (opval_coerce, sketch/opval.h). Output: the kept values in slot order.
 *
 * State: valring (slots in v[0..len), head unused) + items_seen (32 bytes). Snapshot
 * form: u64 items_seen, then the valring form. Empty: [].
 */
#include "param.h"
#include "valring.h"

#define RS_DEFAULT_SAMPLES 10
#define RS_MAX_SAMPLES (1 << 20)

typedef struct rs_st {
    valring r;
    uint64_t seen;
} rs_st;

static int rs_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    int64_t k;
    if (param_int(params, "samples", &k) != 1 && param_int(params, "k", &k) != 1) k = RS_DEFAULT_SAMPLES;
    if (k < 1) k = 1;
    if (k > RS_MAX_SAMPLES) k = RS_MAX_SAMPLES;
    f->p.samples = k;
    return 0;
}

/* The reference's det_random(): one xorshift64 step from a seed derived from the count. */
static uint64_t rs_draw(uint64_t seen) {
    uint64_t s = seen ^ 0xA0B1C2D3E4F50617ull ^ 0x9E3779B97F4A7C15ull;
    if (s == 0) s = 0xD2B74E4572D7C2B0ull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static void rs_update(const feature *f, void *st, const op_input *in) {
    rs_st *s = st;
    uint32_t k = (uint32_t)f->p.samples;
    if (s->seen < UINT64_MAX) s->seen++;
    if (s->r.len < k) {
        valring_append(&s->r, k, in->v);
        return;
    }
    uint64_t j = rs_draw(s->seen) % s->seen;
    if (j < k) opval_set(&s->r.v[j], in->v);
}

static void rs_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    valring_write(&((const rs_st *)st)->r, w);
}

static void rs_destroy(const feature *f, void *st) {
    (void)f;
    rs_st *s = st;
    valring_free(&s->r);
    s->seen = 0;
}

static void rs_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const rs_st *s = st;
    cod_put_u64(out, s->seen);
    valring_encode(out, &s->r);
}

static int rs_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    rs_st *s = st;
    const uint8_t *q = *p;
    uint64_t seen;
    valring t;
    uint32_t k = (uint32_t)f->p.samples;
    memset(&t, 0, sizeof t);
    if (cod_get_u64(&q, end, &seen) < 0 || valring_decode(&q, end, &t, k) < 0) return -1;
    /* exactly min(seen, K) values are kept */
    if ((uint64_t)t.len != (seen < k ? seen : k)) {
        valring_free(&t);
        return -1;
    }
    valring_free(&s->r);
    s->r = t;
    s->seen = seen;
    *p = q;
    return 0;
}

/* While filling, the slot the value is appended to (a later draw replaces a random one). */
static void rs_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)v;
    valring_prefetch(&((const rs_st *)st)->r, (uint32_t)f->p.samples, false);
}

OP_COERCING_VTABLES(op_reservoir_sample,
    .name = "reservoir_sample",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD | OPF_COERCE,
    .state_size = sizeof(rs_st),
    .parse = rs_parse,
    .update = rs_update,
    .prefetch = rs_prefetch,
    .read = rs_read,
    .destroy = rs_destroy,
    .encode = rs_encode,
    .decode = rs_decode);
