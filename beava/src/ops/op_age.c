/*
 * op_age.c - `age`: max(0, query time - first matched arrival) in ms
 * (reference-pipelines.md §2.4). Lifetime only. State: tstate (8 bytes). Empty: null.
 */
#include "tstate.h"

static void age_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f;
    int64_t t = *(const int64_t *)st;
    if (t == TSTATE_NONE) jsonw_null(w); else jsonw_i64(w, tstate_elapsed(q, t));
}

TSTATE_VTABLE(op_age, "age", OPF_LIFETIME_ONLY, tstate_first, age_read);
