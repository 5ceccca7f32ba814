/*
 * op_dow_hour_histogram.c - `dow_hour_histogram`: counts per weekday and hour (reference-pipelines.md §2.3 row 46, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_dow_hour_histogram = {
    .name = "dow_hour_histogram",
    .flags = OPF_LIFETIME_ONLY,
};
