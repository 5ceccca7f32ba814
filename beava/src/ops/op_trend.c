/*
 * op_trend.c - `trend`: OLS slope of value over arrival time (reference-pipelines.md §2.3 row 39, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_trend = {
    .name = "trend",
    .flags = OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
