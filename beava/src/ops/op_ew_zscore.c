/*
 * op_ew_zscore.c - `ew_zscore`: z-score of the latest value against the exponentially
 * weighted mean and variance. `half_life`
 * required. Update rule and state in ewstat.h (shared with ewvar).
 * Output (last_value - mean) / sqrt(m2); null when empty or m2 <= 0.
 *
 * No read-time decay (see op_ewma.c): the latest value and the EW statistics it is
 * compared with are levels, unchanged between events. `window` is accepted and
 * ignored, as in the reference.
 *
 * State: ewstat (40 bytes).
 */
#include "ewstat.h"

static void ew_zscore_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const ewstat *s = st;
    if (s->n && s->m2 > 0) jsonw_f64(w, (s->last_value - s->mean) / sqrt(s->m2));
    else jsonw_null(w);
}

const struct op_vtable op_ew_zscore = {
    .name = "ew_zscore",
    .flags = OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(ewstat),
    .update = ewstat_update,
    .read = ew_zscore_read,
    .encode = ewstat_encode,
    .decode = ewstat_decode,
};
