/*
 * op_last_seen.c - `last_seen`: the arrival time (now_ms) of the latest matched event,
 * as integer ms (a datetime on the wire).
 * Lifetime only; no field. State: recency (16 bytes). Empty: null.
 */
#include "recency.h"

static void last_seen_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    recency_last(st, in->now_ms);
}

static void last_seen_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const recency *r = st;
    if (r->has) jsonw_i64(w, r->t);
    else jsonw_null(w);
}

const struct op_vtable op_last_seen = {
    .name = "last_seen",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(recency),
    .update = last_seen_update,
    .read = last_seen_read,
    .encode = recency_encode,
    .decode = recency_decode,
};
