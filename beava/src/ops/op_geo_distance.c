/*
 * op_geo_distance.c - `geo_distance`: cumulative distance between consecutive points (km) (reference-pipelines.md §2.3 row 52, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_geo_distance = {
    .name = "geo_distance",
    .flags = OPF_LIFETIME_ONLY,
};
