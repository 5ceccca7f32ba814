/*
 * op_lag.c - `lag(n)`: the value exactly n matched non-null events before the latest
 * one: a ring of n+1 values answering with its oldest once full, else null
 * (reference-pipelines.md §2.4). Lifetime only; field and n in [1,1024] required.
 * State: valbuf ring (16 bytes; values copied). Empty: null.
 */
#include "ring.h"

static void lag_update(const feature *f, void *st, const op_input *in) {
    valbuf_push(st, in->v, (uint32_t)f->p.n + 1);
}

static void lag_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)q;
    const valbuf *b = st;
    if (b->n == (uint32_t)f->p.n + 1) opval_write(valbuf_at(b, 0), w);
    else jsonw_null(w);
}

static int lag_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    return ring_decode(st, p, end, (uint32_t)f->p.n + 1);
}

const struct op_vtable op_lag = {
    .name = "lag",
    .flags = OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_N_REQUIRED,
    .state_size = sizeof(valbuf),
    .update = lag_update,
    .read = lag_read,
    .destroy = ring_destroy,
    .encode = ring_encode,
    .decode = lag_decode,
};
