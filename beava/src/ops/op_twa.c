/*
 * op_twa.c - `twa`: time-weighted average (reference-pipelines.md §2.3 row 34, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_twa = {
    .name = "twa",
    .flags = OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
