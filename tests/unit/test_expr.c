/*
 * test_expr.c - unit tests of the expression language (expr.c): lexing, precedence with
 * and without parentheses, every operator, three-valued logic, arithmetic edge cases,
 * casts, builtins, rewrites, depth cap, malformed input and register-time type rules.
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

#include "expr.h"

/* ---- fixtures ------------------------------------------------------------------------ */

static json_t *g_list;
static bv_field g_fields[32];
static bv_row g_row;

static void add(const char *name, bv_value v) {
    g_fields[g_row.n].name = name;
    g_fields[g_row.n].name_len = strlen(name);
    g_fields[g_row.n].value = v;
    g_row.n++;
}

static int setup(void **state) {
    (void)state;
    g_row.fields = g_fields;
    g_row.n = 0;
    g_row.cap = 0;
    add("a", bv_i64(1));
    add("b", bv_i64(2));
    add("amount", bv_i64(150));
    add("f", bv_f64(2.5));
    add("s", bv_str("hello", 5));
    add("t", bv_bool(true));
    add("fl", bv_bool(false));
    add("n", bv_null());
    add("nan", bv_f64(NAN));
    add("big", bv_i64(INT64_MAX));
    add("small", bv_i64(INT64_MIN));
    add("country", bv_str("US", 2));
    add("zero", bv_i64(0));
    add("b.c", bv_i64(7));
    g_list = json_pack("[i,i]", 1, 2);
    bv_value lv;
    lv.kind = BV_JSON;
    lv.u.j = g_list;
    add("list", lv);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    json_decref(g_list);
    return 0;
}

static expr_arena g_arena;

/* Parse (must succeed), evaluate against g_row, hand the value to the checker, free. */
static bv_value eval_src(const char *src, expr **keep) {
    bv_err err;
    bv_err_clear(&err);
    expr *e = expr_parse(src, &err);
    if (!e) fail_msg("parse of \"%s\" failed: %s", src, err.reason);
    expr_arena_reset(&g_arena);
    *keep = e;
    return expr_eval(e, &g_row, &g_arena);
}

static void check_i64(const char *src, int64_t want) {
    expr *e;
    bv_value v = eval_src(src, &e);
    if (v.kind != BV_I64) fail_msg("\"%s\": kind %d, want i64 %lld", src, v.kind, (long long)want);
    if (v.u.i != want) fail_msg("\"%s\": %lld, want %lld", src, (long long)v.u.i, (long long)want);
    expr_free(e);
}

static void check_f64(const char *src, double want) {
    expr *e;
    bv_value v = eval_src(src, &e);
    if (v.kind != BV_F64) fail_msg("\"%s\": kind %d, want f64 %g", src, v.kind, want);
    if (isnan(want)) {
        if (!isnan(v.u.f)) fail_msg("\"%s\": %g, want NaN", src, v.u.f);
    } else if (v.u.f != want || signbit(v.u.f) != signbit(want)) {
        fail_msg("\"%s\": %.17g, want %.17g", src, v.u.f, want);
    }
    expr_free(e);
}

static void check_bool(const char *src, bool want) {
    expr *e;
    bv_value v = eval_src(src, &e);
    if (v.kind != BV_BOOL) fail_msg("\"%s\": kind %d, want bool %d", src, v.kind, want);
    if (v.u.b != want) fail_msg("\"%s\": %d, want %d", src, v.u.b, want);
    assert_int_equal(expr_matches(e, &g_row, &g_arena), want);
    expr_free(e);
}

static void check_null(const char *src) {
    expr *e;
    bv_value v = eval_src(src, &e);
    if (v.kind != BV_NULL) fail_msg("\"%s\": kind %d, want null", src, v.kind);
    assert_false(expr_matches(e, &g_row, &g_arena));
    expr_free(e);
}

static void check_str(const char *src, const char *want) {
    expr *e;
    bv_value v = eval_src(src, &e);
    if (v.kind != BV_STR) fail_msg("\"%s\": kind %d, want str \"%s\"", src, v.kind, want);
    if (v.u.s.len != strlen(want) || memcmp(v.u.s.ptr, want, v.u.s.len) != 0)
        fail_msg("\"%s\": \"%.*s\", want \"%s\"", src, (int)v.u.s.len, v.u.s.ptr, want);
    expr_free(e);
}

/* Must fail to parse with a reason starting "at byte <pos>:" and containing `frag`. */
static void check_parse_err(const char *src, size_t pos, const char *frag) {
    bv_err err;
    bv_err_clear(&err);
    expr *e = expr_parse(src, &err);
    if (e) { expr_free(e); fail_msg("\"%s\" parsed but should not", src); }
    assert_string_equal(err.code, "invalid_expression");
    char want[32];
    snprintf(want, sizeof want, "at byte %zu:", pos);
    if (strncmp(err.reason, want, strlen(want)) != 0)
        fail_msg("\"%s\": reason \"%s\" does not start with \"%s\"", src, err.reason, want);
    if (frag && !strstr(err.reason, frag))
        fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", src, err.reason, frag);
}

