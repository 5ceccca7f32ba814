/*
 * op_histogram.c - `histogram`: counts per bucket (reference-pipelines.md §2.3 row 44, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_histogram = {
    .name = "histogram",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
};
