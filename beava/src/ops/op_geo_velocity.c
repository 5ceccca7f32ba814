/*
 * op_geo_velocity.c - `geo_velocity`: maximum speed between consecutive points (km/h) (reference-pipelines.md §2.3 row 51, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_geo_velocity = {
    .name = "geo_velocity",
    .flags = OPF_LIFETIME_ONLY,
};
