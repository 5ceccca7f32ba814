/*
 * op_top_k.c - `top_k(k)`: the k (default 10, 1..1024) most frequent values of `field`
 * as [{"count":c,"value":v}], count desc then value asc (strings < ints < floats <
 * bools); exact up to 1024 distinct values, then CMS 2048x4 + k-heap
 * (sketch/topk.h). Accepts Str, I64, F64, Bool values.
 * Windowable. State: topk (32 bytes, storage allocated on first value). Empty: [].
 */
#include <stdlib.h>
#include "op.h"
#include "param.h"
#include "topk.h"

static int topk_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    int64_t k;
    int r = param_int(params, "k", &k);
    if (r < 0 || (r == 1 && (k < 1 || k > TOPK_MAX_K))) {
        bv_err_set(err, "invalid_top_k_k", path, "top_k k must be an integer in [1, 1024]");
        return -1;
    }
    f->p.k = r == 1 ? k : 10;
    return 0;
}

static void topk_update(const feature *f, void *st, const op_input *in) {
    bv_kind k = in->v->kind;
    if (k != BV_STR && k != BV_I64 && k != BV_F64 && k != BV_BOOL) return;
    topk_add(st, in->v, (uint32_t)f->p.k);
}

static void topk_prefetch_op(const feature *f, const void *st, const bv_value *v) {
    (void)f;
    bv_kind k = v->kind;
    if (k == BV_STR || k == BV_I64 || k == BV_F64 || k == BV_BOOL) topk_prefetch(st, v);
}

static void topk_merge_op(const feature *f, void *dst, const void *src) {
    topk_merge(dst, src, (uint32_t)f->p.k);
}

static void topk_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)q;
    topk_item *it;
    size_t n = topk_result(st, (uint32_t)f->p.k, &it);
    jsonw_arr_begin(w);
    for (size_t i = 0; i < n; i++) {
        jsonw_obj_begin(w);
        jsonw_key(w, "count");
        jsonw_u64(w, it[i].count);
        jsonw_key(w, "value");
        opval_write(it[i].v, w);
        jsonw_obj_end(w);
    }
    jsonw_arr_end(w);
    free(it);
}

static void topk_destroy(const feature *f, void *st) {
    (void)f;
    topk_free(st);
}

static void topk_encode_op(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    topk_encode(out, st);
}

static int topk_decode_op(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    return topk_decode(p, end, st, (uint32_t)f->p.k);
}

const struct op_vtable op_top_k = {
    .name = "top_k",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(topk),
    .parse = topk_parse,
    .update = topk_update,
    .prefetch = topk_prefetch_op,
    .merge = topk_merge_op,
    .read = topk_read,
    .destroy = topk_destroy,
    .encode = topk_encode_op,
    .decode = topk_decode_op,
};
