/*
 * topk.c - exact map, then CMS + candidate heap (see topk.h).
 *
 * Heap membership is found by a linear scan of the candidates' hashes: O(k) per event
 * in hybrid mode, fine for the usual k (10..100); an index would help k near 1024.
 */
#include "topk.h"

#include <stdlib.h>
#include <string.h>
#include "cms.h"
#include "codec.h"
#include "xalloc.h"

typedef struct tk_ent {
    op_val v;
    uint64_t h;
    uint64_t count;
} tk_ent;

struct topk_hybrid {
    cms sk;
    uint32_t k, n;
    tk_ent *heap;                 /* min-heap: root is the worst candidate */
};

/* a is worse than b: fewer counts, or equal counts and a sorts after b. */
static int worse(const tk_ent *a, const tk_ent *b) {
    if (a->count != b->count) return a->count < b->count;
    return opval_order(&a->v, &b->v) > 0;
}

static void swap_ent(tk_ent *a, tk_ent *b) { tk_ent t = *a; *a = *b; *b = t; }

static void sift_up(tk_ent *h, uint32_t i) {
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!worse(&h[i], &h[p])) break;
        swap_ent(&h[i], &h[p]);
        i = p;
    }
}

static void sift_down(tk_ent *h, uint32_t n, uint32_t i) {
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m])) m = l;
        if (r < n && worse(&h[r], &h[m])) m = r;
        if (m == i) return;
        swap_ent(&h[i], &h[m]);
        i = m;
    }
}

static struct topk_hybrid *hybrid_new(uint32_t k) {
    struct topk_hybrid *hy = bv_xcalloc_written(1, sizeof *hy);   /* the 64 KB sketch */
    hy->k = k ? k : 1;
    hy->heap = calloc(hy->k, sizeof *hy->heap);
    if (!hy->heap) abort();
    return hy;
}

static void hybrid_free(struct topk_hybrid *hy) {
    if (!hy) return;
    for (uint32_t i = 0; i < hy->n; i++) opval_clear(&hy->heap[i].v);
    free(hy->heap);
    free(hy);
}

/* Offer a candidate at count `est` (insert, update, or replace the worst). */
static void heap_offer(struct topk_hybrid *hy, const bv_value *v, uint64_t h, uint64_t est) {
    for (uint32_t i = 0; i < hy->n; i++) {
        if (hy->heap[i].h == h && opval_same_key(&hy->heap[i].v, v)) {
            hy->heap[i].count = est;
            sift_down(hy->heap, hy->n, i);
            sift_up(hy->heap, i);
            return;
        }
    }
    if (hy->n < hy->k) {
        tk_ent *e = &hy->heap[hy->n];
        memset(e, 0, sizeof *e);
        opval_set(&e->v, v);
        e->h = h;
        e->count = est;
        sift_up(hy->heap, hy->n++);
        return;
    }
    if (est > hy->heap[0].count) {
        opval_set(&hy->heap[0].v, v);
        hy->heap[0].h = h;
        hy->heap[0].count = est;
        sift_down(hy->heap, hy->n, 0);
    }
}

static void promote(topk *t, uint32_t k) {
    struct topk_hybrid *hy = hybrid_new(k);
    for (uint32_t i = 0; i < t->exact.n; i++) {
        bv_value v = opval_view(&t->exact.e[i].key);
        cms_add(&hy->sk, opval_hash(&v), t->exact.e[i].count);
    }
    for (uint32_t i = 0; i < t->exact.n; i++) {
        bv_value v = opval_view(&t->exact.e[i].key);
        uint64_t h = opval_hash(&v);
        heap_offer(hy, &v, h, cms_estimate(&hy->sk, h));
    }
    vm_free(&t->exact);
    t->hy = hy;
}

static void hybrid_add(struct topk_hybrid *hy, const bv_value *v, uint64_t h, uint64_t c) {
    cms_add(&hy->sk, h, c);
    heap_offer(hy, v, h, cms_estimate(&hy->sk, h));
}

