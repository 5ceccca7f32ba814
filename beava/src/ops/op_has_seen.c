/*
 * op_has_seen.c - `has_seen`: whether any event ever matched.
 * Lifetime only; no field. State: recency (16 bytes; the first
 * match time is kept like first_seen's). Empty: false.
 */
#include "recency.h"

static void has_seen_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    recency_first(st, in->now_ms);
}

static void has_seen_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const recency *r = st;
    jsonw_bool(w, r->has != 0);
}

const struct op_vtable op_has_seen = {
    .name = "has_seen",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(recency),
    .update = has_seen_update,
    .read = has_seen_read,
    .encode = recency_encode,
    .decode = recency_decode,
};
