/*
 * op_trend_residual.c - `trend_residual`: residual of the latest point against the OLS line (reference-pipelines.md §2.3 row 40, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_trend_residual = {
    .name = "trend_residual",
    .flags = OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
