/*
 * op_negative_streak.c - `negative_streak`: current run of unmatched events (reference-pipelines.md §2.3 row 27, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_negative_streak = {
    .name = "negative_streak",
    .flags = OPF_LIFETIME_ONLY | OPF_SEES_UNMATCHED,
};
