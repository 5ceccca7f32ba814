/*
 * op_mean.c - `mean`: sum / n over the numeric values of `field`. Windowable. State: sumn
 * (16 bytes). Empty: null.
 */
#include "sumn.h"

static void mean_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const sumn *s = st;
    if (s->n) jsonw_f64(w, s->sum / (double)s->n);
    else jsonw_null(w);
}

const struct op_vtable op_mean = {
    .name = "mean",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(sumn),
    .update = sumn_update,
    .merge = sumn_merge,
    .read = mean_read,
    .encode = sumn_encode,
    .decode = sumn_decode,
};
