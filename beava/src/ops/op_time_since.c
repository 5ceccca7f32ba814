/*
 * op_time_since.c - `time_since`: query time minus the last match (reference-pipelines.md §2.3 row 23, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_time_since = {
    .name = "time_since",
    .flags = OPF_LIFETIME_ONLY,
};
