/*
 * op_decayed_sum.c - `decayed_sum`: exponentially decayed sum (reference-pipelines.md §2.3 row 32, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_decayed_sum = {
    .name = "decayed_sum",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
