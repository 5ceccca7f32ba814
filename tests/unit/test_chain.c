/*
 * test_chain.c - unit tests of the stateless chain ops (chain.c): schema propagation and
 * register-time errors of filter, select, drop, rename, with_columns/map, cast, fillna,
 * and their per-row behaviour.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"

/* Input schema of every test: amount i64, country str, score f64, flag bool, blob bytes,
 * note str (optional), ts datetime. */
static void in_schema(bv_schema *s) {
    bv_schema_init(s);
    bv_schema_set(s, "amount", WT_I64);
    bv_schema_set(s, "country", WT_STR);
    bv_schema_set(s, "score", WT_F64);
    bv_schema_set(s, "flag", WT_BOOL);
    bv_schema_set(s, "blob", WT_BYTES);
    bv_schema_set(s, "note", WT_STR);
    bv_schema_set(s, "ts", WT_DATETIME);
    bv_schema_add_optional(s, "note");
}

typedef struct compiled {
    chain *c;
    bv_schema out;
} compiled;

static compiled compile_ok(const char *ops_json) {
    json_error_t jerr;
    json_t *ops = json_loads(ops_json, 0, &jerr);
    if (!ops) fail_msg("bad test JSON %s: %s", ops_json, jerr.text);
    bv_schema in;
    in_schema(&in);
    compiled r;
    bv_err err;
    bv_err_clear(&err);
    int rc = chain_compile(ops, &in, "nodes[3]", &r.c, &r.out, &err);
    json_decref(ops);                        /* the chain must not depend on the JSON */
    bv_schema_free(&in);
    if (rc != 0) fail_msg("compile of %s failed: %s %s %s", ops_json, err.code, err.path, err.reason);
    assert_non_null(r.c);
    return r;
}

static void compiled_free(compiled *r) {
    chain_free(r->c);
    bv_schema_free(&r->out);
}

static void compile_err(const char *ops_json, const char *path, const char *frag) {
    json_error_t jerr;
    json_t *ops = json_loads(ops_json, 0, &jerr);
    if (!ops) fail_msg("bad test JSON %s: %s", ops_json, jerr.text);
    bv_schema in;
    in_schema(&in);
    chain *c = (chain *)0x1;
    bv_schema out;
    bv_err err;
    bv_err_clear(&err);
    int rc = chain_compile(ops, &in, "nodes[3]", &c, &out, &err);
    json_decref(ops);
    bv_schema_free(&in);
    if (rc == 0) { chain_free(c); bv_schema_free(&out); fail_msg("compile of %s should fail", ops_json); }
    assert_null(c);
    assert_int_equal(out.n, 0);
    bv_schema_free(&out);                    /* harmless on the error path */
    assert_string_equal(err.code, "invalid_expression");
    assert_string_equal(err.path, path);
    if (!strstr(err.reason, frag)) fail_msg("%s: reason \"%s\" lacks \"%s\"", ops_json, err.reason, frag);
}

/* Schema as "name:type,name:type" and optional list as "a,b" for compact assertions. */
static void assert_schema(const bv_schema *s, const char *want, const char *want_opt) {
    char buf[512] = "";
    for (size_t i = 0; i < s->n; i++) {
        if (i) strcat(buf, ",");
        strcat(buf, s->names[i]);
        strcat(buf, ":");
        strcat(buf, bv_wtype_name(s->types[i]));
    }
    assert_string_equal(buf, want);
    buf[0] = 0;
    for (size_t i = 0; i < s->nopt; i++) {
        if (i) strcat(buf, ",");
        strcat(buf, s->optional[i]);
    }
    assert_string_equal(buf, want_opt);
}

/* A test row. */
static bv_field g_in_fields[16];
static bv_row g_in;

static void row_reset(void) {
    g_in.fields = g_in_fields;
    g_in.n = 0;
    g_in.cap = 0;
}

static void row_add(const char *name, bv_value v) {
    g_in_fields[g_in.n].name = name;
    g_in_fields[g_in.n].name_len = strlen(name);
    g_in_fields[g_in.n].value = v;
    g_in.n++;
}

static void std_row(void) {
    row_reset();
    row_add("amount", bv_i64(150));
    row_add("country", bv_str("US", 2));
    row_add("score", bv_f64(2.75));
    row_add("flag", bv_bool(true));
    row_add("blob", bv_str("\x01\x02", 2));
    row_add("ts", bv_i64(1700000000000));
}

