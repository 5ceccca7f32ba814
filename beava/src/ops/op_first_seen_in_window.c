/*
 * op_first_seen_in_window.c - `first_seen_in_window`: whether a match happened within the last `window` (reference-pipelines.md §2.3 row 28, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_first_seen_in_window = {
    .name = "first_seen_in_window",
    .flags = OPF_WINDOW_PARAM,
};
