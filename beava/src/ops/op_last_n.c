/*
 * op_last_n.c - `last_n(n)`: the latest n non-null matched values of `field`, oldest to
 * newest (reference-pipelines.md §2.4). Lifetime only; field and n in [1,1024]
 * required. State: valbuf ring (16 bytes; values copied). Empty: [].
 */
#include "ring.h"

static void last_n_update(const feature *f, void *st, const op_input *in) {
    valbuf_push(st, in->v, (uint32_t)f->p.n);
}

static void last_n_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    valbuf_write(st, w);
}

static int last_n_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    return ring_decode(st, p, end, (uint32_t)f->p.n);
}

const struct op_vtable op_last_n = {
    .name = "last_n",
    .flags = OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_N_REQUIRED,
    .state_size = sizeof(valbuf),
    .update = last_n_update,
    .read = last_n_read,
    .destroy = ring_destroy,
    .encode = ring_encode,
    .decode = last_n_decode,
};