/* ---- schema for type checks ---------------------------------------------------------- */

static void make_schema(bv_schema *s) {
    bv_schema_init(s);
    bv_schema_set(s, "a", WT_I64);
    bv_schema_set(s, "f", WT_F64);
    bv_schema_set(s, "s", WT_STR);
    bv_schema_set(s, "t", WT_BOOL);
    bv_schema_set(s, "d", WT_DATETIME);
    bv_schema_set(s, "by", WT_BYTES);
    bv_schema_set(s, "x.y", WT_I64);
}

static void check_type(const char *src, int want) {
    bv_schema s;
    make_schema(&s);
    bv_err err;
    bv_err_clear(&err);
    expr *e = expr_parse(src, &err);
    if (!e) fail_msg("parse of \"%s\" failed: %s", src, err.reason);
    int t = -1;
    int rc = expr_typecheck(e, &s, &t, &err);
    expr_free(e);
    bv_schema_free(&s);
    if (rc != 0) fail_msg("typecheck of \"%s\" failed: %s", src, err.reason);
    if (t != want) fail_msg("\"%s\": type %d, want %d", src, t, want);
}

static void check_type_err(const char *src, const char *frag) {
    bv_schema s;
    make_schema(&s);
    bv_err err;
    bv_err_clear(&err);
    expr *e = expr_parse(src, &err);
    if (!e) fail_msg("parse of \"%s\" failed: %s", src, err.reason);
    int t = -1;
    int rc = expr_typecheck(e, &s, &t, &err);
    expr_free(e);
    bv_schema_free(&s);
    if (rc == 0) fail_msg("typecheck of \"%s\" passed (type %d) but should fail", src, t);
    assert_string_equal(err.code, "invalid_expression");
    if (!strstr(err.reason, frag)) fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", src, err.reason, frag);
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_literals(void **state) {
    (void)state;
    check_i64("42", 42);
    check_i64("-7", -7);
    check_i64("- 7", -7);
    check_i64("9223372036854775807", INT64_MAX);
    check_f64("2.5", 2.5);
    check_f64("-0.5", -0.5);
    check_f64("1.5e3", 1500.0);
    check_f64("2.5E-1", 0.25);
    check_f64("1.0e+2", 100.0);
    check_str("'hello world'", "hello world");
    check_str("'it\\'s'", "it's");
    check_str("'a\\\\b'", "a\\b");
    check_str("'a\\nb'", "a\\nb");            /* unknown escape: both bytes kept */
    check_str("'h\xc3\xa9llo'", "h\xc3\xa9llo");  /* bytes verbatim, no Latin-1 mangling */
    check_str("\"US\"", "US");
    check_str("\"say \\\"hi\\\"\"", "say \"hi\"");
    check_str("''", "");
    check_bool("true", true);
    check_bool("false", false);
    check_null("null");
    check_null("TRUE");                      /* keywords are case-sensitive: a missing field */
    check_i64("  \t\r\n a \n", 1);
}

static void test_fields(void **state) {
    (void)state;
    check_i64("a", 1);
    check_i64("b.c", 7);                     /* one dotted segment is part of the name */
    check_null("missing");
    check_null("n");
    check_str("s", "hello");
}

static void test_precedence(void **state) {
    (void)state;
    check_i64("1 + 2 * 3", 7);
    check_i64("(1 + 2) * 3", 9);
    check_i64("((1 + (2 * 3)))", 7);
    check_i64("10 - 2 - 3", 5);              /* left associative */
    check_i64("(10 - (2 - 3))", 11);
    check_i64("100 / 10 / 5", 2);
    check_i64("2 * 3 + 4 * 5", 26);
    check_i64("2 * (3 + 4) * 5", 70);
    check_i64("a - -1", 2);
    check_bool("a + 1 > 1", true);           /* arithmetic binds tighter than comparison */
    check_bool("((a + 1) > 1)", true);
    check_bool("true or false and false", true);      /* and binds tighter than or */
    check_bool("((true or false) and false)", false);
    check_bool("(true or (false and false))", true);
    check_bool("amount > 100 and country == 'US'", true);
    check_bool("((amount > 100) and (country == 'US'))", true);
    check_bool("amount > 100 and country == 'CA' or b == 2", true);
    check_bool("amount > 100 and (country == 'CA' or b == 3)", false);
    /* `not` at the Python level: below comparison, above and/or. */
    check_bool("not a == 1", false);         /* not (a == 1) */
    check_bool("not a == 2", true);
    check_bool("not true and false", false); /* (not true) and false */
    check_bool("not false or false", true);  /* (not false) or false */
    check_bool("not not true", true);
    check_bool("a == 1 and not b == 3", true);
    /* The reference form: `not` right after "(" negates the whole parenthesis. */
    check_bool("(not true and false)", true);
    check_bool("(not (a > 1))", true);
    check_bool("((not t) or fl)", false);
    check_bool("isnull(a + n)", true);       /* bare binary ops inside call arguments */
}

static void test_comparisons(void **state) {
    (void)state;
    const char *ops[] = { "==", "!=", "<", "<=", ">", ">=" };
    /* lhs, rhs, expected results for == != < <= > >= */
    struct { const char *l, *r; bool want[6]; } cases[] = {
        { "1", "2", { false, true, true, true, false, false } },
        { "2", "2", { true, false, false, true, false, true } },
        { "3", "2", { false, true, false, false, true, true } },
        { "1.5", "2.5", { false, true, true, true, false, false } },
        { "2", "2.0", { true, false, false, true, false, true } },      /* i64 vs f64 */
        { "2.5", "2", { false, true, false, false, true, true } },
        { "'abc'", "'abd'", { false, true, true, true, false, false } },
        { "'ab'", "'abc'", { false, true, true, true, false, false } },  /* prefix sorts first */
        { "'b'", "'abc'", { false, true, false, false, true, true } },
        { "'x'", "'x'", { true, false, false, true, false, true } },
        { "false", "true", { false, true, true, true, false, false } },
        { "true", "true", { true, false, false, true, false, true } },
        { "small", "big", { false, true, true, true, false, false } },
    };
    char src[128];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int k = 0; k < 6; k++) {
            snprintf(src, sizeof src, "%s %s %s", cases[i].l, ops[k], cases[i].r);
            check_bool(src, cases[i].want[k]);
            snprintf(src, sizeof src, "(%s %s %s)", cases[i].l, ops[k], cases[i].r);
            check_bool(src, cases[i].want[k]);
        }
    /* Strings compare as unsigned bytes. */
    check_bool("'\xc3\xa9' > 'z'", true);
    /* i64 vs i64 is exact beyond 2^53. */
    check_bool("9007199254740993 > 9007199254740992", true);
}

