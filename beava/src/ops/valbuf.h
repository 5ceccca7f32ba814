/*
 * valbuf.h - a bounded list of owned values (op_val), used as an append-only list
 * (first_n, reservoir_sample) or as a ring keeping the newest `limit` values (last_n,
 * lag, most_recent_n). 16 bytes, all-zero = empty; the array grows by doubling up to
 * `limit`, so a large n costs memory only as values arrive. Ring order: once n == limit
 * the oldest value is at `head`; before that, head is 0 and the list is in order.
 */
#ifndef BEAVA_OPS_VALBUF_H
#define BEAVA_OPS_VALBUF_H

#include <stdlib.h>
#include <string.h>
#include "opval.h"
#include "../sketch/codec.h"

typedef struct valbuf {
    op_val *v;
    uint32_t n;               /* values held */
    uint32_t head;            /* index of the oldest when full */
} valbuf;

static inline uint32_t valbuf_cap(const valbuf *b) {
    uint32_t c = 0;
    if (b->v) { c = 2; while (c < b->n) c *= 2; }
    return c;
}

/* A fresh zeroed slot at the end (the caller fills it). */
static inline op_val *valbuf_slot(valbuf *b) {
    uint32_t cap = valbuf_cap(b);
    if (b->n == cap) {
        uint32_t nc = cap ? cap * 2 : 2;
        b->v = realloc(b->v, (size_t)nc * sizeof *b->v);
        if (!b->v) abort();
        memset(&b->v[b->n], 0, (size_t)(nc - b->n) * sizeof *b->v);
    }
    return &b->v[b->n++];
}

/* Append while n < limit (returns false when full). */
static inline bool valbuf_append(valbuf *b, const bv_value *x, uint32_t limit) {
    if (b->n >= limit) return false;
    opval_set(valbuf_slot(b), x);
    return true;
}

/* Ring push: append until `limit` values are held, then overwrite the oldest. */
static inline void valbuf_push(valbuf *b, const bv_value *x, uint32_t limit) {
    if (valbuf_append(b, x, limit)) return;
    opval_set(&b->v[b->head], x);
    b->head = (b->head + 1) % b->n;
}

/* i-th value, oldest first. */
static inline const op_val *valbuf_at(const valbuf *b, uint32_t i) {
    return &b->v[(b->head + i) % b->n];
}

static inline void valbuf_write(const valbuf *b, jsonw *w) {
    jsonw_arr_begin(w);
    for (uint32_t i = 0; i < b->n; i++) opval_write(valbuf_at(b, i), w);
    jsonw_arr_end(w);
}

static inline void valbuf_free(valbuf *b) {
    for (uint32_t i = 0; i < b->n; i++) opval_clear(&b->v[i]);
    free(b->v);
    memset(b, 0, sizeof *b);
}

static inline void valbuf_encode(bv_buf *out, const valbuf *b) {
    cod_put_u32(out, b->n);
    cod_put_u32(out, b->head);
    for (uint32_t i = 0; i < b->n; i++) opval_encode(out, &b->v[i]);
}

/* Into an empty valbuf; n must be <= limit, head < n and head == 0 unless full. */
static inline int valbuf_decode(const uint8_t **p, const uint8_t *end, valbuf *b, uint32_t limit) {
    uint32_t n, head;
    if (cod_get_u32(p, end, &n) < 0 || cod_get_u32(p, end, &head) < 0) return -1;
    if (n > limit || (head && head >= n) || (head && n != limit)) return -1;
    if ((size_t)(end - *p) < n) return -1;         /* >= 1 byte per value */
    for (uint32_t i = 0; i < n; i++) {
        op_val tmp;
        memset(&tmp, 0, sizeof tmp);
        if (opval_decode(p, end, &tmp) < 0) return -1;
        *valbuf_slot(b) = tmp;                     /* takes ownership */
    }
    b->head = head;
    return 0;
}

#endif
