/*
 * codec.h - the one little-endian byte codec of every binary format beava writes (WAL
 * records, event records, snapshots). Fixed-width integers are stored little-endian
 * whatever the host; doubles as their IEEE-754 bits in a u64.
 *
 * Readers take a cursor (codec_rd) and never read past its end: a short read sets `bad`
 * and returns zeros, so a decoder checks `bad` once at the end of a block.
 */
#ifndef BEAVA_CODEC_H
#define BEAVA_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

#endif
