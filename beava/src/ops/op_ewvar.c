/*
 * op_ewvar.c - `ewvar`: exponentially weighted variance of the numeric values of
 * `field`. `half_life` required. Update
 * rule and state in ewstat.h (shared with ew_zscore). Output max(m2, 0); empty null
 * (0.0 after the first value).
 *
 * No read-time decay: a variance estimate, like the EW mean (see op_ewma.c), is a
 * level, not an amount that fades. `window` is accepted and ignored (the half-life is
 * the recency control; see op_ewma.c).
 *
 * State: ewstat (40 bytes).
 */
#include "ewstat.h"

static void ewvar_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const ewstat *s = st;
    if (s->n) jsonw_f64(w, s->m2 > 0 ? s->m2 : 0.0);
    else jsonw_null(w);
}

const struct op_vtable op_ewvar = {
    .name = "ewvar",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(ewstat),
    .update = ewstat_update,
    .read = ewvar_read,
    .encode = ewstat_encode,
    .decode = ewstat_decode,
};
