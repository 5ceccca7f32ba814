/*
 * tstate.h - a single remembered arrival time (int64 ms, INT64_MIN = none), the state
 * of the recency kinds first_seen, last_seen, age, has_seen, time_since and
 * first_seen_in_window. 8 bytes.
 */
#ifndef BEAVA_OPS_TSTATE_H
#define BEAVA_OPS_TSTATE_H

#include "op.h"
#include "../sketch/codec.h"

#define TSTATE_NONE INT64_MIN

static inline void tstate_init(const feature *f, void *st) {
    (void)f;
    *(int64_t *)st = TSTATE_NONE;
}

static inline void tstate_first(const feature *f, void *st, const op_input *in) {
    (void)f;
    if (*(int64_t *)st == TSTATE_NONE) *(int64_t *)st = in->now_ms;
}

static inline void tstate_last(const feature *f, void *st, const op_input *in) {
    (void)f;
    *(int64_t *)st = in->now_ms;
}

/* max(0, q - t), saturating. */
static inline int64_t tstate_elapsed(int64_t q, int64_t t) {
    int64_t d;
    if (__builtin_sub_overflow(q, t, &d)) return q > t ? INT64_MAX : 0;
    return d > 0 ? d : 0;
}

static inline void tstate_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    cod_put_i64(out, *(const int64_t *)st);
}

static inline int tstate_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    return cod_get_i64(p, end, (int64_t *)st);
}

#define TSTATE_VTABLE(sym, opname, fl, upd, rd)                                          \
    const struct op_vtable sym = {                                                      \
        .name = opname, .flags = (fl), .state_size = sizeof(int64_t),                   \
        .init = tstate_init, .update = upd, .read = rd,                                 \
        .encode = tstate_encode, .decode = tstate_decode,                               \
    }

#endif
