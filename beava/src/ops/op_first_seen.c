/*
 * op_first_seen.c - `first_seen`: arrival ms of the first matched event (reference-pipelines.md §2.3 row 19, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_first_seen = {
    .name = "first_seen",
    .flags = OPF_LIFETIME_ONLY,
};
