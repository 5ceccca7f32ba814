/*
 * op_outlier_count.c - `outlier_count`: values beyond sigma standard deviations (reference-pipelines.md §2.3 row 41, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_outlier_count = {
    .name = "outlier_count",
    .flags = OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
