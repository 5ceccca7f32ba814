/*
 * op_time_since_last_n.c - `time_since_last_n`: query time minus the n-th latest match (reference-pipelines.md §2.3 row 24, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_time_since_last_n = {
    .name = "time_since_last_n",
    .flags = OPF_LIFETIME_ONLY | OPF_N_REQUIRED,
};
