/*
 * op_first_n.c - `first_n(n)`: the first n non-null matched values of `field`, as a JSON
 * array, then frozen (reference-pipelines.md §2.4). Lifetime only; field and n in
 * [1,1024] required. State: valbuf (16 bytes; values copied). Empty: [].
 */
#include "op.h"
#include "valbuf.h"

static void first_n_update(const feature *f, void *st, const op_input *in) {
    valbuf_append(st, in->v, (uint32_t)f->p.n);
}

static void first_n_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    valbuf_write(st, w);
}

static void first_n_destroy(const feature *f, void *st) {
    (void)f;
    valbuf_free(st);
}

static void first_n_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    valbuf_encode(out, st);
}

static int first_n_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    valbuf_free(st);
    valbuf *b = st;
    /* an append-only list never wraps */
    if (valbuf_decode(p, end, b, (uint32_t)f->p.n) < 0 || b->head != 0) return -1;
    return 0;
}

const struct op_vtable op_first_n = {
    .name = "first_n",
    .flags = OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_N_REQUIRED,
    .state_size = sizeof(valbuf),
    .update = first_n_update,
    .read = first_n_read,
    .destroy = first_n_destroy,
    .encode = first_n_encode,
    .decode = first_n_decode,
};
