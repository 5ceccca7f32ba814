/*
 * op_event_type_mix.c - `event_type_mix`: fraction of each category (reference-pipelines.md §2.3 row 48, §2.4).
 * Known, with its register-time checks; not implemented yet, so feature_compile rejects
 * it with aggregation_unknown_op.
 */
#include "op.h"

const struct op_vtable op_event_type_mix = {
    .name = "event_type_mix",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
};
