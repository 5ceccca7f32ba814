/*
 * op_delta_from_prev.c - `delta_from_prev`: difference from the previous value (reference-pipelines.md §2.3 row 38, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_delta_from_prev = {
    .name = "delta_from_prev",
    .flags = OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
