/*
 * valstate.h - vtable helpers for kinds whose whole state is one op_val (min, max,
 * first, last): read writes the value (null when empty), encode/decode use the op_val
 * snapshot form, destroy frees a copied string.
 */
#ifndef BEAVA_OPS_VALSTATE_H
#define BEAVA_OPS_VALSTATE_H

#include "op.h"
#include "opval.h"

static inline void valstate_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    opval_write(st, w);
}

static inline void valstate_destroy(const feature *f, void *st) {
    (void)f;
    opval_clear(st);
}

static inline void valstate_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    opval_encode(out, st);
}

static inline int valstate_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    return opval_decode(p, end, st);
}

/* Three vtables per kind: the base and its f64 / i64 coercing variants. */
#define VALSTATE_VTABLES(sym, opname, fl, upd, mrg)                                   \
    static const struct op_vtable sym##_as_f64, sym##_as_i64;                          \
    const struct op_vtable sym = {                                                     \
        .name = opname, .flags = (fl), .state_size = sizeof(op_val),                   \
        .update = upd, .merge = mrg, .read = valstate_read,                            \
        .destroy = valstate_destroy, .encode = valstate_encode,                        \
        .decode = valstate_decode, .coerce = OP_COERCE_NONE,                           \
        .as_f64 = &sym##_as_f64, .as_i64 = &sym##_as_i64,                              \
    };                                                                                 \
    static const struct op_vtable sym##_as_f64 = {                                     \
        .name = opname, .flags = (fl), .state_size = sizeof(op_val),                   \
        .update = upd, .merge = mrg, .read = valstate_read,                            \
        .destroy = valstate_destroy, .encode = valstate_encode,                        \
        .decode = valstate_decode, .coerce = OP_COERCE_F64,                            \
    };                                                                                 \
    static const struct op_vtable sym##_as_i64 = {                                     \
        .name = opname, .flags = (fl), .state_size = sizeof(op_val),                   \
        .update = upd, .merge = mrg, .read = valstate_read,                            \
        .destroy = valstate_destroy, .encode = valstate_encode,                        \
        .decode = valstate_decode, .coerce = OP_COERCE_I64,                            \
    }

#endif
