/*
 * window.c - 64-sub-bucket sliding windows (see window.h).
 *
 * Memory shape: one allocation, header + cap entries of `stride` bytes (an int64 epoch
 * followed by the kind's fixed state), grown by doubling up to 64. Inner states are
 * position independent (op.h), so realloc may move them. Finding the bucket of an
 * event checks the most recently used entry first, then scans (<= 64 epochs).
 */
#include "window.h"

#include <stdlib.h>
#include <string.h>
#include "codec.h"

typedef struct win {
    uint32_t n, cap;
    uint32_t last;            /* index of the most recently updated bucket */
    uint32_t pad;
    unsigned char ent[];      /* cap * stride */
} win;

static size_t stride_of(const feature *f) { return 8 + f->vt->state_size; }

static int64_t *ent_epoch(win *w, size_t stride, uint32_t i) {
    return (int64_t *)(void *)(w->ent + (size_t)i * stride);
}

static void *ent_state(win *w, size_t stride, uint32_t i) {
    return w->ent + (size_t)i * stride + 8;
}

int64_t window_epoch(int64_t now_ms, int64_t bucket_ms) {
    if (bucket_ms <= 0) return now_ms;
    int64_t q = now_ms / bucket_ms;
    if (now_ms % bucket_ms != 0 && now_ms < 0) q--;
    int64_t e;
    if (__builtin_mul_overflow(q, bucket_ms, &e)) return now_ms;
    return e;
}

bool window_active(int64_t q, int64_t e, int64_t window_ms) {
    int64_t age;
    if (__builtin_sub_overflow(q, e, &age)) return false;
    return age >= 0 && age < window_ms;
}

static void init_inner(const feature *f, void *st) {
    memset(st, 0, f->vt->state_size);
    if (f->vt->init) f->vt->init(f, st);
}

static void destroy_inner(const feature *f, void *st) {
    if (f->vt->destroy) f->vt->destroy(f, st);
}

/* The bucket for epoch e, created (or recycled from the smallest epoch) if needed. */
static void *bucket_for(const feature *f, win **wp, int64_t e, op_stats *stats) {
    size_t stride = stride_of(f);
    win *w = *wp;
    if (w) {
        if (w->last < w->n && *ent_epoch(w, stride, w->last) == e) return ent_state(w, stride, w->last);
        for (uint32_t i = 0; i < w->n; i++)
            if (*ent_epoch(w, stride, i) == e) { w->last = i; return ent_state(w, stride, i); }
    }
    if (!w || w->n == w->cap) {
        if (w && w->cap == WINDOW_MAX_BUCKETS) {
            uint32_t victim = 0;
            for (uint32_t i = 1; i < w->n; i++)
                if (*ent_epoch(w, stride, i) < *ent_epoch(w, stride, victim)) victim = i;
            void *st = ent_state(w, stride, victim);
            destroy_inner(f, st);
            init_inner(f, st);
            *ent_epoch(w, stride, victim) = e;
            w->last = victim;
            if (stats) stats->bucket_reclaim++;
            return st;
        }
        uint32_t cap = w ? w->cap * 2 : 2;
        if (cap > WINDOW_MAX_BUCKETS) cap = WINDOW_MAX_BUCKETS;
        win *nw = realloc(w, sizeof *nw + (size_t)cap * stride);
        if (!nw) abort();
        if (!w) { nw->n = 0; nw->last = 0; nw->pad = 0; }
        nw->cap = cap;
        *wp = w = nw;
    }
    uint32_t i = w->n++;
    *ent_epoch(w, stride, i) = e;
    init_inner(f, ent_state(w, stride, i));
    w->last = i;
    return ent_state(w, stride, i);
}

void window_update(const feature *f, void *st, const op_input *in) {
    win **wp = st;
    int64_t e = window_epoch(in->now_ms, f->bucket_ms);
    void *inner = bucket_for(f, wp, e, in->stats);
    f->vt->update(f, inner, in);
}

void window_read(const feature *f, const void *st, int64_t query_ms, jsonw *w) {
    win *const *wp = st;
    win *wn = *wp;
    size_t stride = stride_of(f);
    uint32_t act[WINDOW_MAX_BUCKETS], na = 0;
    if (wn) {
        for (uint32_t i = 0; i < wn->n; i++) {
            if (!window_active(query_ms, *ent_epoch(wn, stride, i), f->window_ms)) continue;
            /* insertion sort by epoch: merge oldest first (first-observed wins ties) */
            uint32_t j = na++;
            while (j > 0 && *ent_epoch(wn, stride, act[j - 1]) > *ent_epoch(wn, stride, i)) {
                act[j] = act[j - 1];
                j--;
            }
            act[j] = i;
        }
    }
    if (na == 1) {
        f->vt->read(f, ent_state(wn, stride, act[0]), query_ms, w);
        return;
    }
    _Alignas(16) unsigned char tmp[OP_MAX_STATE];
    init_inner(f, tmp);
    for (uint32_t i = 0; i < na; i++) f->vt->merge(f, tmp, ent_state(wn, stride, act[i]));
    f->vt->read(f, tmp, query_ms, w);
    destroy_inner(f, tmp);
}

void window_destroy(const feature *f, void *st) {
    win **wp = st;
    win *w = *wp;
    if (!w) return;
    size_t stride = stride_of(f);
    for (uint32_t i = 0; i < w->n; i++) destroy_inner(f, ent_state(w, stride, i));
    free(w);
    *wp = NULL;
}

size_t window_nbuckets(const void *st) {
    win *const *wp = st;
    return *wp ? (*wp)->n : 0;
}

void window_encode(const feature *f, const void *st, bv_buf *out) {
    win *const *wp = st;
    win *w = *wp;
    size_t stride = stride_of(f);
    uint32_t n = w ? w->n : 0;
    cod_put_u8(out, (uint8_t)n);
    for (uint32_t i = 0; i < n; i++) {
        cod_put_i64(out, *ent_epoch(w, stride, i));
        f->vt->encode(f, ent_state(w, stride, i), out);
    }
}

int window_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    win **wp = st;
    const uint8_t *q = *p;
    uint8_t n;
    window_destroy(f, st);
    if (cod_get_u8(&q, end, &n) < 0 || n > WINDOW_MAX_BUCKETS) return -1;
    size_t stride = stride_of(f);
    for (uint32_t i = 0; i < n; i++) {
        int64_t e;
        if (cod_get_i64(&q, end, &e) < 0) goto err;
        win *w = *wp;
        if (w)
            for (uint32_t j = 0; j < w->n; j++)
                if (*ent_epoch(w, stride, j) == e) goto err;
        void *inner = bucket_for(f, wp, e, NULL);
        if (f->vt->decode(f, inner, &q, end) < 0) goto err;
    }
    *p = q;
    return 0;
err:
    window_destroy(f, st);
    return -1;
}
