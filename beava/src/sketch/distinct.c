/*
 * distinct.c - exact-then-HLL distinct counter (see distinct.h).
 */
#include "distinct.h"

#include <stdlib.h>
#include <string.h>
#include "codec.h"
#include "hll.h"
#include "xalloc.h"

/* First index whose hash is >= h. */
static uint32_t lower_bound(const uint64_t *a, uint32_t n, uint64_t h) {
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (a[mid] < h) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static void to_hll(distinct *d) {
    uint8_t *reg = calloc(HLL_M, 1);
    if (!reg) abort();
    const uint64_t *a = d->p;
    for (uint32_t i = 0; i < d->n; i++) hll_add(reg, a[i]);
    free(d->p);
    d->p = reg;
    d->n = DISTINCT_HLL;
    d->cap = 0;
}

void distinct_add(distinct *d, uint64_t hash) {
    if (d->n == DISTINCT_HLL) { hll_add(d->p, hash); return; }
    uint64_t *a = d->p;
    uint32_t i = lower_bound(a, d->n, hash);
    if (i < d->n && a[i] == hash) return;
    if (d->n == DISTINCT_EXACT_MAX) {
        to_hll(d);
        hll_add(d->p, hash);
        return;
    }
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 4;
        d->p = a = bv_xrealloc(a, (size_t)d->cap * sizeof *a);
    }
    memmove(&a[i + 1], &a[i], (size_t)(d->n - i) * sizeof *a);
    a[i] = hash;
    d->n++;
}

uint64_t distinct_count(const distinct *d) {
    if (d->n == DISTINCT_HLL) return hll_estimate(d->p);
    return d->n;
}

void distinct_free(distinct *d) {
    free(d->p);
    memset(d, 0, sizeof *d);
}

void distinct_merge(distinct *dst, const distinct *src) {
    if (src->n == 0) return;
    if (src->n == DISTINCT_HLL) {
        if (dst->n != DISTINCT_HLL) to_hll(dst);
        hll_merge(dst->p, src->p);
        return;
    }
    const uint64_t *b = src->p;
    if (dst->n == DISTINCT_HLL) {
        for (uint32_t i = 0; i < src->n; i++) hll_add(dst->p, b[i]);
        return;
    }
    /* Both exact: sorted union into a new array. */
    const uint64_t *a = dst->p;
    uint32_t na = dst->n, nb = src->n, i = 0, j = 0, n = 0;
    uint64_t *out = bv_xrealloc(NULL, ((size_t)na + nb) * sizeof *out);
    while (i < na || j < nb) {
        if (j == nb || (i < na && a[i] < b[j])) out[n++] = a[i++];
        else if (i == na || b[j] < a[i]) out[n++] = b[j++];
        else { out[n++] = a[i++]; j++; }
    }
    free(dst->p);
    dst->p = out;
    dst->n = n;
    dst->cap = na + nb;
    if (n > DISTINCT_EXACT_MAX) to_hll(dst);
}

void distinct_encode(bv_buf *out, const distinct *d) {
    if (d->n == DISTINCT_HLL) {
        cod_put_u8(out, 1);
        bv_buf_put(out, d->p, HLL_M);
        return;
    }
    cod_put_u8(out, 0);
    cod_put_u32(out, d->n);
    const uint64_t *a = d->p;
    for (uint32_t i = 0; i < d->n; i++) cod_put_u64(out, a[i]);
}

int distinct_decode(const uint8_t **p, const uint8_t *end, distinct *d) {
    const uint8_t *q = *p;
    uint8_t mode;
    distinct_free(d);
    if (cod_get_u8(&q, end, &mode) < 0) return -1;
    if (mode == 1) {
        const uint8_t *reg;
        if (cod_get_bytes(&q, end, HLL_M, &reg) < 0) return -1;
        for (uint32_t i = 0; i < HLL_M; i++)
            if (reg[i] > HLL_MAX_RANK) return -1;
        d->p = bv_xrealloc(NULL, HLL_M);
        memcpy(d->p, reg, HLL_M);
        d->n = DISTINCT_HLL;
        *p = q;
        return 0;
    }
    uint32_t n;
    if (mode != 0 || cod_get_u32(&q, end, &n) < 0 || n > DISTINCT_EXACT_MAX) return -1;
    if ((size_t)(end - q) < (size_t)n * 8) return -1;
    if (n == 0) { *p = q; return 0; }
    uint64_t *a = bv_xrealloc(NULL, (size_t)n * sizeof *a);
    for (uint32_t i = 0; i < n; i++) {
        cod_get_u64(&q, end, &a[i]);
        if (i && a[i] <= a[i - 1]) { free(a); return -1; }
    }
    d->p = a;
    d->n = d->cap = n;
    *p = q;
    return 0;
}
