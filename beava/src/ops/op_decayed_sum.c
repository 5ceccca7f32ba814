/*
 * op_decayed_sum.c - `decayed_sum`: exponentially decayed sum of the numeric values of
 * `field`. `half_life` required. Decayed at
 * read time too (decayed.h): a read at q reports the total decayed to q.
 * f64; empty null. `window` is accepted and ignored (the half-life is the recency
 * control, as in the reference).
 *
 * State: decayed (24 bytes).
 */
#include "decayed.h"

static void decayed_sum_update(const feature *f, void *st, const op_input *in) {
    double x;
    if (bv_as_f64(in->v, &x)) decayed_add(f, st, x, in->now_ms);
}

const struct op_vtable op_decayed_sum = {
    .name = "decayed_sum",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(decayed),
    .update = decayed_sum_update,
    .read = decayed_read,
    .encode = decayed_encode,
    .decode = decayed_decode,
};
