/*
 * opval.h - an owned copy of a field value inside operator state, plus the typed value
 * hash and the value order shared by the operators.
 *
 * bv_value borrows its strings from the request; operator state outlives the request,
 * so raw-value kinds (min, max, first, last, top_k keys, ...) keep an op_val: 16 bytes,
 * strings copied, lists/maps kept as their rendered JSON text (BV_JSON). Text of at most
 * OPVAL_INLINE_MAX bytes (ids, country and currency codes...) is held inside the op_val
 * itself (`inl`), longer text on the heap: read it with opval_bytes(), never u.s
 * directly. The bytes are not NUL-terminated. An op_val holds no pointer into itself
 * (it may be moved with memcpy like every operator state), but a view or opval_bytes()
 * of an inline value points into it: do not keep one across a move of the op_val.
 * kind == BV_NULL is "empty"; an all-zero op_val is empty.
 */
#ifndef BEAVA_OPS_OPVAL_H
#define BEAVA_OPS_OPVAL_H

#include <stdbool.h>
#include <stdint.h>
#include "jsonw.h"
#include "value.h"

#define OPVAL_INLINE_MAX 8

typedef struct op_val {
    uint8_t kind;             /* bv_kind */
    uint8_t inl;              /* BV_STR / BV_JSON: the bytes are in u.in */
    uint8_t pad[2];
    uint32_t len;             /* BV_STR / BV_JSON byte length */
    union { int64_t i; double f; bool b; char *s; char in[OPVAL_INLINE_MAX]; } u;
} op_val;

/* The text of a BV_STR / BV_JSON value (len bytes, not NUL-terminated). */
static inline const char *opval_bytes(const op_val *v) { return v->inl ? v->u.in : v->u.s; }

/* Replace *d with a copy of v (any kind; BV_NULL empties). */
void opval_set(op_val *d, const bv_value *v);
void opval_copy(op_val *d, const op_val *s);
void opval_clear(op_val *d);
/* A borrowed bv_value view (BV_JSON is presented as BV_STR of its text). */
bv_value opval_view(const op_val *v);
void opval_write(const op_val *v, jsonw *w);

/* Typed 64-bit hash (XXH3): the kind is part of the hash, so I64 5 != F64 5.0.
 * -0.0 hashes as 0.0 and every NaN alike. Lists/maps hash their rendered text. */
uint64_t opval_hash(const bv_value *v);

/* Same kind and value (bytewise strings; F64 by ==, so NaN != NaN except bitwise-equal
 * NaN for map keys: opval_same_key compares F64 by bit pattern). */
bool opval_same_key(const op_val *a, const bv_value *b);

/* Total order of top_k output: strings < ints < floats < bools; within a kind strings
 * bytewise, numbers ascending (NaN last), false < true. */
int opval_order(const op_val *a, const op_val *b);

/* Numeric coercion to a declared field type (used before min/max/first/last and the
 * value-keeping ops compare or store a value): WT_F64 turns I64 into F64;
 * WT_I64 turns an integral, in-range F64 into I64. Anything else is returned as is. */
bv_value opval_coerce(const bv_value *v, int wtype);

/* Snapshot form: u8 kind, then i64/f64 (8 bytes), bool (1 byte), or u32 len + bytes. */
void opval_encode(bv_buf *out, const op_val *v);
int opval_decode(const uint8_t **p, const uint8_t *end, op_val *v);

#endif
