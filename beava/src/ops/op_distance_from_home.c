/*
 * op_distance_from_home.c - `distance_from_home`: distance of the latest point from the recent centroid (km) (reference-pipelines.md §2.3 row 54, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_distance_from_home = {
    .name = "distance_from_home",
    .flags = OPF_LIFETIME_ONLY,
};
