/*
 * udd.c - UDDSketch (see udd.h).
 */
#include "udd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "codec.h"
#include "xalloc.h"

static double ln_gamma(uint32_t collapses) {
    return ldexp(log((1.0 + UDD_ALPHA0) / (1.0 - UDD_ALPHA0)), (int)collapses);
}

double udd_alpha(const udd *u) {
    double a = UDD_ALPHA0;
    for (uint32_t i = 0; i < u->collapses; i++) a = 2 * a / (1 + a * a);
    return a;
}

static int32_t floor_half(int32_t k, uint32_t shift) {
    /* floor(k / 2^shift) for negative k too (no reliance on arithmetic >>). */
    int64_t d = (int64_t)1 << shift;
    int64_t q = (int64_t)k / d;
    if ((int64_t)k % d != 0 && k < 0) q--;
    return (int32_t)q;
}

udd *udd_new(void) {
    return bv_xcalloc(1, sizeof(udd));
}

void udd_free(udd *u) {
    if (!u) return;
    free(u->pos.b);
    free(u->neg.b);
    free(u);
}

static void store_add(udd_store *s, int32_t k, uint64_t c) {
    uint32_t lo = 0, hi = s->n;
    if (hi > 0 && k <= s->b[hi - 1].k) {
        /* keys are distinct and ascending, so k sits at most (top key - k) places below
         * the top: where it is when the buckets above it are all held, the common case
         * (found with one access instead of a binary search of cache misses) */
        int64_t below = (int64_t)s->b[hi - 1].k - k;
        if (below < (int64_t)hi) {
            uint32_t g = hi - 1 - (uint32_t)below;
            if (s->b[g].k == k) { s->b[g].c += c; return; }
            lo = g + 1;               /* b[g].k < k: the buckets above g hold k's place */
        }
    } else {
        lo = hi;                      /* above every bucket (or none yet): appended */
    }
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->b[mid].k < k) lo = mid + 1; else hi = mid;
    }
    if (lo < s->n && s->b[lo].k == k) { s->b[lo].c += c; return; }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->b = realloc(s->b, (size_t)s->cap * sizeof *s->b);
        if (!s->b) abort();
    }
    memmove(&s->b[lo + 1], &s->b[lo], (size_t)(s->n - lo) * sizeof *s->b);
    s->b[lo].k = k;
    s->b[lo].pad = 0;
    s->b[lo].c = c;
    s->n++;
}

/* k -> floor(k/2) in place; the array stays sorted, equal neighbours fold. */
static void store_collapse(udd_store *s) {
    uint32_t out = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        int32_t k = floor_half(s->b[i].k, 1);
        if (out && s->b[out - 1].k == k) s->b[out - 1].c += s->b[i].c;
        else { s->b[out].k = k; s->b[out].c = s->b[i].c; out++; }
    }
    s->n = out;
}

static void collapse_to_fit(udd *u) {
    while (u->pos.n + u->neg.n > UDD_MAX_BUCKETS && u->collapses < UDD_MAX_COLLAPSES) {
        store_collapse(&u->pos);
        store_collapse(&u->neg);
        u->collapses++;
    }
}

static int32_t index_of(double ax, uint32_t collapses) {
    double k = floor(log(ax) / ln_gamma(collapses));
    if (k < INT32_MIN) return INT32_MIN;
    if (k > INT32_MAX) return INT32_MAX;
    return (int32_t)k;
}

void udd_add(udd *u, double x) {
    if (!isfinite(x)) return;
    u->total++;
    if (x == 0) { u->zero++; return; }
    store_add(x > 0 ? &u->pos : &u->neg, index_of(fabs(x), u->collapses), 1);
    collapse_to_fit(u);
}

void udd_merge(udd *dst, const udd *src) {
    while (dst->collapses < src->collapses) {
        store_collapse(&dst->pos);
        store_collapse(&dst->neg);
        dst->collapses++;
    }
    uint32_t shift = dst->collapses - src->collapses;
    for (uint32_t i = 0; i < src->pos.n; i++)
        store_add(&dst->pos, floor_half(src->pos.b[i].k, shift), src->pos.b[i].c);
    for (uint32_t i = 0; i < src->neg.n; i++)
        store_add(&dst->neg, floor_half(src->neg.b[i].k, shift), src->neg.b[i].c);
    dst->zero += src->zero;
    dst->total += src->total;
    collapse_to_fit(dst);
}

