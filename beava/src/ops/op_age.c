/*
 * op_age.c - `age`: max(0, query time - arrival time of the first matched event) in ms,
 * computed at read time, saturating.
 * Lifetime only; no field. State: recency (16 bytes). Empty: null.
 */
#include "recency.h"

static void age_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    recency_first(st, in->now_ms);
}

static void age_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f;
    const recency *r = st;
    if (r->has) jsonw_i64(w, recency_since(q, r->t));
    else jsonw_null(w);
}

const struct op_vtable op_age = {
    .name = "age",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(recency),
    .update = age_update,
    .read = age_read,
    .encode = recency_encode,
    .decode = recency_decode,
};
