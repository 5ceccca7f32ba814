/*
 * op_hour_of_day_histogram.c - `hour_of_day_histogram`: counts per UTC hour of day (reference-pipelines.md §2.3 row 45, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_hour_of_day_histogram = {
    .name = "hour_of_day_histogram",
    .flags = OPF_LIFETIME_ONLY,
};