static void test_nan_and_cross_type(void **state) {
    (void)state;
    const char *ops[] = { "==", "!=", "<", "<=", ">", ">=" };
    char src[64];
    for (int k = 0; k < 6; k++) {
        snprintf(src, sizeof src, "nan %s nan", ops[k]);
        check_bool(src, false);
        snprintf(src, sizeof src, "nan %s 1", ops[k]);
        check_bool(src, false);
        snprintf(src, sizeof src, "1.5 %s nan", ops[k]);
        check_bool(src, false);
        /* Cross-type and null operands -> null. */
        snprintf(src, sizeof src, "'a' %s 1", ops[k]);
        check_null(src);
        snprintf(src, sizeof src, "true %s 1", ops[k]);
        check_null(src);
        snprintf(src, sizeof src, "s %s t", ops[k]);
        check_null(src);
        snprintf(src, sizeof src, "n %s 1", ops[k]);   /* a null field is not rewritten */
        check_null(src);
        snprintf(src, sizeof src, "list %s list", ops[k]);
        check_null(src);
    }
    check_f64("nan + 1", NAN);
}

static void test_arithmetic(void **state) {
    (void)state;
    check_i64("7 + 2", 9);
    check_i64("7 - 9", -2);
    check_i64("7 * -3", -21);
    check_f64("7 + 0.5", 7.5);
    check_f64("0.5 + 7", 7.5);
    check_f64("1.5 * 2", 3.0);
    check_f64("2 - 0.5", 1.5);
    check_f64("f * f", 6.25);
    check_null("a + n");
    check_null("n * 2");
    check_null("a + 's'");
    check_null("t + 1");
    check_null("s + s");
    check_null("a + missing + 1");
}

static void test_division(void **state) {
    (void)state;
    check_i64("7 / 2", 3);
    check_i64("-7 / 2", -3);                 /* truncates toward zero */
    check_i64("7 / -2", -3);
    check_i64("-7 / -2", 3);
    check_null("7 / 0");
    check_null("7 / zero");
    check_null("7 / 0 + 1");
    check_f64("7.0 / 2", 3.5);
    check_f64("7 / 2.0", 3.5);
    check_f64("7.0 / 0", INFINITY);
    check_f64("-7.0 / 0", -INFINITY);
    check_f64("7 / 0.0", INFINITY);
    check_f64("0.0 / 0", NAN);
    check_i64("small / -1", INT64_MAX);      /* the one overflowing division saturates */
}

static void test_saturation(void **state) {
    (void)state;
    check_i64("big + 1", INT64_MAX);
    check_i64("big + big", INT64_MAX);
    check_i64("small - 1", INT64_MIN);
    check_i64("small + small", INT64_MIN);
    check_i64("small - big", INT64_MIN);
    check_i64("big - small", INT64_MAX);
    check_i64("big * 2", INT64_MAX);
    check_i64("big * -2", INT64_MIN);
    check_i64("small * -1", INT64_MAX);
    check_i64("small * 2", INT64_MIN);
    check_i64("-9223372036854775807 - 10", INT64_MIN);
    check_i64("big + 1 - 1", INT64_MAX - 1);  /* saturates, then continues from the bound */
}

