/*
 * op_ew_zscore.c - `ew_zscore`: z-score of the latest value against the EW mean/variance (reference-pipelines.md §2.3 row 31, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_ew_zscore = {
    .name = "ew_zscore",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
