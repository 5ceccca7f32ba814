/*
 * op_time_since.c - `time_since`: max(0, query time - arrival time of the latest matched
 * event) in ms, computed at read time, saturating.
 * Lifetime only; no field. State: recency (16 bytes). Empty: null.
 */
#include "recency.h"

static void time_since_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    recency_last(st, in->now_ms);
}

static void time_since_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f;
    const recency *r = st;
    if (r->has) jsonw_i64(w, recency_since(q, r->t));
    else jsonw_null(w);
}

const struct op_vtable op_time_since = {
    .name = "time_since",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(recency),
    .update = time_since_update,
    .read = time_since_read,
    .encode = recency_encode,
    .decode = recency_decode,
};
