/*
 * op_has_seen.c - `has_seen`: whether any event matched (reference-pipelines.md §2.3 row 22, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_has_seen = {
    .name = "has_seen",
    .flags = OPF_LIFETIME_ONLY,
};
