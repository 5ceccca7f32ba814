/*
 * op_quantile.c - `quantile(q)`: the q-quantile (default 0.5, q in (0,1)) of the
 * numeric values of `field`: exact with linear interpolation at q*(n-1) up to 256
 * values, then UDDSketch alpha = 1% (sketch/quantile.h).
 * f64 output. Windowable. State: qstore (16 bytes, storage allocated on first value).
 * Empty: null.
 */
#include "op.h"
#include "param.h"
#include "quantile.h"

static int quantile_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    double q;
    int r = param_num(params, "q", &q);
    if (r < 0 || (r == 1 && !(q > 0 && q < 1))) {
        bv_err_set(err, "invalid_percentile_q", path, "quantile q must be a number in (0, 1)");
        return -1;
    }
    f->p.q = r == 1 ? q : 0.5;
    return 0;
}

static void quantile_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    double x;
    if (bv_as_f64(in->v, &x)) qs_add(st, x);
}

static void quantile_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)f; (void)v;
    qs_prefetch(st);
}

static void quantile_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    qs_merge(dst, src);
}

static void quantile_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)q;
    double v;
    if (qs_quantile(st, f->p.q, &v)) jsonw_f64(w, v);
    else jsonw_null(w);
}

static void quantile_destroy(const feature *f, void *st) {
    (void)f;
    qs_free(st);
}

static void quantile_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    qs_encode(out, st);
}

static int quantile_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    return qs_decode(p, end, st);
}

const struct op_vtable op_quantile = {
    .name = "quantile",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(qstore),
    .parse = quantile_parse,
    .update = quantile_update,
    .prefetch = quantile_prefetch,
    .merge = quantile_merge,
    .read = quantile_read,
    .destroy = quantile_destroy,
    .encode = quantile_encode,
    .decode = quantile_decode,
};
