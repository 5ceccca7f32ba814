/*
 * op_streak.c - `streak`: the current run of consecutive matched events; an event whose
 * `where` is not exactly true (false, null, non-bool) ends the run
 * (reference-pipelines.md §2.3 row 25, §2.4). Sees unmatched events. Without `where`
 * every event matches, so the streak is the number of events. Lifetime only; no field.
 * State: int64 (8 bytes). Empty: 0.
 */
#include "op.h"
#include "codec.h"

static void streak_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    int64_t *c = st;
    if (!in->matched) *c = 0;
    else if (*c < INT64_MAX) (*c)++;
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
    const uint8_t *q = *p;
    if (cod_get_i64(&q, end, &v) < 0 || v < 0) return -1;
    *(int64_t *)st = v;
    *p = q;
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
