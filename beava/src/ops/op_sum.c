/*
 * op_sum.c - `sum`: sum of the numeric values of `field` (I64 converted to f64), f64
 * output. Windowable. State: sumn (16 bytes).
 * Empty: null (no value contributed).
 */
#include "sumn.h"

static void sum_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const sumn *s = st;
    if (s->n) jsonw_f64(w, s->sum);
    else jsonw_null(w);
}

const struct op_vtable op_sum = {
    .name = "sum",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(sumn),
    .update = sumn_update,
    .merge = sumn_merge,
    .read = sum_read,
    .encode = sumn_encode,
    .decode = sumn_decode,
};
