/*
 * op_first_seen_in_window.c - `first_seen_in_window(window=W)`: true iff the latest
 * matched event arrived within W of the query time, 0 <= q - last < W. `window` is a
 * required parameter (aggregation_invalid_window when absent or "forever"), not a sliding
 * window: the state is lifetime. State: recency (16 bytes, latest match). Empty: false.
 */
#include "recency.h"

static void first_seen_in_window_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    recency_last(st, in->now_ms);
}

static void first_seen_in_window_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    const recency *r = st;
    int64_t age;
    bool in = r->has && !__builtin_sub_overflow(q, r->t, &age) && age >= 0 &&
              age < f->p.param_window_ms;
    jsonw_bool(w, in);
}

const struct op_vtable op_first_seen_in_window = {
    .name = "first_seen_in_window",
    .flags = OPF_WINDOW_PARAM,
    .state_size = sizeof(recency),
    .update = first_seen_in_window_update,
    .read = first_seen_in_window_read,
    .encode = recency_encode,
    .decode = recency_decode,
};
