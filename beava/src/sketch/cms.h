/*
 * cms.h - Count-Min Sketch, width 2048 x depth 4, u64 cells (64 KB), used by top_k past
 * 1024 distinct values.
 *
 * Row r of a 64-bit value hash h uses cell (h1 + r*h2) mod 2048 (Kirsch-Mitzenmacher
 * double hashing, h1/h2 = low/high 32 bits of h, h2 forced odd). The estimate is the row
 * minimum: never below the true count, above it by at most e/2048 * N with probability
 * >= 1 - e^-4. Updates are plain (every row += c), so sketches merge by cell-wise sum.
 */
#ifndef BEAVA_SKETCH_CMS_H
#define BEAVA_SKETCH_CMS_H

#include <stdint.h>

#define CMS_WIDTH 2048
#define CMS_DEPTH 4

typedef struct cms {
    uint64_t cell[CMS_DEPTH][CMS_WIDTH];
} cms;

void cms_add(cms *s, uint64_t h, uint64_t c);
uint64_t cms_estimate(const cms *s, uint64_t h);
/* Memory hint: prefetch the cells cms_add / cms_estimate of h will touch. */
void cms_prefetch(const cms *s, uint64_t h);
void cms_merge(cms *dst, const cms *src);

#endif
