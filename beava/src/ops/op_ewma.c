/*
 * op_ewma.c - `ewma`: exponentially weighted moving average (reference-pipelines.md §2.3 row 29, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_ewma = {
    .name = "ewma",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
