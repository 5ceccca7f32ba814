/*
 * op_decayed_sum.c - `decayed_sum`: forward-decayed sum of the numeric values of
 * `field` (reference-pipelines.md §2.4; dsum.h). half_life required. State: 24 bytes.
 * Empty: null.
 */
#include "dsum.h"

static void dsum_update_value(const feature *f, void *st, const op_input *in) {
    double x;
    if (bv_as_f64(in->v, &x)) dsum_add(f, st, x, in->now_ms);
}

const struct op_vtable op_decayed_sum = {
    .name = "decayed_sum",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(dsum_st),
    .update = dsum_update_value,
    .read = dsum_read,
    .encode = dsum_encode,
    .decode = dsum_decode,
};
