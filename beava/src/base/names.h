/*
 * names.h - the naming facts the server and the control daemon share, kept once: the
 * operator names, the aggregation parameter names, the name rule of events, derivations,
 * fields and features, and the duration syntax of windows and half-lives.
 *
 * Plain C on libc only: control/ links names.c as it is (the bv_names library), so a
 * manifest the control daemon accepts names exactly the operators and parameters the
 * server knows. ops/op_table.c builds the operator table from BV_OP_KINDS.
 */
#ifndef BEAVA_NAMES_H
#define BEAVA_NAMES_H

#include <stdbool.h>
#include <stdint.h>

/* The 54 operator kinds, in catalogue order. Adding a kind: add X(<name>) here and write
 * ops/op_<name>.c defining `const struct op_vtable op_<name>`. */
#define BV_OP_KINDS(X) \
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

/* Other op strings naming a kind above: A(alias, kind). `ema` is `ewma`. */
#define BV_OP_ALIASES(A) A(ema, ewma)

/* True when s is one of the 55 op strings (the kinds and their aliases). */
bool bv_op_name_known(const char *s);

/* The `params` keys some operator reads (an agg spec's other keys are ignored by the
 * server, refused by the control daemon's manifest translation). */
bool bv_param_name_known(const char *s);

/* The name rule of events, derivations, fields and features. */
#define BV_NAME_MAX 128                 /* bytes */
#define BV_NAME_RESERVED_PREFIX "_beava_"

typedef enum bv_name_problem {
    BV_NAME_OK,
    BV_NAME_EMPTY,
    BV_NAME_TOO_LONG,     /* longer than BV_NAME_MAX bytes */
    BV_NAME_PATTERN,      /* not [A-Za-z_][A-Za-z0-9_]* */
    BV_NAME_RESERVED,     /* starts with BV_NAME_RESERVED_PREFIX */
} bv_name_problem;

/* The first rule s breaks, in the order above (s must not be NULL). */
bv_name_problem bv_name_check(const char *s);
/* bv_name_check(s) == BV_NAME_OK; false for NULL. */
bool bv_name_valid(const char *s);

/* Duration strings: "<digits>(ms|s|m|h|d)" with a value > 0 that fits an int64 of ms
 * (no sign, no spaces, lowercase units), or "forever" (-> *ms = 0). Returns 0, or -1
 * (s NULL or malformed; *ms untouched). */
int bv_parse_duration(const char *s, int64_t *ms);

#endif
