/*
 * op_seasonal_deviation.c - `seasonal_deviation`: deviation from the same hour's mean (reference-pipelines.md §2.3 row 47, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_seasonal_deviation = {
    .name = "seasonal_deviation",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
};
