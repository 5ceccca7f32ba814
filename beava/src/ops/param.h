/*
 * param.h - typed reads of an agg spec's `params` object, shared by the kinds' parse
 * hooks and feature_compile. Each returns 0 when the key is absent (or JSON null),
 * 1 when present and of the right type (*out set), -1 when present with a wrong type.
 */
#ifndef BEAVA_OPS_PARAM_H
#define BEAVA_OPS_PARAM_H

#include <jansson.h>
#include <stdint.h>

/* A JSON integer (reals are not integers, as for serde's u64). */
int param_int(const json_t *params, const char *key, int64_t *out);
/* A JSON number (integer or real). */
int param_num(const json_t *params, const char *key, double *out);
/* A JSON string (borrowed). */
int param_str(const json_t *params, const char *key, const char **out);

#endif
