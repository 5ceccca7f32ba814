/*
 * recency.h - the state shared by the recency kinds that remember one arrival time:
 * first_seen, age and has_seen keep the first matched event's now_ms; last_seen,
 * time_since and first_seen_in_window keep the latest one (reference-pipelines.md
 * §2.4 "Recency"). 16 bytes, all-zero = never matched.
 *
 * Snapshot form: u8 has (0/1), i64 t. Decode rejects has > 1 and a time without has.
 * Query-time differences saturate instead of overflowing (recency_since).
 */
#ifndef BEAVA_OPS_RECENCY_H
#define BEAVA_OPS_RECENCY_H

#include <stdint.h>
#include "op.h"
#include "codec.h"

typedef struct recency {
    int64_t t;                /* now_ms of the first / latest matched event */
    int64_t has;              /* 1 once an event matched */
} recency;

static inline void recency_first(void *st, int64_t now_ms) {
    recency *r = st;
    if (!r->has) { r->t = now_ms; r->has = 1; }
}

static inline void recency_last(void *st, int64_t now_ms) {
    recency *r = st;
    r->t = now_ms;
    r->has = 1;
}

/* max(0, q - t), saturating at INT64_MAX. */
static inline int64_t recency_since(int64_t q, int64_t t) {
    int64_t d;
    if (__builtin_sub_overflow(q, t, &d)) return q > t ? INT64_MAX : 0;
    return d > 0 ? d : 0;
}

static inline void recency_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const recency *r = st;
    cod_put_u8(out, r->has ? 1 : 0);
    cod_put_i64(out, r->t);
}

static inline int recency_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    const uint8_t *q = *p;
    uint8_t has;
    int64_t t;
    if (cod_get_u8(&q, end, &has) < 0 || cod_get_i64(&q, end, &t) < 0) return -1;
    if (has > 1 || (!has && t != 0)) return -1;
    recency *r = st;
    r->t = t;
    r->has = has;
    *p = q;
    return 0;
}

#endif
