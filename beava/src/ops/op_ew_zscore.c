/*
 * op_ew_zscore.c - `ew_zscore`: (last value - EW mean) / sqrt(EW variance) of the
 * numeric values of `field`; null while the variance is <= 0 (reference-pipelines.md
 * §2.4; ewvar.h). half_life required. State: 40 bytes. Empty: null.
 */
#include "ewvar.h"

static void ewz_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const ewvar_st *s = st;
    if (!s->seeded || !(s->m2 > 0)) { jsonw_null(w); return; }
    jsonw_f64(w, (s->last_value - s->mean) / sqrt(s->m2));
}

const struct op_vtable op_ew_zscore = {
    .name = "ew_zscore",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(ewvar_st),
    .update = ewvar_update,
    .read = ewz_read,
    .encode = ewvar_encode,
    .decode = ewvar_decode,
};