static void test_three_valued_logic(void **state) {
    (void)state;
    const char *v[] = { "true", "false", "null" };
    /* results indexed [l][r]: 1 true, 0 false, -1 null */
    int and_t[3][3] = { { 1, 0, -1 }, { 0, 0, 0 }, { -1, 0, -1 } };
    int or_t[3][3] = { { 1, 1, 1 }, { 1, 0, -1 }, { 1, -1, -1 } };
    char src[64];
    for (int l = 0; l < 3; l++)
        for (int r = 0; r < 3; r++) {
            for (int paren = 0; paren < 2; paren++) {
                snprintf(src, sizeof src, paren ? "(%s and %s)" : "%s and %s", v[l], v[r]);
                if (and_t[l][r] < 0) check_null(src); else check_bool(src, and_t[l][r]);
                snprintf(src, sizeof src, paren ? "(%s or %s)" : "%s or %s", v[l], v[r]);
                if (or_t[l][r] < 0) check_null(src); else check_bool(src, or_t[l][r]);
            }
        }
    check_bool("not true", false);
    check_bool("not false", true);
    check_null("not null");
    check_null("not 1");
    check_null("not s");
    /* Fields, not literals. */
    check_null("t and n");
    check_bool("fl and n", false);
    check_bool("n or t", true);
    /* Non-bool operands count as null, but a false side still wins. */
    check_null("1 and true");
    check_bool("1 and false", false);
    check_bool("'x' or true", true);
    check_null("'x' or false");
    /* Chains fold left to right. */
    check_bool("true and true and true", true);
    check_bool("true and null and false", false);
    check_null("true and null and true");
    check_bool("false or null or true", true);
    check_null("false or null or false");
}

static void test_null_rewrites(void **state) {
    (void)state;
    check_bool("(a == null)", false);
    check_bool("(n == null)", true);
    check_bool("(null == n)", true);
    check_bool("(null == a)", false);
    check_bool("(missing == null)", true);
    check_bool("(a != null)", true);
    check_bool("(n != null)", false);
    check_bool("(null != a)", true);
    check_bool("a == null", false);          /* unparenthesised too */
    check_bool("n != null or a == 1", true);
    check_bool("((a + n) == null)", true);
    check_bool("null == null", true);
    check_bool("(n == (null))", true);
}

static void test_isnull(void **state) {
    (void)state;
    check_bool("isnull(n)", true);
    check_bool("isnull(a)", false);
    check_bool("isnull(missing)", true);
    check_bool("isnull(null)", true);
    check_bool("isnull(7 / 0)", true);
    check_bool("isnull(s)", false);
    check_bool("isnull(list)", false);
    check_null("isnull(a, b)");              /* wrong arity at runtime: null */
    check_null("isnull()");
}