/* Row field names in order, "a,b,c". */
static void assert_names(const bv_row *r, const char *want) {
    char buf[512] = "";
    for (size_t i = 0; i < r->n; i++) {
        if (i) strcat(buf, ",");
        strncat(buf, r->fields[i].name, r->fields[i].name_len);
    }
    assert_string_equal(buf, want);
}

static const bv_value *get(const bv_row *r, const char *name) {
    const bv_value *v = bv_row_get(r, name);
    if (!v) fail_msg("field %s missing", name);
    return v;
}

static void assert_i64(const bv_row *r, const char *name, int64_t want) {
    const bv_value *v = get(r, name);
    assert_int_equal(v->kind, BV_I64);
    assert_int_equal(v->u.i, want);
}

static void assert_f64(const bv_row *r, const char *name, double want) {
    const bv_value *v = get(r, name);
    assert_int_equal(v->kind, BV_F64);
    assert_true(v->u.f == want);
}

static void assert_str(const bv_row *r, const char *name, const char *want) {
    const bv_value *v = get(r, name);
    assert_int_equal(v->kind, BV_STR);
    assert_int_equal(v->u.s.len, strlen(want));
    assert_memory_equal(v->u.s.ptr, want, strlen(want));
}

static void assert_bool(const bv_row *r, const char *name, bool want) {
    const bv_value *v = get(r, name);
    assert_int_equal(v->kind, BV_BOOL);
    assert_int_equal(v->u.b, want);
}

static void assert_nullv(const bv_row *r, const char *name) {
    assert_int_equal(get(r, name)->kind, BV_NULL);
}

#define STD_SCHEMA "amount:i64,country:str,score:f64,flag:bool,blob:bytes,note:str,ts:datetime"

/* ---- tests --------------------------------------------------------------------------- */

static void test_empty(void **state) {
    (void)state;
    bv_schema in, out;
    in_schema(&in);
    chain *c = NULL;
    bv_err err;
    assert_int_equal(chain_compile(NULL, &in, "nodes[0]", &c, &out, &err), 0);
    assert_non_null(c);
    assert_true(chain_is_empty(c));
    assert_schema(&out, STD_SCHEMA, "note");
    std_row();
    bv_row o = { 0 };
    expr_arena ar;
    expr_arena_reset(&ar);
    assert_true(chain_apply(c, &g_in, &o, &ar));
    assert_names(&o, "amount,country,score,flag,blob,ts");
    assert_i64(&o, "amount", 150);
    free(o.fields);
    chain_free(c);
    bv_schema_free(&out);
    bv_schema_free(&in);

    compiled r = compile_ok("[]");
    assert_true(chain_is_empty(r.c));
    compiled_free(&r);
    /* Only group_by: still empty. */
    r = compile_ok("[{\"op\":\"group_by\",\"keys\":[\"country\"],\"agg\":{}}]");
    assert_true(chain_is_empty(r.c));
    assert_schema(&r.out, STD_SCHEMA, "note");
    compiled_free(&r);
}

static void test_filter(void **state) {
    (void)state;
    compiled r = compile_ok("[{\"op\":\"filter\",\"expr\":\"amount > 100 and country == 'US'\"}]");
    assert_false(chain_is_empty(r.c));
    assert_schema(&r.out, STD_SCHEMA, "note");
    bv_row o = { 0 };
    expr_arena ar;
    expr_arena_reset(&ar);
    std_row();
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_names(&o, "amount,country,score,flag,blob,ts");
    g_in_fields[0].value = bv_i64(50);
    assert_false(chain_apply(r.c, &g_in, &o, &ar));      /* false drops */
    g_in_fields[0].value = bv_null();
    assert_false(chain_apply(r.c, &g_in, &o, &ar));      /* null drops */
    compiled_free(&r);

    /* A non-bool result type is accepted at register time and drops every row. */
    r = compile_ok("[{\"op\":\"filter\",\"expr\":\"amount + 1\"}]");
    std_row();
    assert_false(chain_apply(r.c, &g_in, &o, &ar));
    compiled_free(&r);
    /* The reference's parenthesised form. */
    r = compile_ok("[{\"op\":\"filter\",\"expr\":\"((amount > 100) and (not (flag == false)))\"}]");
    std_row();
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    compiled_free(&r);
    free(o.fields);

    compile_err("[{\"op\":\"filter\",\"expr\":\"zz > 1\"}]", "nodes[3].ops[0]", "field 'zz' not found");
    compile_err("[{\"op\":\"filter\",\"expr\":\"amount = 1\"}]", "nodes[3].ops[0]", "at byte 7");
    compile_err("[{\"op\":\"filter\",\"expr\":\"amount > 's'\"}]", "nodes[3].ops[0]", "cannot compare i64 with str");
    compile_err("[{\"op\":\"filter\",\"expr\":\"quadkey(score, score, 7) > 0\"}]", "nodes[3].ops[0]",
                "unknown function 'quadkey'");
    compile_err("[{\"op\":\"filter\"}]", "nodes[3].ops[0]", "'expr'");
    compile_err("[{\"op\":\"filter\",\"expr\":1}]", "nodes[3].ops[0]", "'expr'");
}

