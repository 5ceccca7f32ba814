/*
 * topk.h - the top_k op's store: exact value -> count map while at most 1024 distinct
 * values were seen, then Count-Min Sketch 2048x4 plus a size-k min-heap of candidates
 * keyed by their CMS estimate.
 *
 * Layout: 32 bytes, all-zero = empty. Values are Str, I64, F64 or Bool (the op filters).
 * Promotion (the 1025th distinct value) folds the exact counts into a fresh CMS and
 * seeds the heap with every exact value at its estimate, then adds the new value.
 * In hybrid mode each value adds 1 to the CMS; if it is in the heap its count becomes
 * the new estimate, otherwise it replaces the heap minimum when its estimate is larger.
 * Reported counts are then CMS estimates (never below the true count).
 *
 * Merge (windows): exact + exact stays exact while the union has <= 1024 values; else
 * the result is hybrid: CMS cells summed, candidates = both sides' heaps (or exact
 * values), each re-estimated against the merged CMS, best k kept.
 */
#ifndef BEAVA_SKETCH_TOPK_H
#define BEAVA_SKETCH_TOPK_H

#include <stddef.h>
#include <stdint.h>
#include "jsonw.h"
#include "valmap.h"

#define TOPK_EXACT_MAX 1024
#define TOPK_MAX_K 1024

struct topk_hybrid;

typedef struct topk {
    valmap exact;                 /* exact phase; empty once hybrid */
    struct topk_hybrid *hy;       /* NULL while exact */
} topk;

typedef struct topk_item {
    const op_val *v;              /* borrowed from the store */
    uint64_t count;
} topk_item;

void topk_add(topk *t, const bv_value *v, uint32_t k);
void topk_merge(topk *dst, const topk *src, uint32_t k);
/* Memory hint, no effect on t: prefetch what topk_add(t, v, k) will read first. */
void topk_prefetch(const topk *t, const bv_value *v);
/* The best min(k, held) items, count desc then value asc (opval_order). Returns the
 * number written to *out (caller frees *out; items borrow from t). */
size_t topk_result(const topk *t, uint32_t k, topk_item **out);
void topk_free(topk *t);
int topk_is_hybrid(const topk *t);

void topk_encode(bv_buf *out, const topk *t);
/* Into an empty topk; k must equal the k the state was built with. -1 on bad input. */
int topk_decode(const uint8_t **p, const uint8_t *end, topk *t, uint32_t k);

#endif
