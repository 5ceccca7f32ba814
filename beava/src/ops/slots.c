/*
 * slots.c - sparse-then-dense cell arrays (see slots.h).
 *
 * Memory: header {u32 n, u32 cap} (cap == SLOTS_DENSE marks the dense form; n counts
 * sparse entries and is unused when dense), then either
 * cap entries of (8 + vsize) bytes or ncells values of vsize bytes. The sparse form
 * moves to dense when growing it would take at least the dense size, so an array never
 * costs more than the dense one it replaces plus the 8-byte header.
 */
#include "slots.h"

#include <string.h>
#include "xalloc.h"

#define SLOTS_DENSE UINT32_MAX
#define SLOTS_KEY_BYTES 8          /* u32 key + u32 pad keep the value 8-byte aligned */

struct slots {
    uint32_t n, cap;
    _Alignas(8) unsigned char d[];
};

static size_t stride(const slots_shape *sh) { return SLOTS_KEY_BYTES + sh->vsize; }

static uint32_t *ent_key(const slots *s, const slots_shape *sh, uint32_t i) {
    return (uint32_t *)(void *)(s->d + (size_t)i * stride(sh));
}

static void *ent_val(const slots *s, const slots_shape *sh, uint32_t i) {
    return (void *)(s->d + (size_t)i * stride(sh) + SLOTS_KEY_BYTES);
}

/* First entry index whose key is >= key (sparse form). */
static uint32_t lower_bound(const slots *s, const slots_shape *sh, uint32_t key) {
    uint32_t lo = 0, hi = s->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (*ent_key(s, sh, mid) < key) lo = mid + 1; else hi = mid;
    }
    return lo;
}

bool slots_is_dense(const slots *s) { return s && s->cap == SLOTS_DENSE; }

void *slots_get(const slots *s, const slots_shape *sh, uint32_t key) {
    if (!s || key >= sh->ncells) return NULL;
    if (s->cap == SLOTS_DENSE) return (void *)(s->d + (size_t)key * sh->vsize);
    uint32_t i = lower_bound(s, sh, key);
    return i < s->n && *ent_key(s, sh, i) == key ? ent_val(s, sh, i) : NULL;
}

static slots *to_dense(slots *s, const slots_shape *sh) {
    slots *d = bv_xcalloc(1, sizeof *d + (size_t)sh->ncells * sh->vsize);
    d->cap = SLOTS_DENSE;
    for (uint32_t i = 0; s && i < s->n; i++)
        memcpy(d->d + (size_t)*ent_key(s, sh, i) * sh->vsize, ent_val(s, sh, i), sh->vsize);
    return d;
}

void *slots_put(slots **sp, const slots_shape *sh, uint32_t key) {
    slots *s = *sp;
    if (key >= sh->ncells) return NULL;
    if (s && s->cap == SLOTS_DENSE) return s->d + (size_t)key * sh->vsize;
    uint32_t i = s ? lower_bound(s, sh, key) : 0;
    if (s && i < s->n && *ent_key(s, sh, i) == key) return ent_val(s, sh, i);
    if (!s || s->n == s->cap) {
        uint32_t cap = s ? s->cap * 2 : 1;
        if ((size_t)cap * stride(sh) >= (size_t)sh->ncells * sh->vsize) {
            slots *d = to_dense(s, sh);
            free(s);
            *sp = d;
            return d->d + (size_t)key * sh->vsize;
        }
        slots *g = bv_xrealloc(s, sizeof *g + (size_t)cap * stride(sh));
        if (!s) g->n = 0;
        g->cap = cap;
        *sp = s = g;
    }
    unsigned char *at = (unsigned char *)ent_key(s, sh, i);
    memmove(at + stride(sh), at, (size_t)(s->n - i) * stride(sh));
    memset(at, 0, stride(sh));
    *(uint32_t *)(void *)at = key;
    s->n++;
    return at + SLOTS_KEY_BYTES;
}

void *slots_next(const slots *s, const slots_shape *sh, uint32_t *pos, uint32_t *key) {
    if (!s) return NULL;
    if (s->cap == SLOTS_DENSE) {
        if (*pos >= sh->ncells) return NULL;
        *key = *pos;
        return (void *)(s->d + (size_t)(*pos)++ * sh->vsize);
    }
    if (*pos >= s->n) return NULL;
    *key = *ent_key(s, sh, *pos);
    return ent_val(s, sh, (*pos)++);
}

void slots_free(slots **sp) {
    free(*sp);
    *sp = NULL;
}
