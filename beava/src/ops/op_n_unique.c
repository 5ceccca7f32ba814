/*
 * op_n_unique.c - `n_unique`: number of distinct non-null values of `field`, exact up to
 * 1024 distinct 64-bit typed hashes (I64 5 and F64 5.0 differ), then HLL++ p=12
 * (sketch/distinct.h). i64 output. Windowable (windows
 * union the buckets' sets). State: distinct (16 bytes, storage allocated on first
 * value). Empty: 0.
 */
#include "op.h"
#include "opval.h"
#include "distinct.h"

static void nu_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    distinct_add(st, opval_hash(in->v));
}

static void nu_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)f;
    distinct_prefetch(st, distinct_prefetch_hashes(st) ? opval_hash(v) : 0);
}

static void nu_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    distinct_merge(dst, src);
}

static void nu_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    jsonw_u64(w, distinct_count(st));
}

static void nu_destroy(const feature *f, void *st) {
    (void)f;
    distinct_free(st);
}

static void nu_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    distinct_encode(out, st);
}

static int nu_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    return distinct_decode(p, end, st);
}

const struct op_vtable op_n_unique = {
    .name = "n_unique",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(distinct),
    .update = nu_update,
    .prefetch = nu_prefetch,
    .merge = nu_merge,
    .read = nu_read,
    .destroy = nu_destroy,
    .encode = nu_encode,
    .decode = nu_decode,
};
