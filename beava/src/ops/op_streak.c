/*
 * op_streak.c - `streak`: length of the current run of matched events; an unmatched
 * event resets it (reference-pipelines.md §2.4). Without `where` every event matches.
 * Lifetime only. State: int64 (8 bytes). Empty: 0.
 */
#include "op.h"
#include "../sketch/codec.h"

static void streak_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    int64_t *c = st;
    *c = in->matched ? *c + 1 : 0;
}

static void streak_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    jsonw_i64(w, *(const int64_t *)st);
}

static void streak_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    cod_put_i64(out, *(const int64_t *)st);
}

static int streak_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    int64_t v;
    if (cod_get_i64(p, end, &v) < 0 || v < 0) return -1;
    *(int64_t *)st = v;
    return 0;
}

const struct op_vtable op_streak = {
    .name = "streak",
    .flags = OPF_LIFETIME_ONLY | OPF_SEES_UNMATCHED,
    .state_size = sizeof(int64_t),
    .update = streak_update,
    .read = streak_read,
    .encode = streak_encode,
    .decode = streak_decode,
};
