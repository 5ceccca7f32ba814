/*
 * op_burst_count.c - `burst_count(sub_window=S)`: the most matched events seen in one
 * sub-window of S ms (reference-pipelines.md §2.3 row 37, §2.4). No field; `sub_window`
 * required (> 0, not forever: invalid_registration, checked by feature_compile). i64;
 * empty 0.
 *
 * A 64-slot ring of (sub-window epoch, count): an event at now falls in epoch
 * e = floor(now/S)*S, slot (e/S) mod 64; if the slot holds another epoch it is reset;
 * count + 1; max = max(max, count). Without `window` the output is that max over the
 * entity's whole life, as in the reference.
 *
 * Window (DECISIONS §4; the reference ignored it): with `window` W the output is the
 * largest count among the sub-windows still in the ring that overlap the window
 * (q - W, q], i.e. e <= q and e + S > q - W. A sub-window that straddles the window's
 * start counts whole (we do not know where in it its events fell); overlap rather than
 * "starts inside" keeps the current sub-window when S >= W. The ring remembers 64
 * sub-windows, so the windowed answer is exact while W <= 63*S; beyond that, older
 * sub-windows inside the window may have been recycled and are missed. The window
 * length lives in p.param_window_ms (feature_compile fills window_ms only for
 * OPF_WINDOWABLE kinds).
 *
 * State: 16 bytes {max, ring pointer}; the ring (64 x 16 bytes) is allocated on the
 * first event.
 */
#include "counter.h"
#include <stdlib.h>
#include "op.h"
#include "param.h"
#include "window.h"
#include "codec.h"

#define BURST_SLOTS 64

typedef struct burst_slot {
    int64_t epoch;
    int64_t count;            /* 0 = slot unused */
} burst_slot;

typedef struct burst_st {
    int64_t max;
    burst_slot *ring;
} burst_st;

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
    if (!s->ring) {
        s->ring = calloc(BURST_SLOTS, sizeof *s->ring);
        if (!s->ring) abort();
    }
    int64_t e = window_epoch(in->now_ms, S);
    burst_slot *sl = &s->ring[slot_of(e, S)];
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
    if (s->ring)
        for (unsigned i = 0; i < BURST_SLOTS; i++) {
            const burst_slot *sl = &s->ring[i];
            if (sl->count > best && sl->epoch <= q && (double)sl->epoch + S > lo) best = sl->count;
        }
    jsonw_i64(w, best);
}

static void burst_destroy(const feature *f, void *st) {
    (void)f;
    burst_st *s = st;
    free(s->ring);
    s->ring = NULL;
}

/* i64 max, u8 used slots, then per used slot: u8 index, i64 epoch, i64 count */
static void burst_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const burst_st *s = st;
    uint8_t used = 0;
    if (s->ring)
        for (unsigned i = 0; i < BURST_SLOTS; i++) used += s->ring[i].count > 0;
    cod_put_i64(out, s->max);
    cod_put_u8(out, used);
    if (s->ring)
        for (unsigned i = 0; i < BURST_SLOTS; i++) {
            if (!s->ring[i].count) continue;
            cod_put_u8(out, (uint8_t)i);
            cod_put_i64(out, s->ring[i].epoch);
            cod_put_i64(out, s->ring[i].count);
        }
}

static int burst_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    burst_st t = { 0, NULL };
    uint8_t used;
    int64_t S = f->p.sub_window_ms;
    if (cod_get_i64(p, end, &t.max) < 0 || t.max < 0 || cod_get_u8(p, end, &used) < 0 ||
        used > BURST_SLOTS)
        return -1;
    if (used) {
        t.ring = calloc(BURST_SLOTS, sizeof *t.ring);
        if (!t.ring) abort();
    }
    for (unsigned i = 0; i < used; i++) {
        uint8_t idx;
        burst_slot sl;
        if (cod_get_u8(p, end, &idx) < 0 || cod_get_i64(p, end, &sl.epoch) < 0 ||
            cod_get_i64(p, end, &sl.count) < 0)
            goto err;
        if (idx >= BURST_SLOTS || t.ring[idx].count || sl.count <= 0 || sl.count > t.max ||
            sl.epoch % S != 0 || slot_of(sl.epoch, S) != idx)
            goto err;
        t.ring[idx] = sl;
    }
    burst_destroy(f, st);
    *(burst_st *)st = t;
    return 0;
err:
    free(t.ring);
    return -1;
}

const struct op_vtable op_burst_count = {
    .name = "burst_count",
    .flags = OPF_SUB_WINDOW,
    .state_size = sizeof(burst_st),
    .parse = burst_parse,
    .update = burst_update,
    .read = burst_read,
    .destroy = burst_destroy,
    .encode = burst_encode,
    .decode = burst_decode,
};