static void test_select(void **state) {
    (void)state;
    compiled r = compile_ok("[{\"op\":\"select\",\"fields\":[\"score\",\"note\",\"amount\",\"score\"]}]");
    assert_schema(&r.out, "score:f64,note:str,amount:i64", "note");
    bv_row o = { 0 };
    expr_arena ar;
    expr_arena_reset(&ar);
    std_row();                               /* note absent: skipped */
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_names(&o, "score,amount");
    assert_f64(&o, "score", 2.75);
    assert_i64(&o, "amount", 150);
    row_add("note", bv_str("hi", 2));
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_names(&o, "score,note,amount");
    assert_str(&o, "note", "hi");
    free(o.fields);
    compiled_free(&r);

    r = compile_ok("[{\"op\":\"select\",\"fields\":[]}]");
    assert_schema(&r.out, "", "");
    compiled_free(&r);

    compile_err("[{\"op\":\"select\",\"fields\":[\"amount\",\"zz\"]}]", "nodes[3].ops[0]", "field 'zz' not found");
    compile_err("[{\"op\":\"select\",\"fields\":\"amount\"}]", "nodes[3].ops[0]", "'fields'");
    compile_err("[{\"op\":\"select\",\"fields\":[1]}]", "nodes[3].ops[0]", "fields[0] is not a string");
    /* A field removed by an earlier op is gone. */
    compile_err("[{\"op\":\"drop\",\"fields\":[\"amount\"]},{\"op\":\"select\",\"fields\":[\"amount\"]}]",
                "nodes[3].ops[1]", "field 'amount' not found");
}

static void test_drop(void **state) {
    (void)state;
    compiled r = compile_ok("[{\"op\":\"drop\",\"fields\":[\"blob\",\"note\"]}]");
    assert_schema(&r.out, "amount:i64,country:str,score:f64,flag:bool,ts:datetime", "");
    bv_row o = { 0 };
    expr_arena ar;
    expr_arena_reset(&ar);
    std_row();
    row_add("note", bv_null());
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_names(&o, "amount,country,score,flag,ts");
    assert_null(bv_row_get(&o, "blob"));
    free(o.fields);
    compiled_free(&r);

    compile_err("[{\"op\":\"drop\",\"fields\":[\"zz\"]}]", "nodes[3].ops[0]", "field 'zz' not found");
    compile_err("[{\"op\":\"drop\",\"fields\":[\"amount\",\"amount\"]}]", "nodes[3].ops[0]",
                "field 'amount' not found");
}

