/*
 * op_z_score.c - `z_score`: z-score of the latest value (reference-pipelines.md §2.3 row 43, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_z_score = {
    .name = "z_score",
    .flags = OPF_FIELD_CHECKED | OPF_READS_FIELD,
};