void topk_add(topk *t, const bv_value *v, uint32_t k) {
    uint64_t h = opval_hash(v);
    if (!t->hy) {
        vm_entry *e = vm_find(&t->exact, v, h);
        if (e) { e->count++; return; }
        if (t->exact.n < TOPK_EXACT_MAX) {
            vm_insert(&t->exact, v, h)->count = 1;
            return;
        }
        promote(t, k);
    }
    hybrid_add(t->hy, v, h, 1);
}

void topk_prefetch(const topk *t, const bv_value *v) {
    if (t->hy) cms_prefetch(&t->hy->sk, opval_hash(v));
    else vm_prefetch(&t->exact, vm_prefetch_hashes(&t->exact) ? opval_hash(v) : 0);
}

void topk_merge(topk *dst, const topk *src, uint32_t k) {
    if (!src->hy && src->exact.n == 0) return;
    if (!dst->hy && !src->hy) {
        uint32_t fresh = 0;
        for (uint32_t i = 0; i < src->exact.n; i++) {
            bv_value v = opval_view(&src->exact.e[i].key);
            if (!vm_find(&dst->exact, &v, opval_hash(&v))) fresh++;
        }
        if (dst->exact.n + fresh <= TOPK_EXACT_MAX) {
            for (uint32_t i = 0; i < src->exact.n; i++) {
                bv_value v = opval_view(&src->exact.e[i].key);
                uint64_t h = opval_hash(&v);
                vm_entry *e = vm_find(&dst->exact, &v, h);
                if (!e) e = vm_insert(&dst->exact, &v, h);
                e->count += src->exact.e[i].count;
            }
            return;
        }
    }
    if (!dst->hy) promote(dst, k);
    struct topk_hybrid *hy = dst->hy;
    /* Sum the sketches, then re-rank old and new candidates on the merged CMS. */
    if (src->hy) {
        cms_merge(&hy->sk, &src->hy->sk);
    } else {
        for (uint32_t i = 0; i < src->exact.n; i++) {
            bv_value v = opval_view(&src->exact.e[i].key);
            cms_add(&hy->sk, opval_hash(&v), src->exact.e[i].count);
        }
    }
    uint32_t oldn = hy->n;
    tk_ent *old = hy->heap;
    hy->heap = calloc(hy->k, sizeof *hy->heap);
    if (!hy->heap) abort();
    hy->n = 0;
    for (uint32_t i = 0; i < oldn; i++) {
        bv_value v = opval_view(&old[i].v);
        heap_offer(hy, &v, old[i].h, cms_estimate(&hy->sk, old[i].h));
        opval_clear(&old[i].v);
    }
    free(old);
    if (src->hy) {
        for (uint32_t i = 0; i < src->hy->n; i++) {
            bv_value v = opval_view(&src->hy->heap[i].v);
            heap_offer(hy, &v, src->hy->heap[i].h, cms_estimate(&hy->sk, src->hy->heap[i].h));
        }
    } else {
        for (uint32_t i = 0; i < src->exact.n; i++) {
            bv_value v = opval_view(&src->exact.e[i].key);
            uint64_t h = opval_hash(&v);
            heap_offer(hy, &v, h, cms_estimate(&hy->sk, h));
        }
    }
}

static int item_cmp(const void *a, const void *b) {
    const topk_item *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return opval_order(x->v, y->v);
}

size_t topk_result(const topk *t, uint32_t k, topk_item **out) {
    size_t n = t->hy ? t->hy->n : t->exact.n;
    topk_item *it = malloc((n ? n : 1) * sizeof *it);
    if (!it) abort();
    for (size_t i = 0; i < n; i++) {
        if (t->hy) { it[i].v = &t->hy->heap[i].v; it[i].count = t->hy->heap[i].count; }
        else { it[i].v = &t->exact.e[i].key; it[i].count = t->exact.e[i].count; }
    }
    qsort(it, n, sizeof *it, item_cmp);
    *out = it;
    return n < k ? n : k;
}