static void test_cast(void **state) {
    (void)state;
    /* to str */
    check_str("cast(a, str)", "1");
    check_str("cast(-5, str)", "-5");
    check_str("cast(big, str)", "9223372036854775807");
    check_str("cast(small, str)", "-9223372036854775808");
    check_str("cast(f, str)", "2.5");
    check_str("cast(1.0, str)", "1");
    check_str("cast(-0.0, str)", "-0");
    check_str("cast(0.1, str)", "0.1");
    check_str("cast(100.0, str)", "100");
    check_str("cast(1.0e20, str)", "100000000000000000000");
    check_str("cast(1.5e-7, str)", "0.00000015");
    check_str("cast(1.25e16, str)", "12500000000000000");
    check_str("cast(1.0e16, str)", "10000000000000000");
    check_str("cast(1.5e-5, str)", "0.000015");
    check_str("cast(1.5e-6, str)", "0.0000015");
    check_str("cast(-2.5e-7, str)", "-0.00000025");
    {
        /* Extremes: DBL_MAX is 309 digits, the smallest denormal 0. + 323 zeros + 5. */
        char want[400];
        memcpy(want, "17976931348623157", 17);
        memset(want + 17, '0', 309 - 17);
        want[309] = 0;
        check_str("cast(1.7976931348623157e308, str)", want);
        memcpy(want, "0.", 2);
        memset(want + 2, '0', 323);
        memcpy(want + 325, "5", 2);
        check_str("cast(4.9e-324, str)", want);
    }
    check_str("cast(nan, str)", "NaN");
    check_str("cast(1.0 / 0, str)", "inf");
    check_str("cast(-1.0 / 0, str)", "-inf");
    check_str("cast(t, str)", "true");
    check_str("cast(fl, str)", "false");
    check_str("cast(s, str)", "hello");
    check_null("cast(n, str)");
    check_null("cast(list, str)");
    /* to int */
    check_i64("cast(a, int)", 1);
    check_i64("cast(3.9, int)", 3);
    check_i64("cast(-3.9, int)", -3);
    check_i64("cast(nan, int)", 0);
    check_i64("cast(1.0e30, int)", INT64_MAX);
    check_i64("cast(-1.0e30, int)", INT64_MIN);
    check_i64("cast(t, int)", 1);
    check_i64("cast(fl, int)", 0);
    check_i64("cast('42', int)", 42);
    check_i64("cast('+7', int)", 7);
    check_i64("cast('-7', int)", -7);
    check_i64("cast('-9223372036854775808', int)", INT64_MIN);
    check_null("cast('9223372036854775808', int)");
    check_null("cast(' 7', int)");
    check_null("cast('4.2', int)");
    check_null("cast('abc', int)");
    check_null("cast('', int)");
    check_null("cast('-', int)");
    check_null("cast(n, int)");
    check_null("cast(list, int)");
    /* to float */
    check_f64("cast(a, float)", 1.0);
    check_f64("cast(f, float)", 2.5);
    check_f64("cast(t, float)", 1.0);
    check_f64("cast(fl, float)", 0.0);
    check_f64("cast('2.5', float)", 2.5);
    check_f64("cast('1e5', float)", 100000.0);
    check_f64("cast('.5', float)", 0.5);
    check_f64("cast('5.', float)", 5.0);
    check_f64("cast('-2', float)", -2.0);
    check_f64("cast('inf', float)", INFINITY);
    check_f64("cast('-Infinity', float)", -INFINITY);
    check_f64("cast('NaN', float)", NAN);
    check_null("cast('x', float)");
    check_null("cast('', float)");
    check_null("cast('.', float)");
    check_null("cast('1.5e', float)");
    check_null("cast('0x10', float)");
    check_null("cast(' 1', float)");
    check_null("cast(n, float)");
    check_null("cast(list, float)");
    /* to bool */
    check_bool("cast(zero, bool)", false);
    check_bool("cast(a, bool)", true);
    check_bool("cast(-1, bool)", true);
    check_bool("cast(0.0, bool)", false);
    check_bool("cast(0.1, bool)", true);
    check_bool("cast(nan, bool)", false);
    check_bool("cast('true', bool)", true);
    check_bool("cast('false', bool)", false);
    check_null("cast('True', bool)");
    check_null("cast('1', bool)");
    check_bool("cast(t, bool)", true);
    check_bool("cast(fl, bool)", false);
    check_null("cast(n, bool)");
    check_null("cast(list, bool)");
    /* target spelling */
    check_i64("cast('12', 'int')", 12);
    check_f64("cast(a, \"float\")", 1.0);
    check_null("cast(a, blob)");
    check_null("cast(a, 'bytes')");
    check_null("cast(a)");
    check_null("cast(a, int, 1)");
    check_null("cast(s + 1, int) + 1");
}

static void test_cast_arena(void **state) {
    (void)state;
    bv_err err;
    expr *e = expr_parse("cast(f, str)", &err);
    assert_non_null(e);
    expr_arena ar;
    expr_arena_reset(&ar);
    bv_value v = expr_eval(e, &g_row, &ar);
    assert_int_equal(v.kind, BV_STR);
    assert_true(v.u.s.ptr >= ar.buf && v.u.s.ptr < ar.buf + sizeof ar.buf);
    assert_int_equal(ar.used, 3);
    /* A full arena makes the cast null rather than overflowing. */
    ar.used = sizeof ar.buf - 2;
    v = expr_eval(e, &g_row, &ar);
    assert_int_equal(v.kind, BV_NULL);
    assert_int_equal(ar.used, sizeof ar.buf - 2);
    /* Bool and str casts need no arena at all. */
    expr_free(e);
    e = expr_parse("cast(t, str)", &err);
    assert_non_null(e);
    v = expr_eval(e, &g_row, &ar);
    assert_int_equal(v.kind, BV_STR);
    assert_int_equal(v.u.s.len, 4);
    assert_memory_equal(v.u.s.ptr, "true", 4);
    expr_free(e);
}

static void test_quadkey(void **state) {
    (void)state;
    check_i64("quadkey(0, 0, 1)", 3);
    check_i64("quadkey(0.0, -180.0, 1)", 1);
    check_i64("quadkey(90, 0, 1)", 3);                 /* lat clamped to 85.05112878 */
    check_i64("quadkey(-90, -180, 2)", 0);
    check_i64("quadkey(40.0, -74.0, 7)", 4841);
    check_i64("quadkey(-33.8688, 151.2093, 12)", 15434634);
    check_i64("quadkey(0, 180, 1)", 5);                /* col = n is not clamped */
    check_i64("quadkey(nan, 0, 1)", 2);                /* NaN row -> 0 */
    check_null("quadkey(0, 0, 0)");
    check_null("quadkey(0, 0, 25)");
    check_null("quadkey(0, 0, 7.0)");
    check_null("quadkey('x', 0, 7)");
    check_null("quadkey(0, n, 7)");
    check_null("quadkey(0, 0)");
    check_i64("quadkey(a, b, 24)", 142301234084833LL);
}

