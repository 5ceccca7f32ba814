/*
 * op_ewvar.c - `ewvar`: exponentially weighted variance of the numeric values of
 * `field`, max(m2, 0) (reference-pipelines.md §2.4; ewvar.h). half_life required.
 * State: 40 bytes. Empty: null.
 */
#include "ewvar.h"

static void ewvar_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const ewvar_st *s = st;
    if (s->seeded) jsonw_f64(w, s->m2 > 0 ? s->m2 : 0.0); else jsonw_null(w);
}

const struct op_vtable op_ewvar = {
    .name = "ewvar",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(ewvar_st),
    .update = ewvar_update,
    .read = ewvar_read,
    .encode = ewvar_encode,
    .decode = ewvar_decode,
};