void topk_free(topk *t) {
    vm_free(&t->exact);
    hybrid_free(t->hy);
    memset(t, 0, sizeof *t);
}

int topk_is_hybrid(const topk *t) { return t->hy != NULL; }

void topk_encode(bv_buf *out, const topk *t) {
    if (!t->hy) {
        cod_put_u8(out, 0);
        cod_put_u32(out, t->exact.n);
        for (uint32_t i = 0; i < t->exact.n; i++) {
            opval_encode(out, &t->exact.e[i].key);
            cod_put_u64(out, t->exact.e[i].count);
        }
        return;
    }
    const struct topk_hybrid *hy = t->hy;
    cod_put_u8(out, 1);
    cod_put_u32(out, hy->k);
    cod_put_u32(out, hy->n);
    for (uint32_t r = 0; r < CMS_DEPTH; r++)
        for (uint32_t i = 0; i < CMS_WIDTH; i++) cod_put_u64(out, hy->sk.cell[r][i]);
    for (uint32_t i = 0; i < hy->n; i++) {
        opval_encode(out, &hy->heap[i].v);
        cod_put_u64(out, hy->heap[i].count);
    }
}

static int key_kind(uint8_t kind) {
    return kind == BV_STR || kind == BV_I64 || kind == BV_F64 || kind == BV_BOOL;
}

int topk_decode(const uint8_t **p, const uint8_t *end, topk *t, uint32_t k) {
    const uint8_t *q = *p;
    uint8_t mode;
    uint32_t n;
    op_val tmp;
    memset(&tmp, 0, sizeof tmp);
    topk_free(t);
    if (cod_get_u8(&q, end, &mode) < 0) return -1;
    if (mode == 0) {
        if (cod_get_u32(&q, end, &n) < 0 || n > TOPK_EXACT_MAX) return -1;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t c;
            if (opval_decode(&q, end, &tmp) < 0 || !key_kind(tmp.kind)) goto err;
            if (cod_get_u64(&q, end, &c) < 0 || c == 0) goto err;
            bv_value v = opval_view(&tmp);
            uint64_t h = opval_hash(&v);
            if (vm_find(&t->exact, &v, h)) goto err;
            vm_insert(&t->exact, &v, h)->count = c;
        }
        opval_clear(&tmp);
        *p = q;
        return 0;
    }
    uint32_t dk;
    if (mode != 1 || cod_get_u32(&q, end, &dk) < 0 || dk != k || k == 0 || k > TOPK_MAX_K) return -1;
    if (cod_get_u32(&q, end, &n) < 0 || n > k) return -1;
    if ((size_t)(end - q) < sizeof(cms)) return -1;
    t->hy = hybrid_new(k);
    for (uint32_t r = 0; r < CMS_DEPTH; r++)
        for (uint32_t i = 0; i < CMS_WIDTH; i++) cod_get_u64(&q, end, &t->hy->sk.cell[r][i]);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t c;
        if (opval_decode(&q, end, &tmp) < 0 || !key_kind(tmp.kind)) goto err;
        if (cod_get_u64(&q, end, &c) < 0) goto err;
        bv_value v = opval_view(&tmp);
        uint64_t h = opval_hash(&v);
        for (uint32_t j = 0; j < t->hy->n; j++)
            if (t->hy->heap[j].h == h && opval_same_key(&t->hy->heap[j].v, &v)) goto err;
        tk_ent *e = &t->hy->heap[t->hy->n];
        e->v = tmp;                    /* takes ownership */
        memset(&tmp, 0, sizeof tmp);
        e->h = h;
        e->count = c;
        sift_up(t->hy->heap, t->hy->n++);
    }
    *p = q;
    return 0;
err:
    opval_clear(&tmp);
    topk_free(t);
    return -1;
}
