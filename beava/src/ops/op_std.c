/*
 * op_std.c - `std`: square root of the sample (n-1) variance of the numeric values of
 * `field`, Welford update, Chan merge for windows.
 * Windowable. State: welford (24 bytes). Empty: null (n < 2).
 */
#include <math.h>
#include "op.h"
#include "welford.h"

static void std_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    double x;
    if (bv_as_f64(in->v, &x)) welford_add(st, x);
}

static void std_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    welford_merge(dst, src);
}

static void std_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    double v;
    if (welford_var(st, &v)) jsonw_f64(w, sqrt(v > 0 ? v : 0));
    else jsonw_null(w);
}

static void std_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    welford_encode(out, st);
}

static int std_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    return welford_decode(p, end, st);
}

const struct op_vtable op_std = {
    .name = "std",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(welford),
    .update = std_update,
    .merge = std_merge,
    .read = std_read,
    .encode = std_encode,
    .decode = std_decode,
};
