/*
 * op_burst_count.c - `burst_count`: most matched events in one sub_window bucket (reference-pipelines.md §2.3 row 37, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_burst_count = {
    .name = "burst_count",
    .flags = OPF_SUB_WINDOW,
};
