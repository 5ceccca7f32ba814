/*
 * quantile.h - the quantile op's value store: exact sorted list of up to 256 values,
 * then a UDDSketch with alpha = 1%.
 *
 * Layout: 16 bytes, all-zero = empty. Exact mode answers by linear interpolation at
 * position q*(n-1) of the sorted values. On the 257th value the list is folded into a
 * UDDSketch (n = QS_SKETCH, p = udd*). Merging two exact lists concatenates while the
 * result holds at most 256 values; otherwise the result is a sketch. Non-finite values
 * are ignored in both modes (JSON cannot carry them; expressions never produce them).
 */
#ifndef BEAVA_SKETCH_QUANTILE_H
#define BEAVA_SKETCH_QUANTILE_H

#include <stdbool.h>
#include <stdint.h>
#include "jsonw.h"

#define QS_EXACT_MAX 256
#define QS_SKETCH UINT32_MAX

typedef struct qstore {
    uint32_t n;               /* exact values held, or QS_SKETCH */
    uint32_t cap;
    void *p;                  /* double[cap] ascending, or udd* */
} qstore;

void qs_add(qstore *s, double x);
/* Memory hint, no effect on s: prefetch where qs_add starts (the array's tail or the
 * sketch). */
void qs_prefetch(const qstore *s);
bool qs_quantile(const qstore *s, double q, double *out);   /* false when empty */
void qs_merge(qstore *dst, const qstore *src);
void qs_free(qstore *s);

/* u8 mode; exact: u32 n, n x f64 ascending; sketch: udd_encode. */
void qs_encode(bv_buf *out, const qstore *s);
int qs_decode(const uint8_t **p, const uint8_t *end, qstore *s);

#endif
