/*
 * op_bloom_member.c - `bloom_member`: whether the latest value had been seen before
 * (Bloom filter; DECISIONS §4) (reference-pipelines.md §2.3 row 12, §2.5).
 * Known, with its register-time checks (no window: window_not_supported; fpr in (0,1):
 * invalid_bloom_fpr); not implemented yet, so feature_compile rejects it with
 * aggregation_unknown_op.
 */
#include "op.h"
#include "param.h"

static int bloom_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    double fpr = 0.01;
    int64_t n = 1024;
    int r = param_num(params, "target_fpr", &fpr);
    if (r == 0) r = param_num(params, "fpr", &fpr);
    if (r < 0 || !(fpr > 0 && fpr < 1)) {
        bv_err_set(err, "invalid_bloom_fpr", path, "bloom_member fpr must be a number in (0, 1)");
        return -1;
    }
    if (param_int(params, "expected_n", &n) == 0) param_int(params, "capacity", &n);
    f->p.fpr = fpr;
    f->p.expected_n = n > 0 ? n : 1024;
    return 0;
}

const struct op_vtable op_bloom_member = {
    .name = "bloom_member",
    .flags = OPF_NO_WINDOW | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .parse = bloom_parse,
};
