/*
 * distinct.h - the n_unique counter: exact set of 64-bit value hashes up to 1024
 * distinct, then HyperLogLog++ p=12.
 *
 * Layout: 16 bytes, all-zero = empty. Exact mode holds the hashes in the smallest form
 * that fits (distinct.c): one hash inside the struct, a sorted array up to 32, an
 * open-addressing table up to 1024. On the 1025th distinct hash they are folded into
 * 4096 registers (mode HLL, n = DISTINCT_HLL). The snapshot form is the sorted list
 * whatever the exact form. Merge (windows) unions exact sets, staying exact while the union holds
 * at most 1024 hashes; any HLL side makes the result HLL (register-wise max).
 */
#ifndef BEAVA_SKETCH_DISTINCT_H
#define BEAVA_SKETCH_DISTINCT_H

#include <stdint.h>
#include "jsonw.h"

#define DISTINCT_EXACT_MAX 1024
#define DISTINCT_HLL UINT32_MAX

typedef struct distinct {
    uint32_t n;               /* exact: hashes held; DISTINCT_HLL: register mode */
    uint32_t cap;             /* exact: array / table capacity; 0 with n == 1: the hash is in p */
    void *p;                  /* uint64_t[cap] ascending (n <= 32), uint64_t[cap + 1] table,
                               * or uint8_t[HLL_M] */
} distinct;

void distinct_add(distinct *d, uint64_t hash);
uint64_t distinct_count(const distinct *d);
/* Memory hint, no effect on d: prefetch what distinct_add(d, hash) will probe first (the
 * table slot, the HLL register, or the sorted array). */
void distinct_prefetch(const distinct *d, uint64_t hash);
/* Whether distinct_prefetch(d, hash) uses the hash (the hash table and HLL forms); the
 * short forms are prefetched whole, so a caller may pass 0 without hashing. */
bool distinct_prefetch_hashes(const distinct *d);
void distinct_merge(distinct *dst, const distinct *src);
void distinct_free(distinct *d);            /* back to empty */

/* u8 mode (0 exact, 1 hll); exact: u32 n, n x u64 ascending; hll: 4096 register bytes. */
void distinct_encode(bv_buf *out, const distinct *d);
/* Into an empty (zeroed) distinct. -1 on malformed input (d is then empty). */
int distinct_decode(const uint8_t **p, const uint8_t *end, distinct *d);

#endif
