/*
 * valring.h - a bounded, lazily grown sequence of owned values (op_val), shared by the
 * raw-value buffer kinds: first_n, last_n, lag, most_recent_n (a ring: once `limit`
 * values are held, each new one overwrites the oldest) and reservoir_sample (slots
 * replaced by index).
 *
 * Shape: 24 bytes, all-zero = empty. Storage grows by doubling up to `limit` as values
 * arrive, so a large limit costs nothing until values come. While len < limit the
 * values sit in arrival order at v[0..len) and head is 0; once full, head is the index
 * of the oldest value. The limit is not stored: it is the kind's parameter, passed in
 * by the caller on every call (the same value for the life of the state).
 *
 * Snapshot form: u32 count, then count op_vals oldest -> newest (opval_encode). Decode
 * rejects more than `limit` values and null values; a decoded full ring has head 0.
 */
#ifndef BEAVA_OPS_VALRING_H
#define BEAVA_OPS_VALRING_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "opval.h"
#include "codec.h"

typedef struct valring {
    op_val *v;
    uint32_t len, cap;        /* values held / slots allocated */
    uint32_t head;            /* index of the oldest value once len == limit */
    uint32_t pad;
} valring;

/* Make room for one more value (len < limit). */
static inline void valring_grow(valring *r, uint32_t limit) {
    if (r->len < r->cap) return;
    uint32_t nc = r->cap ? r->cap * 2 : 4;
    if (nc > limit || nc < r->cap) nc = limit;
    op_val *nv = realloc(r->v, (size_t)nc * sizeof *nv);
    if (!nv) abort();
    memset(nv + r->cap, 0, (size_t)(nc - r->cap) * sizeof *nv);
    r->v = nv;
    r->cap = nc;
}

/* Append while fewer than limit are held (first_n, reservoir fill). */
static inline void valring_append(valring *r, uint32_t limit, const bv_value *v) {
    if (r->len >= limit) return;
    valring_grow(r, limit);
    opval_set(&r->v[r->len++], v);
}

/* Ring push: append, or overwrite the oldest once limit values are held. */
static inline void valring_push(valring *r, uint32_t limit, const bv_value *v) {
    if (r->len < limit) {
        valring_append(r, limit, v);
        return;
    }
    opval_set(&r->v[r->head], v);
    r->head = r->head + 1 == limit ? 0 : r->head + 1;
}

/* Memory hint for valring_push (ring) or valring_append (not ring) at limit: the slot it
 * would write, when that needs no growth. Reads r, changes nothing. */
static inline void valring_prefetch(const valring *r, uint32_t limit, bool ring) {
    if (!r->v) return;
    if (r->len < limit) { if (r->len < r->cap) __builtin_prefetch(&r->v[r->len]); }
    else if (ring) __builtin_prefetch(&r->v[r->head]);
}

/* The i-th oldest value, i < len. */
static inline const op_val *valring_at(const valring *r, uint32_t i) {
    uint32_t j = r->head + i;
    if (j >= r->len) j -= r->len;
    return &r->v[j];
}

static inline void valring_free(valring *r) {
    for (uint32_t i = 0; i < r->cap; i++) opval_clear(&r->v[i]);
    free(r->v);
    memset(r, 0, sizeof *r);
}

/* JSON array, oldest -> newest. */
static inline void valring_write(const valring *r, jsonw *w) {
    jsonw_arr_begin(w);
    for (uint32_t i = 0; i < r->len; i++) opval_write(valring_at(r, i), w);
    jsonw_arr_end(w);
}

static inline void valring_encode(bv_buf *out, const valring *r) {
    cod_put_u32(out, r->len);
    for (uint32_t i = 0; i < r->len; i++) opval_encode(out, valring_at(r, i));
}

/* Replace *r with the decoded sequence. Returns 0, or -1 (r left as it was). */
static inline int valring_decode(const uint8_t **p, const uint8_t *end, valring *r, uint32_t limit) {
    const uint8_t *q = *p;
    uint32_t n;
    valring t;
    memset(&t, 0, sizeof t);
    if (cod_get_u32(&q, end, &n) < 0 || n > limit) return -1;
    /* every value takes at least one byte: refuse counts the input cannot hold */
    if ((size_t)(end - q) < n) return -1;
    if (n) {
        t.v = calloc(n, sizeof *t.v);
        if (!t.v) abort();
        t.cap = n;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (opval_decode(&q, end, &t.v[i]) < 0 || t.v[i].kind == BV_NULL) {
            valring_free(&t);
            return -1;
        }
        t.len++;
    }
    valring_free(r);
    *r = t;
    *p = q;
    return 0;
}

/* Three vtables per kind for OPF_COERCE kinds: the base and its f64 / i64 coercing
 * variants (feature_compile picks one from the field's declared type). The variadic
 * part is the designated initialisers shared by all three. */
#define OP_COERCING_VTABLES(sym, ...)                                                     \
    static const struct op_vtable sym##_as_f64, sym##_as_i64;                             \
    const struct op_vtable sym = { __VA_ARGS__, .coerce = OP_COERCE_NONE,                 \
                                   .as_f64 = &sym##_as_f64, .as_i64 = &sym##_as_i64 };    \
    static const struct op_vtable sym##_as_f64 = { __VA_ARGS__, .coerce = OP_COERCE_F64 }; \
    static const struct op_vtable sym##_as_i64 = { __VA_ARGS__, .coerce = OP_COERCE_I64 }

#endif