static void test_rename(void **state) {
    (void)state;
    compiled r = compile_ok("[{\"op\":\"rename\",\"mapping\":{\"note\":\"memo\",\"amount\":\"amt\"}}]");
    /* Renamed fields leave and come back at the end, in sorted old-name order. */
    assert_schema(&r.out, "country:str,score:f64,flag:bool,blob:bytes,ts:datetime,amt:i64,memo:str", "memo");
    bv_row o = { 0 };
    expr_arena ar;
    expr_arena_reset(&ar);
    std_row();
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_names(&o, "country,score,flag,blob,ts,amt");       /* absent note: nothing to rename */
    assert_i64(&o, "amt", 150);
    assert_null(bv_row_get(&o, "amount"));
    compiled_free(&r);

    /* An atomic swap. */
    r = compile_ok("[{\"op\":\"rename\",\"mapping\":{\"amount\":\"score\",\"score\":\"amount\"}}]");
    assert_schema(&r.out, "country:str,flag:bool,blob:bytes,note:str,ts:datetime,score:i64,amount:f64", "note");
    std_row();
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_names(&o, "country,flag,blob,ts,score,amount");
    assert_i64(&o, "score", 150);
    assert_f64(&o, "amount", 2.75);
    compiled_free(&r);

    /* Rename then use the new name downstream. */
    r = compile_ok("[{\"op\":\"rename\",\"mapping\":{\"amount\":\"amt\"}},"
                   "{\"op\":\"filter\",\"expr\":\"amt > 100\"}]");
    std_row();
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    compiled_free(&r);
    free(o.fields);

    compile_err("[{\"op\":\"rename\",\"mapping\":{\"amount\":\"country\"}}]", "nodes[3].ops[0]",
                "field 'country' already exists");
    compile_err("[{\"op\":\"rename\",\"mapping\":{\"zz\":\"yy\"}}]", "nodes[3].ops[0]", "field 'zz' not found");
    compile_err("[{\"op\":\"rename\",\"mapping\":{\"amount\":\"x\",\"score\":\"x\"}}]", "nodes[3].ops[0]",
                "both 'amount' and 'score' to 'x'");
    compile_err("[{\"op\":\"rename\",\"mapping\":{\"amount\":1}}]", "nodes[3].ops[0]", "not a string");
    compile_err("[{\"op\":\"rename\",\"mapping\":[\"amount\"]}]", "nodes[3].ops[0]", "'mapping'");
}

static void test_with_columns(void **state) {
    (void)state;
    /* Sorted order: a_double first, then b_plus referencing it, then c_null. */
    compiled r = compile_ok("[{\"op\":\"with_columns\",\"exprs\":{"
                            "\"c_null\":\"null\",\"b_plus\":\"a_double + 1\",\"a_double\":\"amount * 2\","
                            "\"note\":\"cast(amount, str)\",\"big\":\"score > 2.0\"}}]");
    assert_schema(&r.out, STD_SCHEMA ",a_double:i64,b_plus:i64,big:bool,c_null:str", "");
    bv_row o = { 0 };
    expr_arena ar;
    expr_arena_reset(&ar);
    std_row();
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_names(&o, "amount,country,score,flag,blob,ts,a_double,b_plus,big,c_null,note");
    assert_i64(&o, "a_double", 300);
    assert_i64(&o, "b_plus", 301);
    assert_bool(&o, "big", true);
    assert_nullv(&o, "c_null");              /* assigned even when null */
    assert_str(&o, "note", "150");           /* added although optional and absent */
    compiled_free(&r);

    /* Overwriting an existing column keeps its position and takes the new type. */
    r = compile_ok("[{\"op\":\"map\",\"exprs\":{\"amount\":\"amount / 0\",\"score\":\"score * 2\"}}]");
    assert_schema(&r.out, STD_SCHEMA, "note");
    std_row();
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_names(&o, "amount,country,score,flag,blob,ts");
    assert_nullv(&o, "amount");
    assert_f64(&o, "score", 5.5);
    compiled_free(&r);

    /* Many new columns: the out row grows past its first capacity. */
    char ops[4096] = "[{\"op\":\"with_columns\",\"exprs\":{";
    for (int i = 0; i < 40; i++) {
        char one[64];
        snprintf(one, sizeof one, "%s\"c%02d\":\"amount + %d\"", i ? "," : "", i, i);
        strcat(ops, one);
    }
    strcat(ops, "}}]");
    r = compile_ok(ops);
    std_row();
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_int_equal(o.n, 46);
    assert_i64(&o, "c39", 189);
    assert_i64(&o, "c00", 150);
    compiled_free(&r);
    free(o.fields);

    /* A later column in sorted order is not visible to an earlier one. */
    compile_err("[{\"op\":\"with_columns\",\"exprs\":{\"a\":\"b + 1\",\"b\":\"1\"}}]", "nodes[3].ops[0]",
                "field 'b' not found");
    compile_err("[{\"op\":\"with_columns\",\"exprs\":{\"x\":\"flag + 1\"}}]", "nodes[3].ops[0]",
                "with_columns column 'x'");
    compile_err("[{\"op\":\"with_columns\",\"exprs\":{\"x\":\"(amount\"}}]", "nodes[3].ops[0]", "at byte 7");
    compile_err("[{\"op\":\"map\",\"exprs\":{\"x\":\"foo(amount)\"}}]", "nodes[3].ops[0]", "unknown function 'foo'");
    compile_err("[{\"op\":\"with_columns\",\"exprs\":{\"x\":3}}]", "nodes[3].ops[0]", "not a string");
    compile_err("[{\"op\":\"with_columns\"}]", "nodes[3].ops[0]", "'exprs'");
}

