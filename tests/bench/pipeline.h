/*
 * pipeline.h - a benchmark pipeline file, the shape of ../shared/data/bench/ (the *.json files):
 * {name, register:{nodes:[...]}, event_name, key_field, extra_fields:{name:type}}.
 *
 * The loader keeps the register envelope as compact JSON (sent verbatim to POST
 * /register), the generated event's shape (key field, extra fields with their types)
 * and, for the Redis peer and the smoke check, the tables fed by event_name with their
 * group keys and features (op, field, window). It understands only what those
 * consumers need: a table is a derivation with output_kind "table" whose first
 * upstream is event_name and which has a group_by op; chain ops are ignored.
 */
#ifndef BENCH_PIPELINE_H
#define BENCH_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { FT_F64, FT_I64, FT_STR } field_type;

typedef struct extra_field {
    char *name;       /* as in the file */
    char *json_name;  /* the name as a quoted, escaped JSON string */
    field_type type;
} extra_field;

typedef struct pl_feature {
    char *name;
    char *op;         /* "count", "sum", ... */
    char *field;      /* params.field, NULL when absent */
    int64_t window_ms;/* 0 = lifetime (no window or "forever") */
} pl_feature;

typedef struct pl_table {
    char *name;
    char **keys;      /* group_by keys */
    size_t nkeys;
    pl_feature *feats;
    size_t nfeats;
} pl_table;

typedef struct pipeline {
    char *name;
    char *register_json;  /* compact JSON of "register" */
    char *event_name;
    char *event_json;     /* quoted event name */
    char *key_field;
    char *key_json;       /* quoted key field name */
    extra_field *extra;   /* without key_field / event_time duplicates */
    size_t nextra;
    pl_table *tables;     /* tables fed by event_name */
    size_t ntables;
} pipeline;

/* Loads `path` into *out. Returns 0, or -1 with a message in err; on failure *out
 * holds nothing that needs freeing. The caller frees a loaded pipeline with
 * pipeline_free. */
int pipeline_load(const char *path, pipeline *out, char *err, size_t errlen);
void pipeline_free(pipeline *pl);

/* The table grouped by exactly [key_field], or NULL. */
const pl_table *pipeline_key_table(const pipeline *pl);
/* Index of the extra field called name, or -1. */
int pipeline_extra_index(const pipeline *pl, const char *name);
/* Parses "\d+(ms|s|m|h|d)" or "forever" (0). Returns -1 when malformed. */
int64_t pipeline_duration_ms(const char *s);

#endif
