/*
 * quantile.c - exact-then-UDDSketch quantile store (see quantile.h).
 */
#include "quantile.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "codec.h"
#include "udd.h"

static void to_sketch(qstore *s) {
    udd *u = udd_new();
    const double *a = s->p;
    for (uint32_t i = 0; i < s->n; i++) udd_add(u, a[i]);
    free(s->p);
    s->p = u;
    s->n = QS_SKETCH;
    s->cap = 0;
}

void qs_add(qstore *s, double x) {
    if (!isfinite(x)) return;
    if (s->n == QS_SKETCH) { udd_add(s->p, x); return; }
    if (s->n == QS_EXACT_MAX) {
        to_sketch(s);
        udd_add(s->p, x);
        return;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->p = realloc(s->p, (size_t)s->cap * sizeof(double));
        if (!s->p) abort();
    }
    double *a = s->p;
    uint32_t lo = 0, hi = s->n;                 /* x goes after the values <= x: the first > x */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (a[mid] > x) hi = mid; else lo = mid + 1;
    }
    memmove(&a[lo + 1], &a[lo], (size_t)(s->n - lo) * sizeof *a);
    a[lo] = x;
    s->n++;
}

void qs_prefetch(const qstore *s) {
    if (s->n == QS_SKETCH) __builtin_prefetch(s->p);
    else if (s->n > 0) __builtin_prefetch((const double *)s->p + s->n - 1);
}

bool qs_quantile(const qstore *s, double q, double *out) {
    if (s->n == QS_SKETCH) return udd_quantile(s->p, q, out);
    if (s->n == 0) return false;
    const double *a = s->p;
    double pos = q * (double)(s->n - 1);
    uint32_t lo = (uint32_t)floor(pos), hi = (uint32_t)ceil(pos);
    if (hi >= s->n) hi = s->n - 1;
    if (lo > hi) lo = hi;
    *out = a[lo] + (a[hi] - a[lo]) * (pos - (double)lo);
    return true;
}

void qs_free(qstore *s) {
    if (s->n == QS_SKETCH) udd_free(s->p);
    else free(s->p);
    memset(s, 0, sizeof *s);
}

void qs_merge(qstore *dst, const qstore *src) {
    if (src->n == 0) return;
    if (src->n == QS_SKETCH) {
        if (dst->n != QS_SKETCH) to_sketch(dst);
        udd_merge(dst->p, src->p);
        return;
    }
    const double *b = src->p;
    if (dst->n != QS_SKETCH && dst->n + src->n > QS_EXACT_MAX) to_sketch(dst);
    if (dst->n == QS_SKETCH) {
        for (uint32_t i = 0; i < src->n; i++) udd_add(dst->p, b[i]);
        return;
    }
    /* Both exact and the union fits: sorted merge. */
    const double *a = dst->p;
    uint32_t na = dst->n, nb = src->n, i = 0, j = 0, n = 0;
    double *out = malloc(((size_t)na + nb) * sizeof *out);
    if (!out) abort();
    while (i < na || j < nb) {
        if (j == nb || (i < na && a[i] <= b[j])) out[n++] = a[i++];
        else out[n++] = b[j++];
    }
    free(dst->p);
    dst->p = out;
    dst->n = dst->cap = n;
}

void qs_encode(bv_buf *out, const qstore *s) {
    if (s->n == QS_SKETCH) {
        cod_put_u8(out, 1);
        udd_encode(out, s->p);
        return;
    }
    cod_put_u8(out, 0);
    cod_put_u32(out, s->n);
    const double *a = s->p;
    for (uint32_t i = 0; i < s->n; i++) cod_put_f64(out, a[i]);
}

int qs_decode(const uint8_t **p, const uint8_t *end, qstore *s) {
    const uint8_t *q = *p;
    uint8_t mode;
    qs_free(s);
    if (cod_get_u8(&q, end, &mode) < 0) return -1;
    if (mode == 1) {
        udd *u = udd_decode(&q, end);
        if (!u) return -1;
        s->p = u;
        s->n = QS_SKETCH;
        *p = q;
        return 0;
    }
    uint32_t n;
    if (mode != 0 || cod_get_u32(&q, end, &n) < 0 || n > QS_EXACT_MAX) return -1;
    if ((size_t)(end - q) < (size_t)n * 8) return -1;
    if (n == 0) { *p = q; return 0; }
    double *a = malloc((size_t)n * sizeof *a);
    if (!a) abort();
    for (uint32_t i = 0; i < n; i++) {
        cod_get_f64(&q, end, &a[i]);
        if (!isfinite(a[i]) || (i && a[i] < a[i - 1])) { free(a); return -1; }
    }
    s->p = a;
    s->n = s->cap = n;
    *p = q;
    return 0;
}
