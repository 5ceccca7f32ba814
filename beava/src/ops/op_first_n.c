/*
 * op_first_n.c - `first_n`: the first n non-null values (reference-pipelines.md §2.3 row 16, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_first_n = {
    .name = "first_n",
    .flags = OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_N_REQUIRED,
};
