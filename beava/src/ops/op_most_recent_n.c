/*
 * op_most_recent_n.c - `most_recent_n`: the last n values, oldest to newest (reference-pipelines.md §2.3 row 49, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_most_recent_n = {
    .name = "most_recent_n",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
};
