/*
 * codec.h - the one little-endian byte codec of every binary format beava writes (WAL
 * segments and records, snapshot files and bodies, event records, operator and sketch
 * states). Fixed-width integers are stored little-endian whatever the host; doubles as
 * their IEEE-754 bits in a u64.
 *
 * Three shapes of the same rules:
 *   codec_put* / codec_get*   fixed offsets in a byte array (headers);
 *   codec_rd*                 a cursor that never reads past its end: a short read sets
 *                             `bad` and returns zeros, checked once at the end of a block;
 *   cod_put_* / cod_get_*     appending to a bv_buf, and reading with (cursor, end),
 *                             returning -1 on a short read with the cursor unchanged
 *                             (operator and sketch states).
 */
#ifndef BEAVA_CODEC_H
#define BEAVA_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "jsonw.h"

static inline void codec_put16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static inline void codec_put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void codec_put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint16_t codec_get16(const unsigned char *p) { return (uint16_t)(p[0] | (uint16_t)p[1] << 8); }
static inline uint32_t codec_get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t codec_get64(const unsigned char *p) {
    return (uint64_t)codec_get32(p) | (uint64_t)codec_get32(p + 4) << 32;
}
static inline uint64_t codec_f64_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}
static inline double codec_bits_f64(uint64_t u) {
    double d;
    memcpy(&d, &u, 8);
    return d;
}

typedef struct codec_rd {
    const unsigned char *p, *end;
    bool bad;
} codec_rd;

static inline codec_rd codec_rd_init(const void *p, size_t n) {
    codec_rd r = { (const unsigned char *)p, (const unsigned char *)p + n, false };
    return r;
}
static inline size_t codec_left(const codec_rd *r) { return (size_t)(r->end - r->p); }
/* Advance past n bytes and return where they start (NULL and bad when short). */
static inline const unsigned char *codec_take(codec_rd *r, size_t n) {
    if (r->bad || codec_left(r) < n) {
        r->bad = true;
        return NULL;
    }
    const unsigned char *s = r->p;
    r->p += n;
    return s;
}
static inline uint8_t codec_rd8(codec_rd *r) { const unsigned char *s = codec_take(r, 1); return s ? s[0] : 0; }
static inline uint16_t codec_rd16(codec_rd *r) { const unsigned char *s = codec_take(r, 2); return s ? codec_get16(s) : 0; }
static inline uint32_t codec_rd32(codec_rd *r) { const unsigned char *s = codec_take(r, 4); return s ? codec_get32(s) : 0; }
static inline uint64_t codec_rd64(codec_rd *r) { const unsigned char *s = codec_take(r, 8); return s ? codec_get64(s) : 0; }

/* ---- appending to a bv_buf, reading with (cursor, end) ---- */

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
