/*
 * op_reservoir_sample.c - `reservoir_sample`: a uniform sample of the values (reference-pipelines.md §2.3 row 50, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_reservoir_sample = {
    .name = "reservoir_sample",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
};
