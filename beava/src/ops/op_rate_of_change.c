/*
 * op_rate_of_change.c - `rate_of_change`: change per ms between the last two values (reference-pipelines.md §2.3 row 35, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_rate_of_change = {
    .name = "rate_of_change",
    .flags = OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
