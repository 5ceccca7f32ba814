/*
 * counter.h - saturating int64 counters for operator state.
 *
 * Counts (values seen, matched events, changes) are int64. Live updates never come near
 * the bound (2^63 events), but a decoded state may carry any non-negative count (a
 * snapshot with a valid CRC can be crafted), and windows merge bucket counts by adding
 * them. Saturating at INT64_MAX keeps that arithmetic defined (signed overflow is
 * undefined behaviour in C) for every operator that counts.
 */
#ifndef BEAVA_OPS_COUNTER_H
#define BEAVA_OPS_COUNTER_H

#include <stdint.h>

/* a + b for counts (both >= 0 in every state the decoders accept), saturating. */
static inline int64_t cnt_add(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) return b < 0 ? INT64_MIN : INT64_MAX;
    return r;
}

/* ++*c, saturating; returns the value before (as c++ would). */
static inline int64_t cnt_inc(int64_t *c) {
    int64_t old = *c;
    if (old < INT64_MAX) *c = old + 1;
    return old;
}

#endif
