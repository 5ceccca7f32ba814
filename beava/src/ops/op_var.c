/*
 * op_var.c - `var`: sample (n-1) variance of the numeric values of `field`, Welford
 * update, Chan merge for windows. Windowable.
 * State: welford (24 bytes). Empty: null (n < 2).
 */
#include "op.h"
#include "welford.h"

static void var_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    double x;
    if (bv_as_f64(in->v, &x)) welford_add(st, x);
}

static void var_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    welford_merge(dst, src);
}

static void var_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    double v;
    if (welford_var(st, &v)) jsonw_f64(w, v);
    else jsonw_null(w);
}

static void var_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    welford_encode(out, st);
}

static int var_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    return welford_decode(p, end, st);
}

const struct op_vtable op_var = {
    .name = "var",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(welford),
    .update = var_update,
    .merge = var_merge,
    .read = var_read,
    .encode = var_encode,
    .decode = var_decode,
};
