/*
 * op_age.c - `age`: query time minus the first match (reference-pipelines.md §2.3 row 21, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_age = {
    .name = "age",
    .flags = OPF_LIFETIME_ONLY,
};
