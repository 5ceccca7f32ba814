/*
 * yamldoc.h — YAML text to JSON values (jansson), for control.yaml and pipeline manifests.
 *
 * Mapping: mappings -> objects, sequences -> arrays, plain scalars are typed the YAML 1.2
 * core-schema way (null/~, true/false, integers, floats), quoted and block scalars are
 * strings. Refused, with the line and column: anchors/aliases (no billion laughs), tags,
 * duplicate keys, non-scalar keys, nesting deeper than 32, more than 100,000 nodes.
 */
#ifndef CTL_YAMLDOC_H
#define CTL_YAMLDOC_H

#include <jansson.h>
#include <stddef.h>

/* Parse every document of `text` (len bytes). On success *docs_out is a new JSON array
 * with one element per document (caller owns the reference). `name` is used in messages
 * ("control.yaml:12:3: ..."). */
int ydoc_parse(const char *name, const char *text, size_t len, json_t **docs_out, char *err);

/* Read and parse a file (max 1 MiB). */
int ydoc_load_file(const char *path, json_t **docs_out, char *err);

#endif
