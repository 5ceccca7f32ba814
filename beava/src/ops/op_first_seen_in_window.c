/*
 * op_first_seen_in_window.c - `first_seen_in_window(window=W)`: true iff a matched event
 * arrived with 0 <= q - last < W (reference-pipelines.md §2.4). `window` is a required
 * parameter here, not a sliding window. State: tstate (8 bytes, latest match ms).
 * Empty: false.
 */
#include "tstate.h"

static void fsiw_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    int64_t t = *(const int64_t *)st, d;
    bool in = t != TSTATE_NONE && !__builtin_sub_overflow(q, t, &d) && d >= 0 && d < f->p.param_window_ms;
    jsonw_bool(w, in);
}

TSTATE_VTABLE(op_first_seen_in_window, "first_seen_in_window", OPF_WINDOW_PARAM, tstate_last, fsiw_read);
