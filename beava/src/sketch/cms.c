/*
 * cms.c - Count-Min Sketch (see cms.h).
 */
#include "cms.h"

static inline uint32_t cell_of(uint64_t h, uint32_t r) {
    uint32_t h1 = (uint32_t)h, h2 = (uint32_t)(h >> 32) | 1u;
    return (h1 + r * h2) & (CMS_WIDTH - 1);
}

void cms_add(cms *s, uint64_t h, uint64_t c) {
    for (uint32_t r = 0; r < CMS_DEPTH; r++) {
        uint64_t *x = &s->cell[r][cell_of(h, r)];
        *x = (*x > UINT64_MAX - c) ? UINT64_MAX : *x + c;
    }
}

void cms_prefetch(const cms *s, uint64_t h) {
    for (uint32_t r = 0; r < CMS_DEPTH; r++) __builtin_prefetch(&s->cell[r][cell_of(h, r)]);
}

uint64_t cms_estimate(const cms *s, uint64_t h) {
    uint64_t m = UINT64_MAX;
    for (uint32_t r = 0; r < CMS_DEPTH; r++) {
        uint64_t x = s->cell[r][cell_of(h, r)];
        if (x < m) m = x;
    }
    return m;
}

void cms_merge(cms *dst, const cms *src) {
    for (uint32_t r = 0; r < CMS_DEPTH; r++)
        for (uint32_t i = 0; i < CMS_WIDTH; i++) {
            uint64_t a = dst->cell[r][i], b = src->cell[r][i];
            dst->cell[r][i] = (a > UINT64_MAX - b) ? UINT64_MAX : a + b;
        }
}
