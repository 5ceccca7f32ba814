/*
 * op_decayed_count.c - `decayed_count`: exponentially decayed count (reference-pipelines.md §2.3 row 33, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_decayed_count = {
    .name = "decayed_count",
    .flags = OPF_HALF_LIFE,
};
