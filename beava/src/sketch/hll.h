/*
 * hll.h - HyperLogLog++ registers, precision p = 12 (4096 one-byte registers, ~4 KB,
 * standard error ~1.6%), as used by n_unique past its exact phase.
 *
 * The caller owns the register array (HLL_M bytes, zeroed = empty). Input hashes are
 * 64-bit; they are re-mixed with the SplitMix64 finaliser, the top 12 bits pick the
 * register and the rank is the leading-zero count of the remaining 52 bits + 1 (1..53).
 */
#ifndef BEAVA_SKETCH_HLL_H
#define BEAVA_SKETCH_HLL_H

#include <stdint.h>

#define HLL_P 12
#define HLL_M (1u << HLL_P)
#define HLL_MAX_RANK (64 - HLL_P + 1)

void hll_add(uint8_t *reg, uint64_t hash);
/* Memory hint: prefetch the register hll_add(reg, hash) would update. */
void hll_prefetch(const uint8_t *reg, uint64_t hash);
/* Register-wise max. */
void hll_merge(uint8_t *dst, const uint8_t *src);
/* HLL++ estimate: linear counting while it is <= 3100 (with empty registers), else the
 * raw estimate minus the empirical bias (Heule et al. 2013, p=12 tables, mean of the 6
 * nearest neighbours) while raw <= 5m, else the raw estimate. */
uint64_t hll_estimate(const uint8_t *reg);

#endif
