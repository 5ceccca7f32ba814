/*
 * op_last_seen.c - `last_seen`: arrival ms of the latest matched event, as an integer
 * (reference-pipelines.md §2.4). Lifetime only. State: tstate (8 bytes). Empty: null.
 */
#include "tstate.h"

static void last_seen_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    int64_t t = *(const int64_t *)st;
    if (t == TSTATE_NONE) jsonw_null(w); else jsonw_i64(w, t);
}

TSTATE_VTABLE(op_last_seen, "last_seen", OPF_LIFETIME_ONLY, tstate_last, last_seen_read);
