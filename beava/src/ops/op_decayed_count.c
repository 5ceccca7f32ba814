/*
 * op_decayed_count.c - `decayed_count`: exponentially decayed count of matched events:
 * decayed_sum with x = 1 (the first event gives 1.0). `half_life` required; no field.
 * Decayed at read time (decayed.h). f64; empty null. `window` is accepted and ignored.
 *
 * State: decayed (24 bytes).
 */
#include "decayed.h"

static void decayed_count_update(const feature *f, void *st, const op_input *in) {
    decayed_add(f, st, 1.0, in->now_ms);
}

const struct op_vtable op_decayed_count = {
    .name = "decayed_count",
    .flags = OPF_HALF_LIFE,
    .state_size = sizeof(decayed),
    .update = decayed_count_update,
    .read = decayed_read,
    .encode = decayed_encode,
    .decode = decayed_decode,
};
