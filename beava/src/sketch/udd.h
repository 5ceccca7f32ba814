/*
 * udd.h - UDDSketch: relative-error quantile sketch with uniform collapses
 * (Epicoco et al. 2020), as the quantile op uses it past 256 values.
 *
 * At collapse level c the accuracy is alpha_c (alpha_0 = 1%, alpha_{c+1} =
 * 2 alpha_c / (1 + alpha_c^2)) and gamma_c = (1 + alpha_c) / (1 - alpha_c) =
 * gamma_0^(2^c). A value x != 0 lands in bucket k = floor(ln|x| / ln gamma_c) of the
 * positive or negative store; zeros are counted apart; non-finite values are skipped.
 * Bucket k covers [gamma^k, gamma^(k+1)) and answers with 2 gamma^(k+1) / (1 + gamma),
 * the point within alpha_c of both edges, so any answer is within alpha_c of the true
 * value of its rank. When the two stores together hold more
 * than UDD_MAX_BUCKETS non-empty buckets, both collapse one level (k -> floor(k/2)).
 *
 * Stores are sorted arrays of (k, count): insertion is a binary search plus a memmove of
 * at most 32 KB, which only happens when a value opens a new bucket.
 */
#ifndef BEAVA_SKETCH_UDD_H
#define BEAVA_SKETCH_UDD_H

#include <stdbool.h>
#include <stdint.h>
#include "jsonw.h"

#define UDD_ALPHA0 0.01
#define UDD_MAX_BUCKETS 2048
#define UDD_MAX_COLLAPSES 24

typedef struct udd_bucket { int32_t k; uint32_t pad; uint64_t c; } udd_bucket;
typedef struct udd_store { uint32_t n, cap; udd_bucket *b; } udd_store;

typedef struct udd {
    uint32_t collapses;
    uint64_t zero, total;
    udd_store pos, neg;
} udd;

udd *udd_new(void);
void udd_free(udd *u);
void udd_add(udd *u, double x);
void udd_merge(udd *dst, const udd *src);
/* Value at rank floor(q * (total - 1)); false when empty. */
bool udd_quantile(const udd *u, double q, double *out);
double udd_alpha(const udd *u);

void udd_encode(bv_buf *out, const udd *u);
/* Returns a new sketch or NULL on malformed input. */
udd *udd_decode(const uint8_t **p, const uint8_t *end);

#endif
