/*
 * op_geo_spread.c - `geo_spread`: spatial spread of the points (km) (reference-pipelines.md §2.3 row 53, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_geo_spread = {
    .name = "geo_spread",
    .flags = OPF_LIFETIME_ONLY,
};