static void test_unknown_function(void **state) {
    (void)state;
    check_null("foo(a)");
    check_null("nosuch()");
    check_bool("isnull(foo(1, 2))", true);
}

static void test_depth(void **state) {
    (void)state;
    char *src = malloc(8000);
    assert_non_null(src);
    for (int depth = 1; depth <= 520; depth++) {
        size_t o = 0;
        for (int i = 0; i < depth; i++) src[o++] = '(';
        src[o++] = 'a';
        for (int i = 0; i < depth; i++) src[o++] = ')';
        src[o] = 0;
        bv_err err;
        bv_err_clear(&err);
        expr *e = expr_parse(src, &err);
        if (depth <= EXPR_MAX_DEPTH) {
            if (!e) fail_msg("depth %d: %s", depth, err.reason);
            bv_value v = expr_eval(e, &g_row, &g_arena);
            assert_int_equal(v.kind, BV_I64);
            assert_int_equal(v.u.i, 1);
            expr_free(e);
        } else {
            assert_null(e);
            assert_non_null(strstr(err.reason, "depth"));
            assert_non_null(strstr(err.reason, "at byte "));
        }
    }
    /* `not` and call nesting count too. */
    size_t o = 0;
    for (int i = 0; i < 513; i++) { memcpy(src + o, "not ", 4); o += 4; }
    src[o++] = 't';
    src[o] = 0;
    bv_err err;
    assert_null(expr_parse(src, &err));
    assert_non_null(strstr(err.reason, "depth"));
    o = 0;
    for (int i = 0; i < 600; i++) { memcpy(src + o, "isnull(", 7); o += 7; }
    src[o++] = 'a';
    for (int i = 0; i < 600; i++) src[o++] = ')';
    src[o] = 0;
    assert_null(expr_parse(src, &err));
    assert_non_null(strstr(err.reason, "depth"));
    /* One level per "(" even in the reference's "(not ...)" form, one per call. */
    o = 0;
    for (int i = 0; i < 512; i++) { memcpy(src + o, "(not ", 5); o += 5; }
    src[o++] = 't';
    for (int i = 0; i < 512; i++) src[o++] = ')';
    src[o] = 0;
    check_bool(src, true);
    o = 0;
    for (int i = 0; i < 512; i++) { memcpy(src + o, "isnull(", 7); o += 7; }
    src[o++] = 'a';
    for (int i = 0; i < 512; i++) src[o++] = ')';
    src[o] = 0;
    check_bool(src, false);
    o = 0;
    for (int i = 0; i < 500; i++) { memcpy(src + o, "not ", 4); o += 4; }
    src[o++] = 't';
    src[o] = 0;
    check_bool(src, true);
    free(src);
}

static void test_long_flat_chains(void **state) {
    (void)state;
    /* Long operator chains are flat: no depth limit, no deep recursion. */
    size_t n = 16000;                        /* 64 KB of source, under EXPR_MAX_SOURCE */
    char *src = malloc(n * 4 + 8);
    assert_non_null(src);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) { if (i) { memcpy(src + o, " + ", 3); o += 3; } src[o++] = 'a'; }
    src[o] = 0;
    check_i64(src, (int64_t)n);
    o = 0;
    for (size_t i = 0; i < 10000; i++) { if (i) { memcpy(src + o, " and ", 5); o += 5; } src[o++] = 't'; }
    src[o] = 0;
    check_bool(src, true);
    free(src);
}

