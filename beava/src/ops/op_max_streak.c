/*
 * op_max_streak.c - `max_streak`: the longest run of consecutive matched events ever
 * seen; an event whose `where` is not exactly true ends the current run
 * (reference-pipelines.md §2.3 row 26, §2.4). Sees unmatched events. Without `where`
 * it is the number of events. Lifetime only; no field.
 * State: current and best run (16 bytes). Snapshot form: i64 current, i64 best.
 * Empty: 0.
 */
#include "op.h"
#include "codec.h"

typedef struct max_streak_st { int64_t cur, best; } max_streak_st;

static void max_streak_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    max_streak_st *s = st;
    if (!in->matched) {
        s->cur = 0;
        return;
    }
    if (s->cur < INT64_MAX) s->cur++;
    if (s->cur > s->best) s->best = s->cur;
}

static void max_streak_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    jsonw_i64(w, ((const max_streak_st *)st)->best);
}

static void max_streak_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const max_streak_st *s = st;
    cod_put_i64(out, s->cur);
    cod_put_i64(out, s->best);
}

static int max_streak_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    max_streak_st t;
    const uint8_t *q = *p;
    if (cod_get_i64(&q, end, &t.cur) < 0 || cod_get_i64(&q, end, &t.best) < 0) return -1;
    if (t.cur < 0 || t.best < t.cur) return -1;
    *(max_streak_st *)st = t;
    *p = q;
    return 0;
}

const struct op_vtable op_max_streak = {
    .name = "max_streak",
    .flags = OPF_LIFETIME_ONLY | OPF_SEES_UNMATCHED,
    .state_size = sizeof(max_streak_st),
    .update = max_streak_update,
    .read = max_streak_read,
    .encode = max_streak_encode,
    .decode = max_streak_decode,
};
