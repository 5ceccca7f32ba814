/*
 * op_streak.c - `streak`: current run of matched events (reference-pipelines.md §2.3 row 25, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_streak = {
    .name = "streak",
    .flags = OPF_LIFETIME_ONLY | OPF_SEES_UNMATCHED,
};
