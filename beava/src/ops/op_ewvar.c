/*
 * op_ewvar.c - `ewvar`: exponentially weighted variance (reference-pipelines.md §2.3 row 30, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_ewvar = {
    .name = "ewvar",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
