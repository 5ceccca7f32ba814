/*
 * param.c - typed reads of agg spec params (see param.h).
 */
#include "param.h"

static const json_t *get(const json_t *params, const char *key) {
    const json_t *v = params ? json_object_get(params, key) : NULL;
    return (v && !json_is_null(v)) ? v : NULL;
}

int param_int(const json_t *params, const char *key, int64_t *out) {
    const json_t *v = get(params, key);
    if (!v) return 0;
    if (!json_is_integer(v)) return -1;
    *out = (int64_t)json_integer_value(v);
    return 1;
}

int param_num(const json_t *params, const char *key, double *out) {
    const json_t *v = get(params, key);
    if (!v) return 0;
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    return 1;
}

int param_str(const json_t *params, const char *key, const char **out) {
    const json_t *v = get(params, key);
    if (!v) return 0;
    if (!json_is_string(v)) return -1;
    *out = json_string_value(v);
    return 1;
}
