/*
 * distinct.c - exact-then-HLL distinct counter (see distinct.h).
 *
 * Exact forms, by size (the snapshot form is the same sorted list for all of them):
 *   one hash      held in the pointer's bits (cap 0): nothing allocated;
 *   2 .. 32       a sorted array (binary search; insertion moves at most 256 bytes),
 *                 capacity doubled from 4;
 *   33 .. 1024    open addressing: cap (a power of two, load <= 3/4) u64 slots, linear
 *                 probing on the hash's high bits; 0 marks a free slot, so a hash of 0
 *                 is recorded in one extra slot past the table (slot cap: 1 = present).
 * Going up moves hashes to the next form; merge and decode build whichever form the
 * result's size calls for, from a sorted list.
 */
#include "distinct.h"

#include <stdlib.h>
#include <string.h>
#include "codec.h"
#include "hll.h"
#include "xalloc.h"

#define DISTINCT_SORTED_MAX 32          /* largest sorted array; beyond, a hash table */
#define DISTINCT_SORTED_MIN_CAP 4
#define DISTINCT_TABLE_MIN_CAP 64       /* a power of two holding DISTINCT_SORTED_MAX + 1 */
#define DISTINCT_LINE 64                /* cache line: prefetch granularity */
#define DISTINCT_LINE_MASK (DISTINCT_LINE / 8 - 1)    /* a slot's index bits within its line */

static bool is_inline(const distinct *d) { return d->n == 1 && d->cap == 0; }
static bool is_table(const distinct *d) { return d->n != DISTINCT_HLL && d->n > DISTINCT_SORTED_MAX; }

static uint64_t inline_get(const distinct *d) {
    uint64_t h;
    memcpy(&h, &d->p, sizeof h);
    return h;
}

static void inline_set(distinct *d, uint64_t h) {
    _Static_assert(sizeof(void *) == sizeof(uint64_t), "the one-hash form needs 64-bit pointers");
    memcpy(&d->p, &h, sizeof h);
    d->n = 1;
    d->cap = 0;
}

/* First index whose hash is >= h. Branch-free halving (a conditional move per step):
 * the hashes are random, so a branch per step would be mispredicted half the time. */
static uint32_t lower_bound(const uint64_t *a, uint32_t n, uint64_t h) {
    const uint64_t *base = a;
    while (n > 1) {
        uint32_t half = n / 2;
        base = base[half - 1] < h ? base + half : base;
        n -= half;
    }
    return (uint32_t)(base - a) + (n == 1 && base[0] < h);
}

