/*
 * op_max_streak.c - `max_streak`: the longest run of consecutive matched events so far
 * (reference-pipelines.md §2.4). Lifetime only. State: current and best run
 * (16 bytes). Empty: 0.
 */
#include "op.h"
#include "../sketch/codec.h"

typedef struct mstreak { int64_t cur, best; } mstreak;

static void mstreak_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    mstreak *s = st;
    s->cur = in->matched ? s->cur + 1 : 0;
    if (s->cur > s->best) s->best = s->cur;
}

static void mstreak_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    jsonw_i64(w, ((const mstreak *)st)->best);
}

static void mstreak_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const mstreak *s = st;
    cod_put_i64(out, s->cur);
    cod_put_i64(out, s->best);
}

static int mstreak_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    mstreak t;
    if (cod_get_i64(p, end, &t.cur) < 0 || cod_get_i64(p, end, &t.best) < 0) return -1;
    if (t.cur < 0 || t.best < t.cur) return -1;
    *(mstreak *)st = t;
    return 0;
}

const struct op_vtable op_max_streak = {
    .name = "max_streak",
    .flags = OPF_LIFETIME_ONLY | OPF_SEES_UNMATCHED,
    .state_size = sizeof(mstreak),
    .update = mstreak_update,
    .read = mstreak_read,
    .encode = mstreak_encode,
    .decode = mstreak_decode,
};
