/*
 * op_inter_arrival_stats.c - `inter_arrival_stats`: mean gap between matched events (ms) (reference-pipelines.md §2.3 row 36, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_inter_arrival_stats = {
    .name = "inter_arrival_stats",
    .flags = 0,
};
