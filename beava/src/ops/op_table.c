/*
 * op_table.c - the one registry of operator kinds.
 *
 * Adding a kind: write ops/op_<name>.c defining `const struct op_vtable op_<name>`,
 * then add X(<name>) below. The table is const and searched linearly (55 names, only
 * at register time).
 */
#include <string.h>
#include "op.h"

#define OP_KINDS(X) \
    X(count) X(sum) X(mean) X(min) X(max) X(var) X(std) X(ratio) X(n_unique) \
    X(quantile) X(top_k) X(bloom_member) X(entropy) X(first) X(last) X(first_n) \
    X(last_n) X(lag) X(first_seen) X(last_seen) X(age) X(has_seen) X(time_since) \
    X(time_since_last_n) X(streak) X(max_streak) X(negative_streak) \
    X(first_seen_in_window) X(ewma) X(ewvar) X(ew_zscore) X(decayed_sum) \
    X(decayed_count) X(twa) X(rate_of_change) X(inter_arrival_stats) X(burst_count) \
    X(delta_from_prev) X(trend) X(trend_residual) X(outlier_count) \
    X(value_change_count) X(z_score) X(histogram) X(hour_of_day_histogram) \
    X(dow_hour_histogram) X(seasonal_deviation) X(event_type_mix) X(most_recent_n) \
    X(reservoir_sample) X(geo_velocity) X(geo_distance) X(geo_spread) \
    X(distance_from_home)

#define DECLARE(n) extern const struct op_vtable op_##n;
OP_KINDS(DECLARE)
#undef DECLARE

#define REF(n) &op_##n,
static const struct op_vtable *const op_table[] = { OP_KINDS(REF) };
#undef REF

static const struct { const char *alias; const struct op_vtable *vt; } op_aliases[] = {
    { "ema", &op_ewma },
};

const struct op_vtable *op_lookup(const char *name) {
    for (size_t i = 0; i < sizeof op_table / sizeof op_table[0]; i++)
        if (strcmp(op_table[i]->name, name) == 0) return op_table[i];
    for (size_t i = 0; i < sizeof op_aliases / sizeof op_aliases[0]; i++)
        if (strcmp(op_aliases[i].alias, name) == 0) return op_aliases[i].vt;
    return NULL;
}

const struct op_vtable *op_kind_at(size_t i) {
    return i < sizeof op_table / sizeof op_table[0] ? op_table[i] : NULL;
}