static void test_malformed(void **state) {
    (void)state;
    check_parse_err("'abc", 0, "unterminated string");
    check_parse_err("a == 'abc\\'", 5, "unterminated string");
    check_parse_err("\"abc", 0, "unterminated string");
    check_parse_err("a = 1", 2, "'='");
    check_parse_err("!a", 0, "'!'");
    check_parse_err("a ! b", 2, "'!'");
    check_parse_err("1e5", 0, "1e5");
    check_parse_err("(x > 1e5)", 5, "1e5");
    check_parse_err("1.5e", 0, "invalid float literal");
    check_parse_err("1.", 1, "unexpected character '.'");
    check_parse_err("a b", 2, "unexpected token 'b'");
    check_parse_err("(a > 1) (b > 2)", 8, "unexpected token '('");
    check_parse_err("a)", 1, "unexpected token ')'");
    check_parse_err("a < b < c", 6, "chained");
    check_parse_err("(a == b != c)", 8, "chained");
    check_parse_err("", 0, "empty");
    check_parse_err("   ", 3, "empty");
    check_parse_err("99999999999999999999", 0, "out of range");
    check_parse_err("9223372036854775808", 0, "out of range");
    check_parse_err("-9223372036854775808", 1, "out of range");
    check_parse_err("(a", 2, "end of input");
    check_parse_err("(a > 1", 6, "expected ')'");
    check_parse_err("a +", 3, "end of input");
    check_parse_err("-a", 0, "'-' must be followed by a number");
    check_parse_err("-(1)", 0, "'-' must be followed by a number");
    check_parse_err("a.b.c", 3, "unexpected character '.'");
    check_parse_err("a.", 1, "unexpected character '.'");
    check_parse_err("and", 0, "unexpected keyword 'and'");
    check_parse_err("a and", 5, "end of input");
    check_parse_err("a + not b", 4, "unexpected keyword 'not'");
    check_parse_err("f(a,)", 4, "unexpected token ')'");
    check_parse_err("f(a b)", 4, "expected ',' or ')'");
    check_parse_err("cast(a, int", 11, "end of input");
    check_parse_err("a ^ b", 2, "unexpected character '^'");
    check_parse_err("a == \xc3\xa9", 5, "\\xc3");   /* non-ASCII outside a string */
    check_parse_err("a\x01", 1, "\\x01");
    check_parse_err("()", 1, "unexpected token ')'");
    check_parse_err(",", 0, "unexpected token ','");
    bv_err err;
    assert_null(expr_parse(NULL, &err));
    assert_string_equal(err.code, "invalid_expression");
    /* Longer than EXPR_MAX_SOURCE. */
    char *big = malloc(EXPR_MAX_SOURCE + 2);
    assert_non_null(big);
    memset(big, ' ', EXPR_MAX_SOURCE + 1);
    big[0] = 'a';
    big[EXPR_MAX_SOURCE + 1] = 0;
    assert_null(expr_parse(big, &err));
    assert_non_null(strstr(err.reason, "longer than"));
    big[EXPR_MAX_SOURCE] = 0;                /* exactly the limit is fine */
    expr *e = expr_parse(big, &err);
    assert_non_null(e);
    expr_free(e);
    free(big);
}

struct collect { char names[8][32]; int n; int stop_after; };

static bool collect_cb(void *ctx, const char *field) {
    struct collect *c = ctx;
    snprintf(c->names[c->n++], sizeof c->names[0], "%s", field);
    return c->n != c->stop_after;
}

static void test_foreach_field(void **state) {
    (void)state;
    bv_err err;
    expr *e = expr_parse("((a + b.c) > cast(d, int)) and isnull(e) or 'lit' == f", &err);
    assert_non_null(e);
    struct collect c = { .n = 0, .stop_after = -1 };
    assert_true(expr_foreach_field(e, collect_cb, &c));
    assert_int_equal(c.n, 5);
    assert_string_equal(c.names[0], "a");
    assert_string_equal(c.names[1], "b.c");
    assert_string_equal(c.names[2], "d");    /* `int` is a type, not a field */
    assert_string_equal(c.names[3], "e");
    assert_string_equal(c.names[4], "f");
    struct collect c2 = { .n = 0, .stop_after = 2 };
    assert_false(expr_foreach_field(e, collect_cb, &c2));
    assert_int_equal(c2.n, 2);
    expr_free(e);
    e = expr_parse("(x == null)", &err);
    assert_non_null(e);
    struct collect c3 = { .n = 0, .stop_after = -1 };
    assert_true(expr_foreach_field(e, collect_cb, &c3));
    assert_int_equal(c3.n, 1);
    assert_string_equal(c3.names[0], "x");
    expr_free(e);
}

/* A bound expression reads the same values whatever the row's field order: at the
 * schema's positions, in another order, with a field missing, or with another field at
 * a bound position. */
static void test_bind_schema(void **state) {
    (void)state;
    bv_err err;
    bv_schema sc;
    bv_schema_init(&sc);
    bv_schema_set(&sc, "lat", WT_F64);
    bv_schema_set(&sc, "lon", WT_F64);
    bv_schema_set(&sc, "amount", WT_I64);
    expr *e = expr_parse("amount * 2 + cast(lat, int) - cast(lon, int)", &err);
    assert_non_null(e);
    expr_bind_schema(e, &sc);
    expr_arena a = { .used = 0 };
    bv_field f[3];
    bv_row r = { .fields = f, .n = 3, .cap = 0 };
    f[0] = (bv_field){ "lat", 3, bv_f64(10.0) };               /* schema order */
    f[1] = (bv_field){ "lon", 3, bv_f64(3.0) };
    f[2] = (bv_field){ "amount", 6, bv_i64(5) };
    bv_value v = expr_eval(e, &r, &a);
    assert_int_equal(v.kind, BV_I64);
    assert_int_equal(v.u.i, 17);
    f[0] = (bv_field){ "amount", 6, bv_i64(5) };               /* key-first order */
    f[1] = (bv_field){ "lon", 3, bv_f64(3.0) };
    f[2] = (bv_field){ "lat", 3, bv_f64(10.0) };
    v = expr_eval(e, &r, &a);
    assert_int_equal(v.kind, BV_I64);
    assert_int_equal(v.u.i, 17);
    f[0] = (bv_field){ "lot", 3, bv_f64(99.0) };               /* same length, other name at lat's position */
    f[1] = (bv_field){ "lon", 3, bv_f64(3.0) };
    f[2] = (bv_field){ "amount", 6, bv_i64(5) };
    v = expr_eval(e, &r, &a);
    assert_int_equal(v.kind, BV_NULL);                         /* lat missing: null propagates */
    r.n = 2;                                                   /* amount's position past the row */
    f[0] = (bv_field){ "amount", 6, bv_i64(1) };
    f[1] = (bv_field){ "lat", 3, bv_f64(4.0) };
    expr *e2 = expr_parse("amount + cast(lat, int)", &err);
    assert_non_null(e2);
    expr_bind_schema(e2, &sc);
    v = expr_eval(e2, &r, &a);
    assert_int_equal(v.kind, BV_I64);
    assert_int_equal(v.u.i, 5);
    expr_free(e2);
    expr_free(e);
    bv_schema_free(&sc);
}

