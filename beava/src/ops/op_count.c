/*
 * op_count.c - `count`: +1 per matched event (reference-pipelines.md §2.4).
 * Windowable. State: int64 (8 bytes). Empty: 0.
 */
#include "counter.h"
#include "op.h"
#include "codec.h"

static void count_update(const feature *f, void *st, const op_input *in) {
    (void)f; (void)in;
    cnt_inc((int64_t *)st);
}

static void count_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    *(int64_t *)dst = cnt_add(*(int64_t *)dst, *(const int64_t *)src);
}

static void count_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    jsonw_i64(w, *(const int64_t *)st);
}

static void count_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    cod_put_i64(out, *(const int64_t *)st);
}

static int count_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    int64_t v;
    if (cod_get_i64(p, end, &v) < 0 || v < 0) return -1;
    *(int64_t *)st = v;
    return 0;
}

const struct op_vtable op_count = {
    .name = "count",
    .flags = OPF_WINDOWABLE,
    .state_size = sizeof(int64_t),
    .update = count_update,
    .merge = count_merge,
    .read = count_read,
    .encode = count_encode,
    .decode = count_decode,
};
