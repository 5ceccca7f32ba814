/*
 * codec.h - little-endian put/get helpers for operator and sketch state encoding
 * (snapshots).
 *
 * Writers append to a bv_buf. Readers take a cursor and an end pointer, never read at
 * or past `end`, and return -1 when fewer bytes remain than requested (the cursor is
 * then left unchanged). Doubles travel as their IEEE-754 bit pattern.
 */
#ifndef BEAVA_SKETCH_CODEC_H
#define BEAVA_SKETCH_CODEC_H

#include <stdint.h>
#include <string.h>
#include "../jsonw.h"

static inline void cod_put_u8(bv_buf *b, uint8_t v) { bv_buf_put(b, &v, 1); }

static inline void cod_put_u32(bv_buf *b, uint32_t v) {
    uint8_t x[4];
    for (int i = 0; i < 4; i++) x[i] = (uint8_t)(v >> (8 * i));
    bv_buf_put(b, x, 4);
}

static inline void cod_put_u64(bv_buf *b, uint64_t v) {
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
    bv_buf_put(b, x, 8);
}

static inline void cod_put_i64(bv_buf *b, int64_t v) { cod_put_u64(b, (uint64_t)v); }

static inline void cod_put_f64(bv_buf *b, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    cod_put_u64(b, u);
}

static inline int cod_get_u8(const uint8_t **p, const uint8_t *end, uint8_t *v) {
    if (end - *p < 1) return -1;
    *v = **p;
    *p += 1;
    return 0;
}

static inline int cod_get_u32(const uint8_t **p, const uint8_t *end, uint32_t *v) {
    if (end - *p < 4) return -1;
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) x |= (uint32_t)(*p)[i] << (8 * i);
    *v = x;
    *p += 4;
    return 0;
}

static inline int cod_get_u64(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    if (end - *p < 8) return -1;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x |= (uint64_t)(*p)[i] << (8 * i);
    *v = x;
    *p += 8;
    return 0;
}

static inline int cod_get_i64(const uint8_t **p, const uint8_t *end, int64_t *v) {
    uint64_t u;
    if (cod_get_u64(p, end, &u) < 0) return -1;
    *v = (int64_t)u;
    return 0;
}

static inline int cod_get_f64(const uint8_t **p, const uint8_t *end, double *v) {
    uint64_t u;
    if (cod_get_u64(p, end, &u) < 0) return -1;
    memcpy(v, &u, 8);
    return 0;
}

/* Borrow n raw bytes (no copy). */
static inline int cod_get_bytes(const uint8_t **p, const uint8_t *end, size_t n, const uint8_t **out) {
    if ((size_t)(end - *p) < n) return -1;
    *out = *p;
    *p += n;
    return 0;
}

#endif
