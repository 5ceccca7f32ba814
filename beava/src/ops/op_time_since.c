/*
 * op_time_since.c - `time_since`: max(0, query time - latest matched arrival) in ms
 * (reference-pipelines.md §2.4). Lifetime only. State: tstate (8 bytes). Empty: null.
 */
#include "tstate.h"

static void time_since_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f;
    int64_t t = *(const int64_t *)st;
    if (t == TSTATE_NONE) jsonw_null(w); else jsonw_i64(w, tstate_elapsed(q, t));
}

TSTATE_VTABLE(op_time_since, "time_since", OPF_LIFETIME_ONLY, tstate_last, time_since_read);
