/*
 * expr.h - the expression language of `where`, `filter` and `with_columns`
 * (the reference's grammar, plus unparenthesised binary operators with the usual
 * precedence; expr.c lists the differences).
 *
 * expr_parse() compiles a source string into an immutable tree that is safe to evaluate
 * from many threads at once. Evaluation never fails: it follows SQL three-valued logic
 * and yields BV_NULL where the reference does. Strings produced during evaluation
 * (cast(x, str)) live in the caller's expr_arena, valid until the arena is reset.
 */
#ifndef BEAVA_EXPR_H
#define BEAVA_EXPR_H

#include <stdbool.h>
#include <stddef.h>
#include "err.h"
#include "value.h"

#define EXPR_MAX_DEPTH 512
#define EXPR_MAX_SOURCE 65536

typedef struct expr expr;

/* Scratch memory for one evaluation (or one chain application). */
typedef struct expr_arena {
    char buf[4096];
    size_t used;
} expr_arena;

static inline void expr_arena_reset(expr_arena *a) { a->used = 0; }

/* Parse. On failure returns NULL and sets err->code = "invalid_expression" with a reason
 * naming the offending position; the caller remaps the code (e.g. to
 * aggregation_invalid_where) and sets the path. Caller frees the result with expr_free. */
expr *expr_parse(const char *src, bv_err *err);
void expr_free(expr *e);

/* Visit every field name the expression references (cb returns false to stop early;
 * expr_foreach_field then returns false). */
bool expr_foreach_field(const expr *e, bool (*cb)(void *ctx, const char *field), void *ctx);

/* Position hints for the field references (made before the expression is shared):
 * a field is looked for first at its position in `schema`, then by name, so rows of
 * another field order read the same values. Names of EXPR_BIND_NAME_MAX bytes or more
 * get no hint. */
#define EXPR_BIND_NAME_MAX 256
void expr_bind_schema(expr *e, const bv_schema *schema);

/* Register-time type inference against a schema. The null literal's type is
 * reported as EXPR_TYPE_NULL. Returns 0 and sets *out, or -1 with err set
 * (code "invalid_expression"). */
#define EXPR_TYPE_NULL ((int)WT__COUNT)
int expr_typecheck(const expr *e, const bv_schema *schema, int *out, bv_err *err);

/* Evaluate against a row. Never fails; may return strings allocated in arena. */
bv_value expr_eval(const expr *e, const bv_row *row, expr_arena *arena);

/* True iff the predicate evaluates exactly to Bool(true). */
bool expr_matches(const expr *e, const bv_row *row, expr_arena *arena);

#endif
