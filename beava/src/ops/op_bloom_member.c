/*
 * op_bloom_member.c - `bloom_member`: a real Bloom filter over the values of `field`; GET
 * answers whether the entity's latest accepted value had already been seen (was present
 * in the filter) before that event. The reference only answered "at least one value was
 * ever inserted"; a client reading `true` after the second distinct value will now read
 * `false`.
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
 * State: the filter, inserts, latest flag (24 bytes). The filter has two forms with the
 * same bits: sparse, a sorted array of the set bit positions (u32; header {n, cap},
 * grown by doubling) while it takes fewer bytes than the bit array (a few values set k
 * bits each out of thousands), then the dense bit array of nwords u64 for good. NULL
 * before the first value. Snapshot form (either representation): u64 inserts, u8
 * latest-was-present, u32 nwords, nwords u64 (nwords is 0 before the first value, else
 * fixed by the params); a decoded filter with few bits set is held sparse. Empty: false.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "opval.h"
#include "param.h"
#include "valring.h"
#include "codec.h"
#include "xalloc.h"

#define BLOOM_MAX_BITS (1u << 23)
#define BLOOM_MIN_FPR 1e-9

typedef struct bloom_st {
    void *bits;               /* uint64_t[nwords] (dense) or a bloom_sparse */
    uint64_t inserts;         /* accepted values */
    uint32_t nwords;          /* 0 until the first value */
    uint16_t seen;            /* the latest value was present before its insert */
    uint16_t sparse;          /* bits is the sparse form */
} bloom_st;

typedef struct bloom_sparse {
    uint32_t n, cap;          /* set positions held / room */
    uint32_t pos[];           /* ascending bit positions */
} bloom_sparse;

#define BLOOM_SPARSE_MIN 8    /* first capacity of the sparse form */

/* The sparse form stays while its bytes are below the dense array's. */
static bool sparse_fits(uint32_t cap, uint32_t nwords) {
    return sizeof(bloom_sparse) + (size_t)cap * sizeof(uint32_t) < (size_t)nwords * sizeof(uint64_t);
}

static uint32_t sparse_lower(const bloom_sparse *b, uint32_t bit) {
    uint32_t lo = 0, hi = b->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (b->pos[mid] < bit) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static void to_dense(bloom_st *s) {
    bloom_sparse *b = s->bits;
    uint64_t *w = bv_xcalloc_written(s->nwords, sizeof *w);
    for (uint32_t i = 0; b && i < b->n; i++) w[b->pos[i] >> 6] |= 1ull << (b->pos[i] & 63);
    free(b);
    s->bits = w;
    s->sparse = 0;
}

/* Set `bit`; returns whether it was already set. */
static bool bloom_set(bloom_st *s, uint32_t bit) {
    if (!s->sparse) {
        uint64_t *w = s->bits, mask = 1ull << (bit & 63);
        bool was = (w[bit >> 6] & mask) != 0;
        w[bit >> 6] |= mask;
        return was;
    }
    bloom_sparse *b = s->bits;
    uint32_t i = sparse_lower(b, bit);
    if (i < b->n && b->pos[i] == bit) return true;
    if (b->n == b->cap) {
        uint32_t cap = b->cap * 2;
        if (!sparse_fits(cap, s->nwords)) {
            to_dense(s);
            return bloom_set(s, bit);
        }
        b = realloc(b, sizeof *b + (size_t)cap * sizeof b->pos[0]);
        if (!b) abort();
        b->cap = cap;
        s->bits = b;
    }
    memmove(&b->pos[i + 1], &b->pos[i], (size_t)(b->n - i) * sizeof b->pos[0]);
    b->pos[i] = bit;
    b->n++;
    return false;
}

/* Word i of the filter, whichever the form (*cursor walks the sparse positions). */
static uint64_t bloom_word(const bloom_st *s, uint32_t i, uint32_t *cursor) {
    if (!s->sparse) return ((const uint64_t *)s->bits)[i];
    const bloom_sparse *b = s->bits;
    uint64_t w = 0;
    while (*cursor < b->n && (b->pos[*cursor] >> 6) == i) w |= 1ull << (b->pos[(*cursor)++] & 63);
    return w;
}

/* Filter geometry from the params: words of 64 bits and probe count. */
static void bloom_geometry(const op_params *pp, uint32_t *nwords, uint32_t *k) {
    double n = (double)pp->expected_n, p = pp->fpr < BLOOM_MIN_FPR ? BLOOM_MIN_FPR : pp->fpr;
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

/* The geometry bloom_parse computed once (log/ceil/round are not per-event work). */
static void bloom_shape(const feature *f, uint32_t *nwords, uint32_t *k) {
    *nwords = f->p.bloom_nwords;
    *k = f->p.bloom_k;
}

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
    bloom_geometry(&f->p, &f->p.bloom_nwords, &f->p.bloom_k);
    return 0;
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
        s->nwords = nw;
        if (sparse_fits(BLOOM_SPARSE_MIN, nw)) {
            bloom_sparse *b = malloc(sizeof *b + BLOOM_SPARSE_MIN * sizeof b->pos[0]);
            if (!b) abort();
            b->n = 0;
            b->cap = BLOOM_SPARSE_MIN;
            s->bits = b;
            s->sparse = 1;
        } else {
            s->bits = bv_xcalloc_written(nw, sizeof(uint64_t));
        }
    }
    uint64_t h1 = opval_hash(in->v), h2 = mix64(h1) | 1, m = (uint64_t)nw * 64;
    bool present = true;
    for (uint32_t i = 0; i < k; i++)
        if (!bloom_set(s, (uint32_t)((h1 + (uint64_t)i * h2) % m))) present = false;
    s->seen = present;
    if (s->inserts < UINT64_MAX) s->inserts++;
}

