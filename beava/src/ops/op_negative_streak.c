/*
 * op_negative_streak.c - `negative_streak`: length of the current run of unmatched
 * events; a matched event resets it (reference-pipelines.md §2.4). Without `where` it
 * stays 0.
 * Lifetime only. State: int64 (8 bytes). Empty: 0.
 */
#include "op.h"
#include "../sketch/codec.h"

static void nstreak_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    int64_t *c = st;
    *c = in->matched ? 0 : *c + 1;
}

static void nstreak_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    jsonw_i64(w, *(const int64_t *)st);
}

static void nstreak_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    cod_put_i64(out, *(const int64_t *)st);
}

static int nstreak_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    int64_t v;
    if (cod_get_i64(p, end, &v) < 0 || v < 0) return -1;
    *(int64_t *)st = v;
    return 0;
}

const struct op_vtable op_negative_streak = {
    .name = "negative_streak",
    .flags = OPF_LIFETIME_ONLY | OPF_SEES_UNMATCHED,
    .state_size = sizeof(int64_t),
    .update = nstreak_update,
    .read = nstreak_read,
    .encode = nstreak_encode,
    .decode = nstreak_decode,
};
