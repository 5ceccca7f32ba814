/*
 * op_has_seen.c - `has_seen`: whether any event matched (reference-pipelines.md §2.4).
 * Lifetime only. State: tstate (8 bytes, first match ms). Empty: false.
 */
#include "tstate.h"

static void has_seen_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    jsonw_bool(w, *(const int64_t *)st != TSTATE_NONE);
}

TSTATE_VTABLE(op_has_seen, "has_seen", OPF_LIFETIME_ONLY, tstate_first, has_seen_read);