/* The words bloom_update will test and set (dense), or the sparse list's start. */
static void bloom_prefetch(const feature *f, const void *st, const bv_value *v) {
    const bloom_st *s = st;
    bv_kind kind = v->kind;
    if (!s->bits || (kind != BV_STR && kind != BV_I64 && kind != BV_F64 && kind != BV_BOOL)) return;
    if (s->sparse) { __builtin_prefetch(s->bits); return; }
    uint32_t nw, k;
    bloom_shape(f, &nw, &k);
    const uint64_t *w = s->bits;
    uint64_t h1 = opval_hash(v), h2 = mix64(h1) | 1, m = (uint64_t)nw * 64;
    for (uint32_t i = 0; i < k; i++) __builtin_prefetch(&w[((h1 + (uint64_t)i * h2) % m) >> 6]);
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
    uint32_t cursor = 0;
    for (uint32_t i = 0; s->bits && i < s->nwords; i++) cod_put_u64(out, bloom_word(s, i, &cursor));
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
    bloom_st t = { NULL, 0, nw, 0, 0 };
    if (nw) {
        uint64_t *bits = malloc((size_t)nw * sizeof *bits);
        if (!bits) abort();
        uint32_t set = 0;
        for (uint32_t i = 0; i < nw; i++) {                 /* length checked above */
            cod_get_u64(&q, end, &bits[i]);
            set += (uint32_t)__builtin_popcountll(bits[i]);
        }
        t.bits = bits;
        uint32_t cap = BLOOM_SPARSE_MIN;
        while (cap < set) cap *= 2;
        if (sparse_fits(cap, nw)) {
            bloom_sparse *b = malloc(sizeof *b + (size_t)cap * sizeof b->pos[0]);
            if (!b) abort();
            b->n = 0;
            b->cap = cap;
            for (uint32_t i = 0; i < nw; i++)
                for (uint64_t w = bits[i]; w; w &= w - 1) b->pos[b->n++] = i * 64 + (uint32_t)__builtin_ctzll(w);
            free(bits);
            t.bits = b;
            t.sparse = 1;
        }
    }
    bloom_destroy(f, st);
    *s = t;
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
    .prefetch = bloom_prefetch,
    .read = bloom_read,
    .destroy = bloom_destroy,
    .encode = bloom_encode,
    .decode = bloom_decode);
