/*
 * op_bloom_member.c - `bloom_member`: a real Bloom filter over the values of `field`;
 * GET answers whether the entity's latest accepted value had already been seen (was
 * present in the filter) before that event (DECISIONS §4; reference-pipelines.md §2.3
 * row 12, §2.5). The reference only answered "at least one value was ever inserted";
 * a client reading `true` after the second distinct value will now read `false`.
 *
 * Params: expected_n (alias capacity, default 1024, values < 1 mean 1024), target_fpr
 * (alias fpr, default 0.01, must be in (0, 1): invalid_bloom_fpr). Any `window`, even
 * "forever", is window_not_supported. Sizing as in the reference: m = ceil(-n ln p /
 * ln^2 2) bits rounded up to a multiple of 64, k = round(m / n * ln 2) probes (>= 1).
 * Two clamps the reference lacks or differs on: p is taken as at least 1e-9 (the
 * reference clamps the same way), and m is capped at BLOOM_MAX_BITS (1 MiB of bits per
 * entity) so a huge expected_n cannot allocate without bound; past the cap the false
 * positive rate rises above the target.
 *
 * Values: Str, I64, F64, Bool, hashed with their kind (opval_hash, XXH3), so 5 and "5"
 * are different values; numerics are first coerced to the field's declared type, so 5
 * and 5.0 in an f64 field are one value. Null/missing values and lists/maps are
 * ignored and leave the answer unchanged. Probes: double hashing g_i = h1 + i*h2 mod m
 * with h1 = the 64-bit hash and h2 = a SplitMix64 finalisation of it (odd).
 *
 * State: bit array (allocated on the first value), inserts, latest flag (24 bytes).
 * Snapshot form: u64 inserts, u8 latest-was-present, u32 nwords, nwords u64 (nwords is
 * 0 before the first value, else fixed by the params). Empty: false.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "opval.h"
#include "param.h"
#include "valring.h"
#include "codec.h"

#define BLOOM_MAX_BITS (1u << 23)
#define BLOOM_MIN_FPR 1e-9

typedef struct bloom_st {
    uint64_t *bits;
    uint64_t inserts;         /* accepted values */
    uint32_t nwords;          /* 0 until the first value */
    uint32_t seen;            /* the latest value was present before its insert */
} bloom_st;

static int bloom_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    double fpr = 0.01;
    int64_t n = 1024;
    int r = param_num(params, "target_fpr", &fpr);
    if (r == 0) r = param_num(params, "fpr", &fpr);
    if (r < 0 || !(fpr > 0 && fpr < 1)) {
        bv_err_set(err, "invalid_bloom_fpr", path, "bloom_member fpr must be a number in (0, 1)");
        return -1;
    }
    if (param_int(params, "expected_n", &n) == 0) param_int(params, "capacity", &n);
    f->p.fpr = fpr;
    f->p.expected_n = n > 0 ? n : 1024;
    return 0;
}

/* Filter geometry from the params: words of 64 bits and probe count. */
static void bloom_shape(const feature *f, uint32_t *nwords, uint32_t *k) {
    double n = (double)f->p.expected_n, p = f->p.fpr < BLOOM_MIN_FPR ? BLOOM_MIN_FPR : f->p.fpr;
    double mf = ceil(-n * log(p) / (M_LN2 * M_LN2));
    if (!(mf >= 64)) mf = 64;
    if (mf > BLOOM_MAX_BITS) mf = BLOOM_MAX_BITS;
    uint32_t w = (uint32_t)((mf + 63) / 64);
    double kf = round((double)w * 64.0 / n * M_LN2);
    if (kf < 1) kf = 1;
    if (kf > 64) kf = 64;
    *nwords = w;
    *k = (uint32_t)kf;
}

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void bloom_update(const feature *f, void *st, const op_input *in) {
    bloom_st *s = st;
    bv_kind kind = in->v->kind;
    if (kind != BV_STR && kind != BV_I64 && kind != BV_F64 && kind != BV_BOOL) return;
    uint32_t nw, k;
    bloom_shape(f, &nw, &k);
    if (!s->bits) {
        s->bits = calloc(nw, sizeof *s->bits);
        if (!s->bits) abort();
        s->nwords = nw;
    }
    uint64_t h1 = opval_hash(in->v), h2 = mix64(h1) | 1, m = (uint64_t)nw * 64;
    bool present = true;
    for (uint32_t i = 0; i < k; i++) {
        uint64_t bit = (h1 + (uint64_t)i * h2) % m, mask = 1ull << (bit & 63);
        if (!(s->bits[bit >> 6] & mask)) {
            present = false;
            s->bits[bit >> 6] |= mask;
        }
    }
    s->seen = present;
    if (s->inserts < UINT64_MAX) s->inserts++;
}

static void bloom_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const bloom_st *s = st;
    jsonw_bool(w, s->inserts > 0 && s->seen);
}

static void bloom_destroy(const feature *f, void *st) {
    (void)f;
    bloom_st *s = st;
    free(s->bits);
    memset(s, 0, sizeof *s);
}

static void bloom_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const bloom_st *s = st;
    cod_put_u64(out, s->inserts);
    cod_put_u8(out, s->seen ? 1 : 0);
    cod_put_u32(out, s->bits ? s->nwords : 0);
    for (uint32_t i = 0; s->bits && i < s->nwords; i++) cod_put_u64(out, s->bits[i]);
}

static int bloom_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    bloom_st *s = st;
    const uint8_t *q = *p;
    uint64_t inserts;
    uint8_t seen;
    uint32_t nw, want, k;
    bloom_shape(f, &want, &k);
    if (cod_get_u64(&q, end, &inserts) < 0 || cod_get_u8(&q, end, &seen) < 0 ||
        cod_get_u32(&q, end, &nw) < 0 || seen > 1)
        return -1;
    /* no bits before the first value; afterwards exactly the params' size */
    if (inserts == 0 ? (nw != 0 || seen) : nw != want) return -1;
    if ((size_t)(end - q) / 8 < nw) return -1;
    uint64_t *bits = NULL;
    if (nw) {
        bits = malloc((size_t)nw * sizeof *bits);
        if (!bits) abort();
        for (uint32_t i = 0; i < nw; i++) cod_get_u64(&q, end, &bits[i]);   /* length checked above */
    }
    bloom_destroy(f, st);
    s->bits = bits;
    s->nwords = nw;
    s->inserts = inserts;
    s->seen = seen;
    *p = q;
    return 0;
}

OP_COERCING_VTABLES(op_bloom_member,
    .name = "bloom_member",
    .flags = OPF_NO_WINDOW | OPF_FIELD_CHECKED | OPF_READS_FIELD | OPF_COERCE,
    .state_size = sizeof(bloom_st),
    .parse = bloom_parse,
    .update = bloom_update,
    .read = bloom_read,
    .destroy = bloom_destroy,
    .encode = bloom_encode,
    .decode = bloom_decode);
