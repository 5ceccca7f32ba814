/*
 * op_decayed_count.c - `decayed_count`: forward-decayed count of matched events (the
 * first event gives 1.0) (reference-pipelines.md §2.4; dsum.h). half_life required.
 * State: 24 bytes. Empty: null.
 */
#include "dsum.h"

static void dcount_update(const feature *f, void *st, const op_input *in) {
    dsum_add(f, st, 1.0, in->now_ms);
}

const struct op_vtable op_decayed_count = {
    .name = "decayed_count",
    .flags = OPF_HALF_LIFE,
    .state_size = sizeof(dsum_st),
    .update = dcount_update,
    .read = dsum_read,
    .encode = dsum_encode,
    .decode = dsum_decode,
};