/* Table insert; returns false when h was present. t has cap + 1 slots. */
static bool table_put(uint64_t *t, uint32_t cap, uint64_t h) {
    if (h == 0) {
        if (t[cap]) return false;
        t[cap] = 1;
        return true;
    }
    uint32_t mask = cap - 1, i = (uint32_t)(h >> 32) & mask;
    while (t[i]) {
        if (t[i] == h) return false;
        i = (i + 1) & mask;
    }
    t[i] = h;
    return true;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The exact hashes of d, ascending, in a fresh array of d->n (caller frees; NULL if 0). */
static uint64_t *sorted_copy(const distinct *d) {
    if (d->n == 0) return NULL;
    uint64_t *a = bv_xrealloc(NULL, (size_t)d->n * sizeof *a);
    if (is_inline(d)) {
        a[0] = inline_get(d);
    } else if (!is_table(d)) {
        memcpy(a, d->p, (size_t)d->n * sizeof *a);
    } else {
        const uint64_t *t = d->p;
        uint32_t k = 0;
        if (t[d->cap]) a[k++] = 0;
        for (uint32_t i = 0; i < d->cap; i++)
            if (t[i]) a[k++] = t[i];
        qsort(a, k, sizeof *a, cmp_u64);
    }
    return a;
}

/* More than 3/4 of cap slots would be used. */
static bool table_full(uint32_t n, uint32_t cap) { return (uint64_t)n * 4 > (uint64_t)cap * 3; }

static uint32_t table_cap_for(uint32_t n) {
    uint32_t cap = DISTINCT_TABLE_MIN_CAP;
    while (table_full(n, cap)) cap *= 2;
    return cap;
}

/* Replace d's exact storage by `a` (n ascending, distinct hashes; taken over). n must be
 * at most DISTINCT_EXACT_MAX. */
static void from_sorted(distinct *d, uint64_t *a, uint32_t n) {
    if (!is_inline(d)) free(d->p);
    memset(d, 0, sizeof *d);
    if (n == 0) {
        free(a);
    } else if (n == 1) {
        inline_set(d, a[0]);
        free(a);
    } else if (n <= DISTINCT_SORTED_MAX) {
        d->p = a;
        d->n = d->cap = n;
    } else {
        uint32_t cap = table_cap_for(n);
        uint64_t *t = bv_xcalloc_written((size_t)cap + 1, sizeof *t);
        for (uint32_t i = 0; i < n; i++) table_put(t, cap, a[i]);
        free(a);
        d->p = t;
        d->n = n;
        d->cap = cap;
    }
}

/* HLL registers are a register-wise max, so the exact hashes go in in any order: the
 * table form is read slot by slot, without the sorted copy. */
static void to_hll(distinct *d) {
    uint8_t *reg = bv_xcalloc_written(HLL_M, 1);
    if (is_table(d)) {
        const uint64_t *t = d->p;
        if (t[d->cap]) hll_add(reg, 0);
        for (uint32_t i = 0; i < d->cap; i++)
            if (t[i]) hll_add(reg, t[i]);
    } else {
        uint64_t *a = sorted_copy(d);
        for (uint32_t i = 0; i < d->n; i++) hll_add(reg, a[i]);
        free(a);
    }
    if (!is_inline(d)) free(d->p);
    d->p = reg;
    d->n = DISTINCT_HLL;
    d->cap = 0;
}

static bool table_has(const uint64_t *t, uint32_t cap, uint64_t h) {
    if (h == 0) return t[cap] != 0;
    for (uint32_t i = (uint32_t)(h >> 32) & (cap - 1); t[i]; i = (i + 1) & (cap - 1))
        if (t[i] == h) return true;
    return false;
}

/* Double the table (load stays <= DISTINCT_TABLE_LOAD). */
static void table_grow(distinct *d) {
    uint32_t cap = d->cap * 2;
    uint64_t *o = d->p, *t = bv_xcalloc_written((size_t)cap + 1, sizeof *t);
    for (uint32_t i = 0; i < d->cap; i++)
        if (o[i]) table_put(t, cap, o[i]);
    t[cap] = o[d->cap];
    free(o);
    d->p = t;
    d->cap = cap;
}

static void table_add(distinct *d, uint64_t hash) {
    if (table_has(d->p, d->cap, hash)) return;
    if (d->n == DISTINCT_EXACT_MAX) {          /* the 1025th distinct hash */
        to_hll(d);
        hll_add(d->p, hash);
        return;
    }
    if (table_full(d->n + 1, d->cap)) table_grow(d);
    table_put(d->p, d->cap, hash);
    d->n++;
}

void distinct_add(distinct *d, uint64_t hash) {
    if (d->n == DISTINCT_HLL) { hll_add(d->p, hash); return; }
    if (d->n == 0) { inline_set(d, hash); return; }
    if (is_inline(d)) {
        uint64_t h0 = inline_get(d);
        if (h0 == hash) return;
        uint64_t *a = bv_xrealloc(NULL, DISTINCT_SORTED_MIN_CAP * sizeof *a);
        a[0] = h0 < hash ? h0 : hash;
        a[1] = h0 < hash ? hash : h0;
        d->p = a;
        d->n = 2;
        d->cap = DISTINCT_SORTED_MIN_CAP;
        return;
    }
    if (is_table(d)) { table_add(d, hash); return; }
    uint64_t *a = d->p;
    uint32_t i = lower_bound(a, d->n, hash);
    if (i < d->n && a[i] == hash) return;
    if (d->n == DISTINCT_SORTED_MAX) {
        uint64_t *c = sorted_copy(d);
        c = bv_xrealloc(c, (size_t)(d->n + 1) * sizeof *c);
        memmove(&c[i + 1], &c[i], (size_t)(d->n - i) * sizeof *c);
        c[i] = hash;
        from_sorted(d, c, d->n + 1);           /* 33 hashes: the table form */
        return;
    }
    if (d->n == d->cap) {
        d->cap *= 2;
        d->p = a = bv_xrealloc(a, (size_t)d->cap * sizeof *a);
    }
    memmove(&a[i + 1], &a[i], (size_t)(d->n - i) * sizeof *a);
    a[i] = hash;
    d->n++;
}

bool distinct_prefetch_hashes(const distinct *d) { return d->n == DISTINCT_HLL || is_table(d); }

void distinct_prefetch(const distinct *d, uint64_t hash) {
    if (d->n == DISTINCT_HLL) {
        hll_prefetch(d->p, hash);
    } else if (is_table(d)) {
        const uint64_t *t = d->p;
        if (!hash) {
            __builtin_prefetch(&t[d->cap]);
        } else {                                /* the home slot and the line after it */
            uint32_t i = (uint32_t)(hash >> 32) & (d->cap - 1);
            __builtin_prefetch(&t[i]);
            __builtin_prefetch(&t[((i | DISTINCT_LINE_MASK) + 1) & (d->cap - 1)]);
        }
    } else if (d->n > 1) {                     /* the sorted array: at most 4 lines */
        const char *a = d->p;
        for (size_t off = 0; off < (size_t)d->n * sizeof(uint64_t); off += DISTINCT_LINE)
            __builtin_prefetch(a + off);
    }
}

uint64_t distinct_count(const distinct *d) {
    if (d->n == DISTINCT_HLL) return hll_estimate(d->p);
    return d->n;
}

void distinct_free(distinct *d) {
    if (!is_inline(d)) free(d->p);
    memset(d, 0, sizeof *d);
}

void distinct_merge(distinct *dst, const distinct *src) {
    if (src->n == 0) return;
    if (src->n == DISTINCT_HLL) {
        if (dst->n != DISTINCT_HLL) to_hll(dst);
        hll_merge(dst->p, src->p);
        return;
    }
    uint64_t *b = sorted_copy(src);
    if (dst->n == DISTINCT_HLL) {
        for (uint32_t i = 0; i < src->n; i++) hll_add(dst->p, b[i]);
        free(b);
        return;
    }
    /* Both exact: sorted union, then the form for its size (HLL past 1024). */
    uint64_t *a = sorted_copy(dst);
    uint32_t na = dst->n, nb = src->n, i = 0, j = 0, n = 0;
    uint64_t *out = bv_xrealloc(NULL, ((size_t)na + nb) * sizeof *out);
    while (i < na || j < nb) {
        if (j == nb || (i < na && a[i] < b[j])) out[n++] = a[i++];
        else if (i == na || b[j] < a[i]) out[n++] = b[j++];
        else { out[n++] = a[i++]; j++; }
    }
    free(a);
    free(b);
    if (n > DISTINCT_EXACT_MAX) {
        uint8_t *reg = bv_xcalloc_written(HLL_M, 1);
        for (uint32_t k = 0; k < n; k++) hll_add(reg, out[k]);
        free(out);
        distinct_free(dst);
        dst->p = reg;
        dst->n = DISTINCT_HLL;
        return;
    }
    from_sorted(dst, out, n);
}

void distinct_encode(bv_buf *out, const distinct *d) {
    if (d->n == DISTINCT_HLL) {
        cod_put_u8(out, 1);
        bv_buf_put(out, d->p, HLL_M);
        return;
    }
    cod_put_u8(out, 0);
    cod_put_u32(out, d->n);
    uint64_t *a = sorted_copy(d);
    for (uint32_t i = 0; i < d->n; i++) cod_put_u64(out, a[i]);
    free(a);
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
    from_sorted(d, a, n);
    *p = q;
    return 0;
}
