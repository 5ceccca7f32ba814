/*
 * op_max_streak.c - `max_streak`: longest run of matched events (reference-pipelines.md §2.3 row 26, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_max_streak = {
    .name = "max_streak",
    .flags = OPF_LIFETIME_ONLY | OPF_SEES_UNMATCHED,
};
