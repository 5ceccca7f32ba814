/*
 * op_value_change_count.c - `value_change_count`: number of value changes (reference-pipelines.md §2.3 row 42, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_value_change_count = {
    .name = "value_change_count",
    .flags = OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
