/*
 * op_last_seen.c - `last_seen`: arrival ms of the last matched event (reference-pipelines.md §2.3 row 20, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_last_seen = {
    .name = "last_seen",
    .flags = OPF_LIFETIME_ONLY,
};
