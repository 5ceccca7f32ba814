/*
 * opval.h - an owned copy of a field value inside operator state, plus the typed value
 * hash and the value order shared by the operators.
 *
 * bv_value borrows its strings from the request; operator state outlives the request,
 * so raw-value kinds (min, max, first, last, top_k keys, ...) keep an op_val: 16 bytes,
 * strings copied, lists/maps kept as their rendered JSON text (BV_JSON).
 *
 * Layout (a union of two views of the same 16 bytes):
 *   byte 0       kind (bv_kind; BV_NULL = 0 is "empty", so an all-zero op_val is empty)
 *   byte 1       sso: for text, 1 + its length when the text is inline, 0 when on the heap
 *   inline text  bytes 2..15 hold up to OPVAL_INLINE_MAX (14) bytes: ids such as
 *                "k00000000", country and currency codes... cost no allocation
 *   heap text    bytes 4..7 its u32 length, bytes 8..15 the malloc'd pointer
 *   numbers      bytes 8..15 (u.i / u.f / u.b)
 * Text is inline exactly when it is at most OPVAL_INLINE_MAX bytes (every writer goes
 * through one place in opval.c), so two equal texts always have the same form. Read
 * text only with opval_bytes() and opval_len(), never through the fields. The bytes
 * are not NUL-terminated. An op_val holds no pointer into itself (it may be moved with
 * memcpy like every operator state), but a view or opval_bytes() of an inline value
 * points into it: do not keep one across a move of the op_val.
 */
#ifndef BEAVA_OPS_OPVAL_H
#define BEAVA_OPS_OPVAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include "jsonw.h"
#include "value.h"

#define OPVAL_SIZE 16
#define OPVAL_HEAD 2                               /* kind, sso */
#define OPVAL_INLINE_MAX (OPVAL_SIZE - OPVAL_HEAD) /* 14 */

typedef union op_val {
    struct {
        uint8_t kind;             /* bv_kind */
        uint8_t sso;              /* text: 1 + inline length, 0 = heap (see above) */
        uint8_t pad[2];
        uint32_t heap_len;        /* heap text only: its length */
        union { int64_t i; double f; bool b; char *heap; } u;
    };
    struct {
        uint8_t head[OPVAL_HEAD]; /* kind, sso as above */
        char text[OPVAL_INLINE_MAX];
    } in;                         /* inline text, over pad, heap_len and u */
} op_val;

_Static_assert(sizeof(op_val) == OPVAL_SIZE, "op_val is 16 bytes");

/* Whether a BV_STR / BV_JSON value's text is inline. */
static inline bool opval_inline(const op_val *v) { return v->sso != 0; }
/* The byte length of a BV_STR / BV_JSON value's text (meaningless for other kinds). */
static inline uint32_t opval_len(const op_val *v) {
    return v->sso ? (uint32_t)v->sso - 1 : v->heap_len;
}
/* The text of a BV_STR / BV_JSON value (opval_len bytes, not NUL-terminated). */
static inline const char *opval_bytes(const op_val *v) { return v->sso ? v->in.text : v->u.heap; }
/* Whether a BV_STR / BV_JSON value's text is the n bytes at p (p may be NULL when n is 0). */
static inline bool opval_text_eq(const op_val *v, const char *p, size_t n) {
    return opval_len(v) == n && (n == 0 || memcmp(opval_bytes(v), p, n) == 0);
}

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