static void test_with_columns_optional(void **state) {
    (void)state;
    /* A known type clears the optional mark; a bare null keeps it. */
    compiled r = compile_ok("[{\"op\":\"with_columns\",\"exprs\":{\"note\":\"'x'\"}}]");
    assert_schema(&r.out, STD_SCHEMA, "");
    compiled_free(&r);
    r = compile_ok("[{\"op\":\"with_columns\",\"exprs\":{\"note\":\"null\"}}]");
    assert_schema(&r.out, STD_SCHEMA, "note");
    compiled_free(&r);
}

static void test_cast(void **state) {
    (void)state;
    compiled r = compile_ok("[{\"op\":\"cast\",\"type_map\":{\"amount\":\"str\",\"score\":\"int\","
                            "\"flag\":\"float\",\"country\":\"bool\",\"note\":\"int\",\"ts\":\"int\"}}]");
    assert_schema(&r.out, "amount:str,country:bool,score:i64,flag:f64,blob:bytes,note:i64,ts:i64", "note");
    bv_row o = { 0 };
    expr_arena ar;
    expr_arena_reset(&ar);
    std_row();
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_names(&o, "amount,country,score,flag,blob,ts");   /* absent note untouched */
    assert_str(&o, "amount", "150");
    assert_i64(&o, "score", 2);
    assert_f64(&o, "flag", 1.0);
    assert_nullv(&o, "country");             /* "US" is not a bool */
    assert_i64(&o, "ts", 1700000000000);
    /* Present note: cast applies. */
    row_add("note", bv_str("42", 2));
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_i64(&o, "note", 42);
    compiled_free(&r);

    /* Chained casts go through the arena: str then back to float. */
    r = compile_ok("[{\"op\":\"cast\",\"type_map\":{\"score\":\"str\"}},"
                   "{\"op\":\"filter\",\"expr\":\"score == '2.75'\"},"
                   "{\"op\":\"cast\",\"type_map\":{\"score\":\"float\"}}]");
    assert_schema(&r.out, STD_SCHEMA, "note");
    std_row();
    expr_arena_reset(&ar);
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_f64(&o, "score", 2.75);
    compiled_free(&r);
    free(o.fields);

    compile_err("[{\"op\":\"cast\",\"type_map\":{\"blob\":\"str\"}}]", "nodes[3].ops[0]",
                "bytes fields cannot be cast");
    compile_err("[{\"op\":\"cast\",\"type_map\":{\"amount\":\"i64\"}}]", "nodes[3].ops[0]",
                "unknown cast target 'i64'");
    compile_err("[{\"op\":\"cast\",\"type_map\":{\"amount\":\"bytes\"}}]", "nodes[3].ops[0]",
                "unknown cast target 'bytes'");
    compile_err("[{\"op\":\"cast\",\"type_map\":{\"amount\":5}}]", "nodes[3].ops[0]", "unknown cast target");
    compile_err("[{\"op\":\"cast\",\"type_map\":{\"zz\":\"int\"}}]", "nodes[3].ops[0]", "field 'zz' not found");
}

static void test_fillna(void **state) {
    (void)state;
    compiled r = compile_ok("[{\"op\":\"fillna\",\"defaults\":{\"note\":\"n/a\",\"score\":0,"
                            "\"country\":[1,2],\"flag\":false}}]");
    assert_schema(&r.out, STD_SCHEMA, "");
    bv_row o = { 0 };
    expr_arena ar;
    expr_arena_reset(&ar);
    std_row();
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_names(&o, "amount,country,score,flag,blob,ts");   /* absent note is NOT added */
    assert_f64(&o, "score", 2.75);           /* present non-null values stay */
    assert_str(&o, "country", "US");
    assert_bool(&o, "flag", true);
    row_add("note", bv_null());
    g_in_fields[2].value = bv_null();        /* score */
    g_in_fields[1].value = bv_null();        /* country: list default -> null */
    g_in_fields[3].value = bv_null();        /* flag */
    assert_true(chain_apply(r.c, &g_in, &o, &ar));
    assert_str(&o, "note", "n/a");
    assert_i64(&o, "score", 0);              /* default not type-checked */
    assert_nullv(&o, "country");
    assert_bool(&o, "flag", false);
    free(o.fields);
    compiled_free(&r);

    compile_err("[{\"op\":\"fillna\",\"defaults\":{\"zz\":1}}]", "nodes[3].ops[0]", "field 'zz' not found");
    compile_err("[{\"op\":\"fillna\",\"defaults\":1}]", "nodes[3].ops[0]", "'defaults'");
}

