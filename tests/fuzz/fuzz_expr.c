/*
 * fuzz_expr.c - libFuzzer entry point for the expression language (expr.c).
 *
 * Arbitrary bytes are parsed with expr_parse(); a parse failure must come with the code
 * "invalid_expression" and a reason naming a byte position. A successful parse is
 * walked with expr_foreach_field(), type-checked against a small schema and evaluated
 * (expr_eval / expr_matches) against a small fixed row covering every value kind, so the
 * lexer, parser, rewrites, type checker and evaluator all see the input. Leaks and
 * memory errors are the sanitizers' job.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -Ibeava/src tests/fuzz/fuzz_expr.c
 *        beava/src/expr.c beava/src/value.c beava/src/jsonw.c -ljansson -lm
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "expr.h"

static bool count_field(void *ctx, const char *field) {
    (void)field;
    ++*(size_t *)ctx;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *src = malloc(size + 1);
    if (!src) return 0;
    if (size) memcpy(src, data, size);
    src[size] = 0;

    bv_err err;
    bv_err_clear(&err);
    expr *e = expr_parse(src, &err);
    if (!e) {
        if (strcmp(err.code, "invalid_expression") != 0 || strncmp(err.reason, "at byte ", 8) != 0)
            __builtin_trap();
        free(src);
        return 0;
    }

    size_t nfields = 0;
    expr_foreach_field(e, count_field, &nfields);

    bv_schema schema;
    bv_schema_init(&schema);
    bv_schema_set(&schema, "a", WT_I64);
    bv_schema_set(&schema, "f", WT_F64);
    bv_schema_set(&schema, "s", WT_STR);
    bv_schema_set(&schema, "t", WT_BOOL);
    bv_schema_set(&schema, "n", WT_STR);
    bv_schema_set(&schema, "d", WT_DATETIME);
    bv_schema_set(&schema, "x.y", WT_I64);
    int type;
    bv_err_clear(&err);
    if (expr_typecheck(e, &schema, &type, &err) < 0 && strcmp(err.code, "invalid_expression") != 0)
        __builtin_trap();
    bv_schema_free(&schema);

    json_t *list = json_pack("[i,s]", 1, "x");
    bv_value lv = { .kind = BV_JSON };
    lv.u.j = list;
    bv_field fields[] = {
        { "a", 1, bv_i64(7) },
        { "big", 3, bv_i64(INT64_MAX) },
        { "small", 5, bv_i64(INT64_MIN) },
        { "zero", 4, bv_i64(0) },
        { "f", 1, bv_f64(2.5) },
        { "nan", 3, bv_f64(__builtin_nan("")) },
        { "s", 1, bv_str("hello", 5) },
        { "num", 3, bv_str("42", 2) },
        { "t", 1, bv_bool(true) },
        { "n", 1, bv_null() },
        { "d", 1, bv_i64(1700000000000) },
        { "x.y", 3, bv_i64(-3) },
        { "list", 4, lv },
    };
    bv_row row = { fields, sizeof fields / sizeof fields[0], 0 };
    expr_arena arena;
    expr_arena_reset(&arena);
    bv_value v = expr_eval(e, &row, &arena);
    if (v.kind == BV_STR && v.u.s.len && !v.u.s.ptr) __builtin_trap();
    (void)expr_matches(e, &row, &arena);
    if (arena.used > sizeof arena.buf) __builtin_trap();

    json_decref(list);
    expr_free(e);
    free(src);
    return 0;
}
