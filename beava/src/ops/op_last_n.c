/*
 * op_last_n.c - `last_n`: the last n non-null values, oldest to newest (reference-pipelines.md §2.3 row 17, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_last_n = {
    .name = "last_n",
    .flags = OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_N_REQUIRED,
};
