/*
 * chain.h - stateless chain ops of a derivation: filter, select, drop, rename,
 * with_columns, map, cast, fillna.
 *
 * chain_compile() checks an `ops` array (group_by entries are skipped: the registry
 * handles them) against the schema of the rows entering it and produces the schema of
 * the rows leaving it; errors carry code "invalid_expression" and a path such as
 * "nodes[3].ops[1]". chain_apply() runs the compiled chain on one row.
 */
#ifndef BEAVA_CHAIN_H
#define BEAVA_CHAIN_H

#include <jansson.h>
#include <stdbool.h>
#include "err.h"
#include "expr.h"
#include "value.h"

typedef struct chain chain;

/* ops: the derivation's JSON `ops` array (may be NULL = empty). path_prefix: e.g.
 * "nodes[3]" (the op index is appended). On success *out is a chain (possibly empty,
 * never NULL) and out_schema is initialised with the propagated schema. */
int chain_compile(const json_t *ops, const bv_schema *in, const char *path_prefix,
                  chain **out, bv_schema *out_schema, bv_err *err);
void chain_free(chain *c);
bool chain_is_empty(const chain *c);

/* Apply to `in`, writing the result into `out` (out->fields storage is grown with
 * realloc when out->cap is too small; the caller frees out->fields). Returns false
 * when a filter dropped the row. Values may point into `in`, the expressions and
 * `arena`. */
bool chain_apply(const chain *c, const bv_row *in, bv_row *out, expr_arena *arena);

#endif
