/*
 * ring.h - vtable pieces shared by the "newest n values" kinds (last_n, lag,
 * most_recent_n): a valbuf ring whose capacity comes from the feature.
 */
#ifndef BEAVA_OPS_RING_H
#define BEAVA_OPS_RING_H

#include "op.h"
#include "valbuf.h"

static inline void ring_destroy(const feature *f, void *st) {
    (void)f;
    valbuf_free(st);
}

static inline void ring_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    valbuf_encode(out, st);
}

/* `limit` is the ring capacity for this feature. */
static inline int ring_decode(void *st, const uint8_t **p, const uint8_t *end, uint32_t limit) {
    valbuf_free(st);
    return valbuf_decode(p, end, st, limit);
}

#endif