static void test_typecheck(void **state) {
    (void)state;
    check_type("1", WT_I64);
    check_type("1.5", WT_F64);
    check_type("'x'", WT_STR);
    check_type("true", WT_BOOL);
    check_type("null", EXPR_TYPE_NULL);
    check_type("a", WT_I64);
    check_type("x.y", WT_I64);
    check_type("by", WT_BYTES);
    /* comparisons */
    check_type("a > 1", WT_BOOL);
    check_type("(a > f)", WT_BOOL);
    check_type("s >= 'x'", WT_BOOL);
    check_type("t == false", WT_BOOL);
    check_type("d == d", WT_BOOL);
    check_type("a == null", WT_BOOL);
}

static void test_typecheck_rules(void **state) {
    (void)state;
    check_type("(null < a)", WT_BOOL);
    check_type_err("a > s", "cannot compare i64 with str");
    check_type_err("(t == 1)", "cannot compare bool with i64");
    check_type_err("d == 1", "cannot compare datetime with i64");
    check_type_err("s < 1.5", "cannot compare str with f64");
    /* arithmetic */
    check_type("a + 1", WT_I64);
    check_type("a / 2", WT_I64);
    check_type("a + f", WT_F64);
    check_type("f * 2", WT_F64);
    check_type("a - 1 + 2.0", WT_F64);
    check_type("a + null", WT_I64);
    check_type("null * f", WT_F64);
    check_type("null + null", EXPR_TYPE_NULL);
    check_type_err("t + 1", "numeric operands");
    check_type_err("1 + t", "numeric operands");
    check_type_err("a * true", "got bool");
    check_type_err("s + 'x'", "got str");
    check_type_err("a - d", "got datetime");
    check_type_err("null / s", "got str");
    /* logic */
    check_type("t and a > 1", WT_BOOL);
    check_type("t or null", WT_BOOL);
    check_type("not t", WT_BOOL);
    check_type("(not (a > 1))", WT_BOOL);
    check_type_err("a and t", "'and' needs bool operands, got i64");
    check_type_err("t or 1", "'or' needs bool operands, got i64");
    check_type_err("not a", "'not' needs bool operands, got i64");
    check_type_err("t and s", "got str");
    /* calls */
    check_type("isnull(a)", WT_BOOL);
    check_type("isnull(by)", WT_BOOL);
    check_type("cast(a, str)", WT_STR);
    check_type("cast(s, int)", WT_I64);
    check_type("cast(a, 'float')", WT_F64);
    check_type("cast(a, bool)", WT_BOOL);
    check_type("cast(null, int)", WT_I64);
    check_type_err("cast(a, blob)", "cast target");
    check_type_err("cast(a, s)", "cast target");     /* a field name as target is a type */
    check_type_err("cast(a, (s))", "cast target");
    check_type_err("cast(a)", "takes 2 arguments, got 1");
    check_type_err("isnull()", "takes 1 argument, got 0");
    check_type_err("isnull(a, f)", "takes 1 argument, got 2");
    check_type_err("quadkey(f, f, 7)", "unknown function 'quadkey'");
    check_type_err("foo(a)", "unknown function 'foo'");
    check_type_err("isnull(cast(t + 1, int))", "numeric operands");
    /* fields */
    check_type_err("zz > 1", "field 'zz' not found");
    check_type_err("a > 1 and cast(missing, int) > 0", "field 'missing' not found");
    check_type_err("x.z", "field 'x.z' not found");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_comparisons),
        cmocka_unit_test(test_nan_and_cross_type),
        cmocka_unit_test(test_arithmetic),
        cmocka_unit_test(test_division),
        cmocka_unit_test(test_saturation),
        cmocka_unit_test(test_three_valued_logic),
        cmocka_unit_test(test_null_rewrites),
        cmocka_unit_test(test_isnull),
        cmocka_unit_test(test_cast),
        cmocka_unit_test(test_cast_arena),
        cmocka_unit_test(test_quadkey),
        cmocka_unit_test(test_unknown_function),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_long_flat_chains),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_foreach_field),
        cmocka_unit_test(test_bind_schema),
        cmocka_unit_test(test_typecheck),
        cmocka_unit_test(test_typecheck_rules),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
