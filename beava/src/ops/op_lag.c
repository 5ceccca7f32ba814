/*
 * op_lag.c - `lag`: the value n matched events before the latest (reference-pipelines.md §2.3 row 18, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_lag = {
    .name = "lag",
    .flags = OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_N_REQUIRED,
};