static void test_group_by_skipped_and_paths(void **state) {
    (void)state;
    compiled r = compile_ok("[{\"op\":\"filter\",\"expr\":\"amount > 1\"},"
                            "{\"op\":\"group_by\",\"keys\":[\"country\"],\"agg\":{\"n\":{\"op\":\"count\"}}},"
                            "{\"op\":\"select\",\"fields\":[\"country\"]}]");
    assert_schema(&r.out, "country:str", "");
    compiled_free(&r);
    compile_err("[{\"op\":\"filter\",\"expr\":\"amount > 1\"},{\"op\":\"group_by\"},"
                "{\"op\":\"select\",\"fields\":[\"zz\"]}]", "nodes[3].ops[2]", "field 'zz' not found");
    /* Unknown op kinds and malformed entries are reported, not trusted. */
    compile_err("[{\"op\":\"join\"}]", "nodes[3].ops[0]", "unknown op 'join'");
    compile_err("[{\"op\":\"filter\",\"expr\":\"amount > 1\"},7]", "nodes[3].ops[1]", "string 'op'");
    compile_err("[{\"kind\":\"filter\"}]", "nodes[3].ops[0]", "string 'op'");
    compile_err("{\"op\":\"filter\"}", "nodes[3].ops", "ops must be an array");

    /* An empty prefix gives a bare path. */
    json_t *ops = json_loads("[{\"op\":\"drop\",\"fields\":[\"zz\"]}]", 0, NULL);
    bv_schema in, out;
    in_schema(&in);
    chain *c;
    bv_err err;
    assert_int_equal(chain_compile(ops, &in, "", &c, &out, &err), -1);
    assert_string_equal(err.path, "ops[0]");
    assert_int_equal(chain_compile(ops, &in, NULL, &c, &out, &err), -1);
    assert_string_equal(err.path, "ops[0]");
    json_decref(ops);
    bv_schema_free(&in);
}

static void test_pipeline(void **state) {
    (void)state;
    /* All ops together, in order, on one row, and the out row reused across rows. */
    compiled r = compile_ok(
        "[{\"op\":\"fillna\",\"defaults\":{\"note\":\"none\"}},"
        "{\"op\":\"with_columns\",\"exprs\":{\"amount_usd\":\"cast(amount, float) / 100.0\"}},"
        "{\"op\":\"filter\",\"expr\":\"amount_usd >= 1.0\"},"
        "{\"op\":\"rename\",\"mapping\":{\"country\":\"cc\"}},"
        "{\"op\":\"drop\",\"fields\":[\"blob\",\"ts\"]},"
        "{\"op\":\"cast\",\"type_map\":{\"flag\":\"str\"}},"
        "{\"op\":\"select\",\"fields\":[\"cc\",\"amount_usd\",\"flag\",\"note\"]}]");
    assert_schema(&r.out, "cc:str,amount_usd:f64,flag:str,note:str", "");
    bv_row o = { 0 };
    expr_arena ar;
    for (int i = 0; i < 3; i++) {
        expr_arena_reset(&ar);
        std_row();
        row_add("note", bv_null());
        g_in_fields[0].value = bv_i64(i == 1 ? 50 : 250);
        bool kept = chain_apply(r.c, &g_in, &o, &ar);
        if (i == 1) { assert_false(kept); continue; }
        assert_true(kept);
        assert_names(&o, "cc,amount_usd,flag,note");
        assert_str(&o, "cc", "US");
        assert_f64(&o, "amount_usd", 2.5);
        assert_str(&o, "flag", "true");
        assert_str(&o, "note", "none");
    }
    /* The input row is never modified. */
    assert_string_equal(g_in_fields[1].name, "country");
    assert_int_equal(g_in.n, 7);
    free(o.fields);
    compiled_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_filter),
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_drop),
        cmocka_unit_test(test_rename),
        cmocka_unit_test(test_with_columns),
        cmocka_unit_test(test_with_columns_optional),
        cmocka_unit_test(test_cast),
        cmocka_unit_test(test_fillna),
        cmocka_unit_test(test_group_by_skipped_and_paths),
        cmocka_unit_test(test_pipeline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
