/*
 * decay.h - shared pieces of the decay kinds (ewma, ewvar, ew_zscore, decayed_sum,
 * decayed_count; reference-pipelines.md §2.4): lambda = ln 2 / half_life, decay applied
 * only between events (a query returns the value as of the last matching event), late or
 * same-ms events never move time backwards. A `window` on these kinds is accepted and
 * ignored, as in the reference.
 */
#ifndef BEAVA_OPS_DECAY_H
#define BEAVA_OPS_DECAY_H

#include <math.h>
#include "op.h"
#include "../sketch/codec.h"

static inline double decay_lambda(const feature *f) {
    return M_LN2 / (double)f->p.half_life_ms;
}

/* alpha = 1 - e^(-lambda dt) for dt > 0, else 0 (the caller decides what 0 means). */
static inline double decay_alpha(const feature *f, int64_t now, int64_t last) {
    int64_t dt;
    if (__builtin_sub_overflow(now, last, &dt) || dt <= 0) return 0;
    return 1.0 - exp(-(double)dt * decay_lambda(f));
}

/* e^(-lambda max(dt, 0)) */
static inline double decay_factor(const feature *f, int64_t now, int64_t last) {
    int64_t dt;
    if (__builtin_sub_overflow(now, last, &dt)) dt = now > last ? INT64_MAX : 0;
    if (dt <= 0) return 1.0;
    return exp(-(double)dt * decay_lambda(f));
}

#endif
