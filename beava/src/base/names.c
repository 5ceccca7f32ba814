/*
 * names.c - the naming facts shared with the control daemon (names.h): op names, param
 * names, the name rule, the duration syntax. libc only.
 */
#include "names.h"

#include <string.h>

#define OP_NAME(n) #n,
#define OP_ALIAS(alias, kind) #alias,
static const char *const op_names[] = { BV_OP_KINDS(OP_NAME) BV_OP_ALIASES(OP_ALIAS) };
#undef OP_NAME
#undef OP_ALIAS

/* Every key an operator's parse hook or feature_compile reads from `params`, plus two
 * the reference accepted without using and so do we (`precision`; `baseline_window`,
 * see ops/op_z_score.c). */
static const char *const param_names[] = {
    "field", "window", "where", "expr", "n", "half_life", "sub_window", "sigma", "q", "k",
    "expected_n", "capacity", "target_fpr", "fpr", "buckets", "precision", "lat_field", "lat",
    "lon_field", "lon", "samples", "categories", "max_categories", "baseline_window",
};

static bool in_list(const char *const *list, size_t n, const char *s) {
    if (!s) return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0) return true;
    return false;
}

bool bv_op_name_known(const char *s) {
    return in_list(op_names, sizeof op_names / sizeof op_names[0], s);
}

bool bv_param_name_known(const char *s) {
    return in_list(param_names, sizeof param_names / sizeof param_names[0], s);
}

bv_name_problem bv_name_check(const char *s) {
    size_t n = strlen(s);
    if (n == 0) return BV_NAME_EMPTY;
    if (n > BV_NAME_MAX) return BV_NAME_TOO_LONG;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        bool digit = c >= '0' && c <= '9';
        if (!(alpha || (i > 0 && digit))) return BV_NAME_PATTERN;
    }
    if (strncmp(s, BV_NAME_RESERVED_PREFIX, sizeof BV_NAME_RESERVED_PREFIX - 1) == 0)
        return BV_NAME_RESERVED;
    return BV_NAME_OK;
}

bool bv_name_valid(const char *s) { return s && bv_name_check(s) == BV_NAME_OK; }

int bv_parse_duration(const char *s, int64_t *ms) {
    if (!s) return -1;
    if (strcmp(s, "forever") == 0) {
        *ms = 0;
        return 0;
    }
    const char *p = s;
    int64_t v = 0;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v)) return -1;
        p++;
    }
    int64_t unit;
    if (strcmp(p, "ms") == 0) unit = 1;
    else if (strcmp(p, "s") == 0) unit = 1000;
    else if (strcmp(p, "m") == 0) unit = 60000;
    else if (strcmp(p, "h") == 0) unit = 3600000;
    else if (strcmp(p, "d") == 0) unit = 86400000;
    else return -1;
    if (v <= 0 || __builtin_mul_overflow(v, unit, &v)) return -1;
    *ms = v;
    return 0;
}
