/*
 * op_burst_count.c - `burst_count(sub_window=S)`: the most matched events seen in one
 * sub-window of S ms. No field; `sub_window`
 * required (> 0, not forever: invalid_registration, checked by feature_compile). i64;
 * empty 0.
 *
 * A 64-slot ring of (sub-window epoch, count): an event at now falls in epoch
 * e = floor(now/S)*S, slot (e/S) mod 64; if the slot holds another epoch it is reset;
 * count + 1; max = max(max, count). Without `window` the output is that max over the
 * entity's whole life, as in the reference.
 *
 * Window (the reference accepted it and ignored it; we honour it): with `window` W the
 * output is the largest count among the sub-windows still in the ring that overlap the
 * window (q - W, q], i.e. e <= q and e + S > q - W. A sub-window that straddles the
 * window's start counts whole (we do not know where in it its events fell); overlap
 * rather than "starts inside" keeps the current sub-window when S >= W. The ring
 * remembers 64 sub-windows, so the windowed answer is exact while W <= 63*S; beyond that,
 * older sub-windows inside the window may have been recycled and are missed. The window
 * length lives in p.param_window_ms (feature_compile fills window_ms only for
 * OPF_WINDOWABLE kinds).
 *
 * State: 16 bytes {max, ring pointer}; the ring is a slots array (slots.h) of the used
 * slots (24 bytes each) until the dense 64 x 16 bytes are smaller, NULL before the
 * first event. A used slot always has count >= 1.
 */
#include "counter.h"
#include <stdlib.h>
#include "op.h"
#include "param.h"
#include "window.h"
#include "codec.h"
#include "slots.h"

#define BURST_SLOTS 64

typedef struct burst_slot {
    int64_t epoch;
    int64_t count;            /* 0 = slot unused */
} burst_slot;

typedef struct burst_st {
    int64_t max;
    slots *ring;
} burst_st;

static const slots_shape BURST_SHAPE = { BURST_SLOTS, sizeof(burst_slot) };

static int burst_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    const char *ws;
    int64_t w;
    /* an invalid window string is rejected by feature_compile right after this hook */
    if (param_str(params, "window", &ws) == 1 && bv_parse_duration(ws, &w) == 0) f->p.param_window_ms = w;
    return 0;
}

/* Slot of a sub-window epoch (a multiple of S, possibly negative). */
static unsigned slot_of(int64_t epoch, int64_t S) {
    int64_t k = (epoch / S) % BURST_SLOTS;
    return (unsigned)(k < 0 ? k + BURST_SLOTS : k);
}

static void burst_update(const feature *f, void *st, const op_input *in) {
    burst_st *s = st;
    int64_t S = f->p.sub_window_ms;
    int64_t e = window_epoch(in->now_ms, S);
    burst_slot *sl = slots_put(&s->ring, &BURST_SHAPE, slot_of(e, S));
    if (sl->count == 0 || sl->epoch != e) {
        sl->epoch = e;
        sl->count = 0;
    }
    cnt_inc(&sl->count);
    if (sl->count > s->max) s->max = sl->count;
}

static void burst_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    const burst_st *s = st;
    int64_t W = f->p.param_window_ms;
    if (!W) {
        jsonw_i64(w, s->max);
        return;
    }
    int64_t best = 0;
    double S = (double)f->p.sub_window_ms, lo = (double)q - (double)W;
    const burst_slot *sl;
    uint32_t pos = 0, key;
    while ((sl = slots_next(s->ring, &BURST_SHAPE, &pos, &key)))
        if (sl->count > best && sl->epoch <= q && (double)sl->epoch + S > lo) best = sl->count;
    jsonw_i64(w, best);
}

static void burst_destroy(const feature *f, void *st) {
    (void)f;
    burst_st *s = st;
    slots_free(&s->ring);
}

/* i64 max, u8 used slots, then per used slot: u8 index, i64 epoch, i64 count */
static void burst_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const burst_st *s = st;
    const burst_slot *sl;
    uint8_t used = 0;
    uint32_t pos = 0, key;
    while ((sl = slots_next(s->ring, &BURST_SHAPE, &pos, &key))) used += sl->count > 0;
    cod_put_i64(out, s->max);
    cod_put_u8(out, used);
    pos = 0;
    while ((sl = slots_next(s->ring, &BURST_SHAPE, &pos, &key))) {
        if (!sl->count) continue;
        cod_put_u8(out, (uint8_t)key);
        cod_put_i64(out, sl->epoch);
        cod_put_i64(out, sl->count);
    }
}

static int burst_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    burst_st t = { 0, NULL };
    uint8_t used;
    int64_t S = f->p.sub_window_ms;
    if (cod_get_i64(p, end, &t.max) < 0 || t.max < 0 || cod_get_u8(p, end, &used) < 0 ||
        used > BURST_SLOTS)
        return -1;
    for (unsigned i = 0; i < used; i++) {
        uint8_t idx;
        burst_slot sl;
        if (cod_get_u8(p, end, &idx) < 0 || cod_get_i64(p, end, &sl.epoch) < 0 ||
            cod_get_i64(p, end, &sl.count) < 0)
            goto err;
        const burst_slot *prev = idx < BURST_SLOTS ? slots_get(t.ring, &BURST_SHAPE, idx) : NULL;
        if (idx >= BURST_SLOTS || (prev && prev->count) || sl.count <= 0 || sl.count > t.max ||
            sl.epoch % S != 0 || slot_of(sl.epoch, S) != idx)
            goto err;
        *(burst_slot *)slots_put(&t.ring, &BURST_SHAPE, idx) = sl;
    }
    burst_destroy(f, st);
    *(burst_st *)st = t;
    return 0;
err:
    slots_free(&t.ring);
    return -1;
}

static void burst_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)f; (void)v;
    op_prefetch_ptr(((const burst_st *)st)->ring);
}

const struct op_vtable op_burst_count = {
    .name = "burst_count",
    .flags = OPF_SUB_WINDOW,
    .state_size = sizeof(burst_st),
    .parse = burst_parse,
    .update = burst_update,
    .prefetch = burst_prefetch,
    .read = burst_read,
    .destroy = burst_destroy,
    .encode = burst_encode,
    .decode = burst_decode,
};
