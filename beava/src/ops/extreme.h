/*
 * extreme.h - the comparison rule of min and max: a
 * candidate replaces the held value only when both have the same kind and the
 * candidate is strictly better (first observed wins ties). Ordered kinds are I64, F64
 * and Str (bytewise); Bool and lists/maps never replace; an empty slot takes anything.
 * Numeric values have already been coerced to the field's declared type (feature.c), so
 * an f64 field holding 10 and 10.5 compares them as numbers.
 */
#ifndef BEAVA_OPS_EXTREME_H
#define BEAVA_OPS_EXTREME_H

#include <string.h>
#include "opval.h"

/* <0, 0, >0 for cand vs cur; 0 also when not comparable. *ok = comparable. */
static inline int extreme_cmp(const op_val *cur, const bv_value *cand, bool *ok) {
    *ok = false;
    if (cur->kind != (uint8_t)cand->kind) return 0;
    switch (cand->kind) {
    case BV_I64: *ok = true; return cand->u.i < cur->u.i ? -1 : cand->u.i > cur->u.i;
    case BV_F64: *ok = true; return cand->u.f < cur->u.f ? -1 : cand->u.f > cur->u.f;
    case BV_STR: {
        size_t lc = opval_len(cur);
        size_t n = cand->u.s.len < lc ? cand->u.s.len : lc;
        int c = n ? memcmp(cand->u.s.ptr, opval_bytes(cur), n) : 0;
        *ok = true;
        if (c) return c < 0 ? -1 : 1;
        return cand->u.s.len < lc ? -1 : cand->u.s.len > lc;
    }
    default: return 0;
    }
}

/* dir < 0: keep the minimum; dir > 0: keep the maximum. */
static inline void extreme_offer(op_val *cur, const bv_value *cand, int dir) {
    if (cur->kind == BV_NULL) { opval_set(cur, cand); return; }
    bool ok;
    int c = extreme_cmp(cur, cand, &ok);
    if (ok && ((dir < 0 && c < 0) || (dir > 0 && c > 0))) opval_set(cur, cand);
}

static inline void extreme_merge(op_val *dst, const op_val *src, int dir) {
    if (src->kind == BV_NULL) return;
    if (dst->kind == BV_NULL) { opval_copy(dst, src); return; }
    if (src->kind == BV_JSON) return;
    bv_value v = opval_view(src);
    extreme_offer(dst, &v, dir);
}

#endif