/* The representative of bucket k = [g^k, g^(k+1)): 2 g^(k+1) / (1 + g), which is within
 * alpha of both edges. (The arithmetic midpoint the reference returns is off by up to
 * alpha / (1 - alpha) at the lower edge.) */
static double centre(int32_t k, uint32_t collapses) {
    double lg = ln_gamma(collapses);
    return 2.0 * exp((double)(k + 1) * lg) / (1.0 + exp(lg));
}

bool udd_quantile(const udd *u, double q, double *out) {
    if (u->total == 0) return false;
    uint64_t rank = (uint64_t)floor(q * (double)(u->total - 1));
    uint64_t cum = 0;
    for (uint32_t i = u->neg.n; i-- > 0;) {          /* most negative first */
        cum += u->neg.b[i].c;
        if (cum > rank) { *out = -centre(u->neg.b[i].k, u->collapses); return true; }
    }
    cum += u->zero;
    if (cum > rank) { *out = 0.0; return true; }
    for (uint32_t i = 0; i < u->pos.n; i++) {
        cum += u->pos.b[i].c;
        if (cum > rank) { *out = centre(u->pos.b[i].k, u->collapses); return true; }
    }
    /* Unreachable while total equals the sum of the counts (decode checks it). */
    if (u->pos.n) *out = centre(u->pos.b[u->pos.n - 1].k, u->collapses);
    else if (u->zero || !u->neg.n) *out = 0.0;
    else *out = -centre(u->neg.b[0].k, u->collapses);
    return true;
}

static void store_encode(bv_buf *out, const udd_store *s) {
    cod_put_u32(out, s->n);
    for (uint32_t i = 0; i < s->n; i++) {
        cod_put_u32(out, (uint32_t)s->b[i].k);
        cod_put_u64(out, s->b[i].c);
    }
}

void udd_encode(bv_buf *out, const udd *u) {
    cod_put_u32(out, u->collapses);
    cod_put_u64(out, u->zero);
    cod_put_u64(out, u->total);
    store_encode(out, &u->pos);
    store_encode(out, &u->neg);
}

static int store_decode(const uint8_t **p, const uint8_t *end, udd_store *s, uint64_t *sum) {
    uint32_t n;
    if (cod_get_u32(p, end, &n) < 0 || n > UDD_MAX_BUCKETS) return -1;
    if ((size_t)(end - *p) < (size_t)n * 12) return -1;
    if (n == 0) return 0;
    s->b = malloc((size_t)n * sizeof *s->b);
    if (!s->b) abort();
    s->cap = n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k;
        uint64_t c;
        if (cod_get_u32(p, end, &k) < 0 || cod_get_u64(p, end, &c) < 0) return -1;
        if (c == 0 || (i && (int32_t)k <= s->b[i - 1].k)) return -1;
        if (__builtin_add_overflow(*sum, c, sum)) return -1;
        s->b[i].k = (int32_t)k;
        s->b[i].pad = 0;
        s->b[i].c = c;
        s->n = i + 1;
    }
    return 0;
}

udd *udd_decode(const uint8_t **p, const uint8_t *end) {
    const uint8_t *q = *p;
    udd *u = udd_new();
    uint64_t sum;
    if (cod_get_u32(&q, end, &u->collapses) < 0 || u->collapses > UDD_MAX_COLLAPSES) goto err;
    if (cod_get_u64(&q, end, &u->zero) < 0 || cod_get_u64(&q, end, &u->total) < 0) goto err;
    sum = u->zero;
    if (store_decode(&q, end, &u->pos, &sum) < 0 || store_decode(&q, end, &u->neg, &sum) < 0) goto err;
    if (sum != u->total || u->pos.n + u->neg.n > UDD_MAX_BUCKETS) goto err;
    *p = q;
    return u;
err:
    udd_free(u);
    return NULL;
}
