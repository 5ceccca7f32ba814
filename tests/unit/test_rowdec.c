/* test_rowdec.c - the push decoders (rowdec.c): JSON and msgpack straight to rows.
 *
 * Every value type on both formats, envelopes (missing/null/non-object data, unknown
 * members, msgpack's exact two keys), duplicates, escapes, control characters, invalid
 * UTF-8 at each position, depth and size caps, every truncation of valid bodies, batches,
 * arena reuse, and equivalence with jansson (JSON) and msgpack-c via mpjson (msgpack) on a
 * set of bodies: decoded both ways, the rows must equal the trees field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <math.h>

#include "jsonw.h"
#include "mpjson.h"
#include "rowdec.h"

/* ---- helpers ---------------------------------------------------------------------------- */

typedef struct fixture {
    rowdec d;
    char err[512];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    rowdec_init(&f->d);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    rowdec_free(&f->d);
    free(f);
    return 0;
}

/* Decoders are called on an exact-size heap copy so ASan sees any read past the end. */
typedef int (*push_fn)(rowdec *, const char *, size_t, rowdec_push *, char *, size_t);

static int run(fixture *f, push_fn fn, const char *p, size_t n, rowdec_push *out) {
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, p, n);
    rowdec_reset(&f->d);
    int rc = fn(&f->d, copy, n, out, f->err, sizeof f->err);
    /* the rows may point into the copy: callers that look at values use run_keep */
    free(copy);
    return rc;
}

/* Same, but the input stays alive until the next call (for tests that read the row). */
static char *kept;
static int run_keep(fixture *f, push_fn fn, const char *p, size_t n, rowdec_push *out) {
    free(kept);
    kept = malloc(n ? n : 1);
    assert_non_null(kept);
    memcpy(kept, p, n);
    rowdec_reset(&f->d);
    return fn(&f->d, kept, n, out, f->err, sizeof f->err);
}

static int js(fixture *f, push_fn fn, const char *text, rowdec_push *out) {
    return run_keep(f, fn, text, strlen(text), out);
}

static const bv_value *field(const rowdec_push *p, const char *name) {
    return bv_row_getn(&p->row, name, strlen(name));
}

static void assert_str_value(const bv_value *v, const char *s, size_t n) {
    assert_non_null(v);
    assert_int_equal(v->kind, BV_STR);
    assert_int_equal(v->u.s.len, n);
    assert_memory_equal(v->u.s.ptr, s, n);
}

/* The row equals a jansson object: same fields, same order, equal values. */
static void assert_row_equals_json(const bv_row *row, const json_t *obj) {
    assert_true(json_is_object(obj));
    assert_int_equal(row->n, json_object_size(obj));
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        const bv_field *fl = &row->fields[i++];
        assert_int_equal(fl->name_len, strlen(k));
        assert_memory_equal(fl->name, k, fl->name_len);
        bv_value want = bv_from_json(v);
        if (!bv_equal(&fl->value, &want)) {
            char *dump = json_dumps(v, JSON_ENCODE_ANY);
            fail_msg("field %s differs from jansson's %s (kinds %d vs %d)", k, dump, fl->value.kind, want.kind);
        }
        /* reals keep their exact bits (bv_equal compares with ==, -0.0 == 0.0) */
        if (want.kind == BV_F64) assert_memory_equal(&fl->value.u.f, &want.u.f, sizeof want.u.f);
    }
}

/* A tiny msgpack writer for hand-made (also malformed) bodies. */
typedef struct mpw {
    unsigned char b[8192];
    size_t n;
} mpw;

static void mp_raw(mpw *w, const void *p, size_t n) {
    assert_true(w->n + n <= sizeof w->b);
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void mp_byte(mpw *w, unsigned v) {
    unsigned char c = (unsigned char)v;
    mp_raw(w, &c, 1);
}

static void mp_be(mpw *w, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--) mp_byte(w, (unsigned)(v >> (8 * i)) & 0xff);
}

static void mp_strn(mpw *w, const char *s, size_t n) {
    if (n < 32) mp_byte(w, 0xa0 | (unsigned)n);
    else if (n < 256) { mp_byte(w, 0xd9); mp_be(w, n, 1); }
    else { mp_byte(w, 0xda); mp_be(w, n, 2); }
    mp_raw(w, s, n);
}

static void mp_str(mpw *w, const char *s) { mp_strn(w, s, strlen(s)); }

/* {"event":E,"body":<one map of nfields pairs follows>} */
static void mp_env(mpw *w, const char *event, unsigned nfields) {
    w->n = 0;
    mp_byte(w, 0x82);
    mp_str(w, "event");
    mp_str(w, event);
    mp_str(w, "body");
    mp_byte(w, 0xde);
    mp_be(w, nfields, 2);
}

static int mpdec(fixture *f, const mpw *w, rowdec_push *out) {
    return run_keep(f, rowdec_msgpack_push, (const char *)w->b, w->n, out);
}

/* JSON text -> msgpack bytes (through jansson and mpjson_encode). */
static void to_msgpack(const char *json, bv_buf *out) {
    json_t *j = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    bv_buf_init(out);
    mpjson_encode(j, out);
    json_decref(j);
}

/* ---- values ---------------------------------------------------------------------------- */

static void test_json_every_type(void **state) {
    fixture *f = *state;
    rowdec_push p;
    const char *body =
        " {\"event\" : \"Txn\", \"data\": {\"s\":\"u123\",\"i\":-42,\"f\":12.5,\"t\":true,\"fa\":false,\"n\":null,"
        "\"a\":[1,\"x\",{\"k\":null}],\"o\":{\"x\":1.5},\"max\":9223372036854775807,\"min\":-9223372036854775808,"
        "\"e\":1E3,\"z\":-0.0,\"iz\":-0,\"tiny\":1e-400,\"long\":3.141592653589793238462643383279,\"empty\":\"\"}} \n";
    assert_int_equal(js(f, rowdec_json_push_http, body, &p), ROWDEC_OK);
    assert_int_equal(p.event_len, 3);
    assert_memory_equal(p.event, "Txn", 3);
    assert_true(p.data_is_object);
    assert_string_equal(p.data_kind, "object");
    assert_false(p.has_control_char);
    assert_int_equal(p.row.n, 16);
    assert_str_value(field(&p, "s"), "u123", 4);
    assert_int_equal(field(&p, "i")->kind, BV_I64);
    assert_int_equal(field(&p, "i")->u.i, -42);
    assert_int_equal(field(&p, "f")->kind, BV_F64);
    assert_true(field(&p, "f")->u.f == 12.5);
    assert_int_equal(field(&p, "t")->kind, BV_BOOL);
    assert_true(field(&p, "t")->u.b);
    assert_false(field(&p, "fa")->u.b);
    assert_int_equal(field(&p, "n")->kind, BV_NULL);
    assert_int_equal(field(&p, "a")->kind, BV_JSON);
    assert_true(json_is_array(field(&p, "a")->u.j));
    assert_int_equal(json_array_size(field(&p, "a")->u.j), 3);
    assert_int_equal(field(&p, "o")->kind, BV_JSON);
    assert_true(json_real_value(json_object_get(field(&p, "o")->u.j, "x")) == 1.5);
    assert_int_equal(field(&p, "max")->u.i, INT64_MAX);
    assert_int_equal(field(&p, "min")->u.i, INT64_MIN);
    assert_int_equal(field(&p, "e")->kind, BV_F64);
    assert_true(field(&p, "e")->u.f == 1000.0);
    assert_int_equal(field(&p, "z")->kind, BV_F64);
    assert_true(signbit(field(&p, "z")->u.f));
    assert_int_equal(field(&p, "iz")->kind, BV_I64);
    assert_int_equal(field(&p, "iz")->u.i, 0);
    assert_true(field(&p, "tiny")->u.f == 0.0);
    assert_true(field(&p, "long")->u.f == 3.141592653589793);
    assert_str_value(field(&p, "empty"), "", 0);
    /* the order sent */
    assert_memory_equal(p.row.fields[0].name, "s", 1);
    assert_memory_equal(p.row.fields[15].name, "empty", 5);
    assert_int_equal(p.row.cap, 0);
}

static void test_msgpack_every_type(void **state) {
    fixture *f = *state;
    mpw w;
    rowdec_push p;
    mp_env(&w, "Txn", 22);
    mp_str(&w, "pfix"); mp_byte(&w, 0x7f);
    mp_str(&w, "nfix"); mp_byte(&w, 0xe0);
    mp_str(&w, "u8"); mp_byte(&w, 0xcc); mp_be(&w, 200, 1);
    mp_str(&w, "u16"); mp_byte(&w, 0xcd); mp_be(&w, 65535, 2);
    mp_str(&w, "u32"); mp_byte(&w, 0xce); mp_be(&w, 4000000000u, 4);
    mp_str(&w, "u64"); mp_byte(&w, 0xcf); mp_be(&w, (uint64_t)INT64_MAX, 8);
    mp_str(&w, "u64big"); mp_byte(&w, 0xcf); mp_be(&w, UINT64_MAX, 8);
    mp_str(&w, "i8"); mp_byte(&w, 0xd0); mp_be(&w, 0x80, 1);
    mp_str(&w, "i16"); mp_byte(&w, 0xd1); mp_be(&w, 0x8000, 2);
    mp_str(&w, "i32"); mp_byte(&w, 0xd2); mp_be(&w, 0x80000000u, 4);
    mp_str(&w, "i64"); mp_byte(&w, 0xd3); mp_be(&w, (uint64_t)1 << 63, 8);
    float f32 = 1.25f;
    uint32_t b32;
    memcpy(&b32, &f32, 4);
    mp_str(&w, "f32"); mp_byte(&w, 0xca); mp_be(&w, b32, 4);
    double f64 = 12.5;
    uint64_t b64;
    memcpy(&b64, &f64, 8);
    mp_str(&w, "f64"); mp_byte(&w, 0xcb); mp_be(&w, b64, 8);
    mp_str(&w, "fixstr"); mp_str(&w, "u123");
    char long_s[300];
    memset(long_s, 'x', sizeof long_s);
    mp_str(&w, "str8"); mp_strn(&w, long_s, 40);
    mp_str(&w, "str16"); mp_strn(&w, long_s, 300);
    mp_str(&w, "str32"); mp_byte(&w, 0xdb); mp_be(&w, 3, 4); mp_raw(&w, "abc", 3);
    mp_str(&w, "nil"); mp_byte(&w, 0xc0);
    mp_str(&w, "t"); mp_byte(&w, 0xc3);
    mp_str(&w, "fa"); mp_byte(&w, 0xc2);
    mp_str(&w, "arr"); mp_byte(&w, 0xdc); mp_be(&w, 2, 2); mp_byte(&w, 0x01); mp_byte(&w, 0x90);
    mp_str(&w, "map"); mp_byte(&w, 0xdf); mp_be(&w, 1, 4); mp_str(&w, "k"); mp_byte(&w, 0x81); mp_str(&w, "j");
    mp_byte(&w, 0xc0);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
    assert_int_equal(p.row.n, 22);
    assert_int_equal(field(&p, "pfix")->u.i, 127);
    assert_int_equal(field(&p, "nfix")->u.i, -32);
    assert_int_equal(field(&p, "u8")->u.i, 200);
    assert_int_equal(field(&p, "u16")->u.i, 65535);
    assert_int_equal(field(&p, "u32")->u.i, 4000000000ll);
    assert_int_equal(field(&p, "u64")->kind, BV_I64);
    assert_int_equal(field(&p, "u64")->u.i, INT64_MAX);
    assert_int_equal(field(&p, "u64big")->kind, BV_F64);
    assert_true(field(&p, "u64big")->u.f == (double)UINT64_MAX);
    assert_int_equal(field(&p, "i8")->u.i, -128);
    assert_int_equal(field(&p, "i16")->u.i, -32768);
    assert_int_equal(field(&p, "i32")->u.i, INT32_MIN);
    assert_int_equal(field(&p, "i64")->u.i, INT64_MIN);
    assert_int_equal(field(&p, "f32")->kind, BV_F64);
    assert_true(field(&p, "f32")->u.f == 1.25);
    assert_true(field(&p, "f64")->u.f == 12.5);
    assert_str_value(field(&p, "fixstr"), "u123", 4);
    assert_str_value(field(&p, "str8"), long_s, 40);
    assert_str_value(field(&p, "str16"), long_s, 300);
    assert_str_value(field(&p, "str32"), "abc", 3);
    assert_int_equal(field(&p, "nil")->kind, BV_NULL);
    assert_true(field(&p, "t")->u.b);
    assert_false(field(&p, "fa")->u.b);
    assert_int_equal(field(&p, "arr")->kind, BV_JSON);
    json_t *want = json_loads("[1,[]]", 0, NULL);
    assert_true(json_equal(want, (json_t *)field(&p, "arr")->u.j));
    json_decref(want);
    want = json_loads("{\"k\":{\"j\":null}}", 0, NULL);
    assert_true(json_equal(want, (json_t *)field(&p, "map")->u.j));
    json_decref(want);
    /* msgpack strings are handed out in place */
    assert_true(field(&p, "fixstr")->u.s.ptr > kept && field(&p, "fixstr")->u.s.ptr < kept + w.n);
    assert_true(p.row.fields[0].name >= kept && p.row.fields[0].name < kept + w.n);
}

static void test_zero_copy_and_escapes(void **state) {
    fixture *f = *state;
    rowdec_push p;
    const char *body = "{\"plain\":\"abcdefghijklmnopqrstuvwxyz\",\"esc\":\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\","
                       "\"u\":\"\\u00e9\\u20AC\\ud83d\\ude00\",\"nul\":\"x\\u0000y\",\"raw\":\"h\xc3\xa9llo \xe2\x82\xac\"}";
    assert_int_equal(js(f, rowdec_json_data, body, &p), ROWDEC_OK);
    const bv_value *v = field(&p, "plain");
    assert_true(v->u.s.ptr > kept && v->u.s.ptr < kept + strlen(body));
    assert_str_value(field(&p, "esc"), "a\"b\\c/d\be\ff\ng\rh\ti", 17);
    assert_false(field(&p, "esc")->u.s.ptr > kept && field(&p, "esc")->u.s.ptr < kept + strlen(body));
    assert_str_value(field(&p, "u"), "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9);
    assert_str_value(field(&p, "nul"), "x\0y", 3);
    assert_str_value(field(&p, "raw"), "h\xc3\xa9llo \xe2\x82\xac", 10);
    assert_true(p.has_control_char);        /* \b \f \n \r \t and \u0000 */
    /* a string of only ASCII longer than the word-at-a-time scan, and one with a quote at
     * every offset of a word */
    char buf[200];
    for (int at = 0; at < 17; at++) {
        char s[40];
        memset(s, 'q', sizeof s);
        s[at] = '\\';
        s[at + 1] = '"';
        s[30] = 0;
        snprintf(buf, sizeof buf, "{\"k\":\"%s\"}", s);
        assert_int_equal(js(f, rowdec_json_data, buf, &p), ROWDEC_OK);
        assert_int_equal(field(&p, "k")->u.s.len, 29);
        assert_int_equal(field(&p, "k")->u.s.ptr[at], '"');
    }
}

static void test_numbers(void **state) {
    fixture *f = *state;
    rowdec_push p;
    static const char *bad[] = {"01", "-", "-a", "1.", ".5", "1e", "1e+", "+1", "1.e5", "0x10", "--1",
                                "9223372036854775808", "-9223372036854775809", "1e400", "-1e400",
                                "123456789012345678901234567890", "NaN", "Infinity", "1.5.3", "1 2"};
    char buf[128];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(buf, sizeof buf, "{\"x\":%s}", bad[i]);
        int rc = js(f, rowdec_json_data, buf, &p);
        if (rc != ROWDEC_ESYNTAX) fail_msg("%s: rc %d", bad[i], rc);
        json_error_t je;
        assert_null(json_loads(buf, 0, &je));   /* jansson refuses them too */
    }
    assert_int_equal(js(f, rowdec_json_data, "{\"x\":9223372036854775808}", &p), ROWDEC_ESYNTAX);
    assert_non_null(strstr(f->err, "too big integer"));
    assert_int_equal(js(f, rowdec_json_data, "{\"x\":1e400}", &p), ROWDEC_ESYNTAX);
    assert_non_null(strstr(f->err, "real number overflow"));
    /* reals: bit-identical to jansson (strtod) on awkward and random values */
    static const char *good[] = {"0.1", "0.30000000000000004", "2.2250738585072014e-308", "4.9e-324", "1.7976931348623157e308",
                                 "9007199254740993.0", "9007199254740992e1", "123456789012345678901234567890.5",
                                 "1e22", "1e23", "1e-22", "1e-23", "5e-324", "2.4703282292062327e-324", "0.0000000000000000001",
                                 "-1.5e-7", "1E+2", "1e-0", "100000000000000000000000e-5", "0e999999999999"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        snprintf(buf, sizeof buf, "{\"x\":%s}", good[i]);
        assert_int_equal(js(f, rowdec_json_data, buf, &p), ROWDEC_OK);
        json_t *j = json_loads(buf, 0, NULL);
        assert_row_equals_json(&p.row, j);
        json_decref(j);
    }
    /* numbers longer than the stack copy go through the decoder's reusable buffer */
    bv_buf lb;
    bv_buf_init(&lb);
    for (int rep = 0; rep < 2; rep++) {
        lb.len = 0;
        bv_buf_puts(&lb, "{\"x\":0.");
        for (int i = 0; i < 300 + rep * 50; i++) bv_buf_putc(&lb, '0');
        bv_buf_puts(&lb, "1234567890123456789e2,\"y\":-");
        for (int i = 0; i < 200; i++) bv_buf_putc(&lb, (char)('1' + i % 9));
        bv_buf_puts(&lb, ".5}");
        assert_int_equal(run_keep(f, rowdec_json_data, lb.data, lb.len, &p), ROWDEC_OK);
        json_t *j = json_loadb(lb.data, lb.len, 0, NULL);
        assert_non_null(j);
        assert_row_equals_json(&p.row, j);
        json_decref(j);
    }
    bv_buf_free(&lb);
    srand(7);
    for (int i = 0; i < 20000; i++) {
        uint64_t bits = 0;
        for (int k = 0; k < 4; k++) bits = bits << 16 | (uint64_t)(rand() & 0xffff);
        double d;
        memcpy(&d, &bits, 8);
        if (!isfinite(d)) continue;
        const char *fmt = i % 3 == 0 ? "{\"x\":%.17g}" : i % 3 == 1 ? "{\"x\":%.6e}" : "{\"x\":%.3f}";
        if (i % 3 == 2) d = (double)(rand() % 2000000) / 1000.0 - 1000.0;
        snprintf(buf, sizeof buf, fmt, d);
        if (!strpbrk(buf + 5, ".e")) continue;     /* %.17g may print an integer */
        assert_int_equal(js(f, rowdec_json_data, buf, &p), ROWDEC_OK);
        json_t *j = json_loads(buf, 0, NULL);
        assert_non_null(j);
        assert_row_equals_json(&p.row, j);
        json_decref(j);
    }
}

/* ---- envelopes ------------------------------------------------------------------------- */

static void test_http_envelope(void **state) {
    fixture *f = *state;
    rowdec_push p;
    assert_int_equal(js(f, rowdec_json_push_http, "{\"event\":\"E\"}", &p), ROWDEC_OK);
    assert_true(p.data_is_object);
    assert_int_equal(p.row.n, 0);
    assert_int_equal(js(f, rowdec_json_push_http, "{\"event\":\"E\",\"data\":null}", &p), ROWDEC_OK);
    assert_false(p.data_is_object);
    assert_string_equal(p.data_kind, "null");
    static const struct { const char *body, *kind; } kinds[] = {
        {"[1,{}]", "array"}, {"\"s\"", "string"}, {"12", "integer"}, {"1.5", "number"}, {"true", "boolean"}, {"{}", "object"}};
    char buf[128];
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        snprintf(buf, sizeof buf, "{\"data\":%s,\"event\":\"E\"}", kinds[i].body);
        assert_int_equal(js(f, rowdec_json_push_http, buf, &p), ROWDEC_OK);
        assert_string_equal(p.data_kind, kinds[i].kind);
        assert_int_equal(js(f, rowdec_json_data, kinds[i].body, &p), ROWDEC_OK);
        assert_string_equal(p.data_kind, kinds[i].kind);
        assert_null(p.event);
    }
    /* unknown members are validated and ignored, wherever they are */
    assert_int_equal(js(f, rowdec_json_push_http,
                        "{\"x\":{\"deep\":[1,2,{\"\\u0001\":\"\\u0002\"}]},\"event\":\"E\",\"y\":null,"
                        "\"data\":{\"a\":1},\"z\":\"\\n\"}", &p), ROWDEC_OK);
    assert_int_equal(p.row.n, 1);
    assert_false(p.has_control_char);
    assert_int_equal(js(f, rowdec_json_push_http, "{\"x\":[1,\"\xff\"],\"event\":\"E\"}", &p), ROWDEC_EUTF8);
    assert_int_equal(js(f, rowdec_json_push_http, "{\"x\":[1,],\"event\":\"E\"}", &p), ROWDEC_ESYNTAX);
    /* no usable event name */
    static const char *noev[] = {"{}", "{\"data\":{}}", "{\"event\":5,\"data\":{}}", "{\"event\":null}", "[]",
                                 "\"event\"", "{\"event\":\"E\",\"event\":[\"x\"]}", "{\"Event\":\"E\"}"};
    for (size_t i = 0; i < sizeof noev / sizeof *noev; i++) {
        int rc = js(f, rowdec_json_push_http, noev[i], &p);
        if (rc != ROWDEC_EENVELOPE) fail_msg("%s: rc %d", noev[i], rc);
        assert_null(p.event);
        assert_non_null(strstr(f->err, "event"));
    }
    /* the last "event" wins, like jansson */
    assert_int_equal(js(f, rowdec_json_push_http, "{\"event\":1,\"event\":\"B\"}", &p), ROWDEC_OK);
    assert_memory_equal(p.event, "B", 1);
    /* a syntax error anywhere beats a missing event */
    assert_int_equal(js(f, rowdec_json_push_http, "{\"data\":{}} x", &p), ROWDEC_ESYNTAX);
    assert_int_equal(js(f, rowdec_json_push_http, "", &p), ROWDEC_ESYNTAX);
    assert_int_equal(js(f, rowdec_json_push_http, " \n\t\r", &p), ROWDEC_ESYNTAX);
}

static void test_tcp_json_envelope(void **state) {
    fixture *f = *state;
    rowdec_push p;
    assert_int_equal(js(f, rowdec_json_push_tcp, "{\"event\":\"Txn\",\"body\":{\"amount\":1},\"extra\":0}", &p), ROWDEC_OK);
    assert_int_equal(p.row.n, 1);
    assert_int_equal(js(f, rowdec_json_push_tcp, "{\"event\":\"Txn\",\"body\":7}", &p), ROWDEC_OK);
    assert_false(p.data_is_object);
    assert_string_equal(p.data_kind, "integer");
    assert_int_equal(js(f, rowdec_json_push_tcp, "{\"event\":\"Txn\"}", &p), ROWDEC_EENVELOPE);
    assert_non_null(strstr(f->err, "body"));
    assert_int_equal(js(f, rowdec_json_push_tcp, "{\"event\":\"Txn\",\"data\":{}}", &p), ROWDEC_EENVELOPE);
    assert_int_equal(js(f, rowdec_json_push_tcp, "{\"body\":{}}", &p), ROWDEC_EENVELOPE);
    /* the last "body" wins */
    assert_int_equal(js(f, rowdec_json_push_tcp, "{\"body\":{\"a\":1},\"event\":\"E\",\"body\":{\"b\":2,\"c\":3}}", &p),
                     ROWDEC_OK);
    assert_int_equal(p.row.n, 2);
    assert_null(field(&p, "a"));
    assert_int_equal(field(&p, "c")->u.i, 3);
}

static void test_msgpack_envelope(void **state) {
    fixture *f = *state;
    mpw w;
    rowdec_push p;
    /* the typical body */
    w.n = 0;
    mp_byte(&w, 0x82); mp_str(&w, "event"); mp_str(&w, "Txn"); mp_str(&w, "body");
    mp_byte(&w, 0x83); mp_str(&w, "event_time"); mp_byte(&w, 0xcd); mp_be(&w, 1733, 2);
    mp_str(&w, "user_id"); mp_str(&w, "u123");
    double amt = 12.5;
    uint64_t bits;
    memcpy(&bits, &amt, 8);
    mp_str(&w, "amount"); mp_byte(&w, 0xcb); mp_be(&w, bits, 8);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
    assert_int_equal(p.event_len, 3);
    assert_memory_equal(p.event, "Txn", 3);
    assert_int_equal(p.row.n, 3);
    assert_int_equal(field(&p, "event_time")->u.i, 1733);
    assert_str_value(field(&p, "user_id"), "u123", 4);
    assert_true(field(&p, "amount")->u.f == 12.5);
    /* exactly two keys */
    w.n = 0;
    mp_byte(&w, 0x83); mp_str(&w, "event"); mp_str(&w, "E"); mp_str(&w, "body"); mp_byte(&w, 0x80);
    mp_str(&w, "x"); mp_byte(&w, 0xc0);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_EENVELOPE);
    assert_non_null(strstr(f->err, "exactly"));
    w.n = 0;
    mp_byte(&w, 0x81); mp_str(&w, "event"); mp_str(&w, "E");
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_EENVELOPE);
    w.n = 0;
    mp_byte(&w, 0x82); mp_str(&w, "event"); mp_byte(&w, 0x05); mp_str(&w, "body"); mp_byte(&w, 0x80);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_EENVELOPE);
    w.n = 0;
    mp_byte(&w, 0x92); mp_str(&w, "event"); mp_str(&w, "body");
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_EENVELOPE);
    /* a repeated key counts once (jansson object semantics), the last value wins */
    w.n = 0;
    mp_byte(&w, 0x83); mp_str(&w, "event"); mp_str(&w, "A"); mp_str(&w, "body"); mp_byte(&w, 0x80);
    mp_str(&w, "event"); mp_str(&w, "B");
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
    assert_memory_equal(p.event, "B", 1);
    /* a body that is not a map */
    w.n = 0;
    mp_byte(&w, 0x82); mp_str(&w, "event"); mp_str(&w, "E"); mp_str(&w, "body"); mp_byte(&w, 0x91); mp_byte(&w, 1);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
    assert_false(p.data_is_object);
    assert_string_equal(p.data_kind, "array");
    static const struct { unsigned char b[9]; size_t n; const char *kind; } kinds[] = {
        {{0xc0}, 1, "null"}, {{0xc3}, 1, "boolean"}, {{0x05}, 1, "integer"}, {{0xd0, 0xff}, 2, "integer"},
        {{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, "number"}, {{0xca, 0x3f, 0x80, 0, 0}, 5, "number"},
        {{0xa1, 'x'}, 2, "string"}, {{0x80}, 1, "object"}};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        w.n = 0;
        mp_byte(&w, 0x82); mp_str(&w, "event"); mp_str(&w, "E"); mp_str(&w, "body");
        mp_raw(&w, kinds[i].b, kinds[i].n);
        assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
        assert_string_equal(p.data_kind, kinds[i].kind);
        assert_true(p.data_is_object == (i == 7));
    }
    /* a uint64 above INT64_MAX inside a nested value is a real there too (as in mpjson) */
    mp_env(&w, "E", 1);
    mp_str(&w, "l");
    mp_byte(&w, 0x91);
    mp_raw(&w, kinds[4].b, kinds[4].n);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
    char why[128];
    json_t *ref = mpjson_decode((const char *)w.b, w.n, why, sizeof why);
    assert_non_null(ref);
    assert_true(json_equal((json_t *)field(&p, "l")->u.j, json_object_get(json_object_get(ref, "body"), "l")));
    assert_true(json_is_real(json_array_get(field(&p, "l")->u.j, 0)));
    json_decref(ref);
}

static void test_duplicates_and_wide_rows(void **state) {
    fixture *f = *state;
    rowdec_push p;
    assert_int_equal(js(f, rowdec_json_data, "{\"a\":1,\"b\":2,\"a\":\"x\",\"c\":null,\"b\":[2]}", &p), ROWDEC_OK);
    assert_int_equal(p.row.n, 3);
    assert_memory_equal(p.row.fields[0].name, "a", 1);
    assert_str_value(&p.row.fields[0].value, "x", 1);
    assert_int_equal(p.row.fields[1].value.kind, BV_JSON);
    /* a wide row with repeats goes through the hash index; equal to jansson's object */
    bv_buf b;
    bv_buf_init(&b);
    bv_buf_puts(&b, "{");
    for (int i = 0; i < 3000; i++) bv_buf_printf(&b, "%s\"f%d\":%d", i ? "," : "", (i * 7919) % 1000, i);
    bv_buf_puts(&b, "}");
    assert_int_equal(run_keep(f, rowdec_json_data, b.data, b.len, &p), ROWDEC_OK);
    json_t *j = json_loadb(b.data, b.len, 0, NULL);
    assert_int_equal(p.row.n, 1000);
    assert_row_equals_json(&p.row, j);
    json_decref(j);
    /* msgpack: same body through mpjson_encode, wrapped in an envelope */
    bv_buf env;
    bv_buf_init(&env);
    bv_buf_printf(&env, "{\"event\":\"E\",\"body\":%.*s}", (int)b.len, b.data);
    json_t *je = json_loadb(env.data, env.len, 0, NULL);
    bv_buf m;
    bv_buf_init(&m);
    mpjson_encode(je, &m);
    assert_int_equal(run_keep(f, rowdec_msgpack_push, m.data, m.len, &p), ROWDEC_OK);
    assert_row_equals_json(&p.row, json_object_get(je, "body"));
    json_decref(je);
    /* rows of 2..40 fields with repeats, in JSON and msgpack: the scan (up to 32 fields,
     * past its old limit of 16) and the index. Names k0..k39 share bits of the 64-bit
     * name mask that lets a new name skip the scan, so both the skip and the scan after a
     * shared bit are taken (a repeat must replace, a distinct name with a shared bit must
     * not). */
    for (int w = 2; w <= 40; w += (w < 17 ? 5 : 23)) {
        b.len = 0;
        bv_buf_puts(&b, "{");
        for (int i = 0; i < w + 5; i++) bv_buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i < w ? i : (i - w) % w, i);
        bv_buf_puts(&b, "}");
        assert_int_equal(run_keep(f, rowdec_json_data, b.data, b.len, &p), ROWDEC_OK);
        j = json_loadb(b.data, b.len, 0, NULL);
        assert_int_equal(p.row.n, w);
        assert_row_equals_json(&p.row, j);
        env.len = 0;
        bv_buf_printf(&env, "{\"event\":\"E\",\"body\":%.*s}", (int)b.len, b.data);
        je = json_loadb(env.data, env.len, 0, NULL);
        m.len = 0;
        mpjson_encode(je, &m);
        assert_int_equal(run_keep(f, rowdec_msgpack_push, m.data, m.len, &p), ROWDEC_OK);
        assert_int_equal(p.row.n, w);
        assert_row_equals_json(&p.row, j);
        json_decref(je);
        json_decref(j);
    }
    bv_buf_free(&m);
    bv_buf_free(&env);
    /* long names (several hash words), repeated */
    b.len = 0;
    bv_buf_puts(&b, "{");
    for (int i = 0; i < 500; i++)
        bv_buf_printf(&b, "%s\"a_rather_long_field_name_%d_x\":%d", i ? "," : "", (i * 31) % 200, i);
    bv_buf_puts(&b, "}");
    assert_int_equal(run_keep(f, rowdec_json_data, b.data, b.len, &p), ROWDEC_OK);
    j = json_loadb(b.data, b.len, 0, NULL);
    assert_int_equal(p.row.n, 200);
    assert_row_equals_json(&p.row, j);
    json_decref(j);
    bv_buf_free(&b);
}

/* ---- control characters, UTF-8 --------------------------------------------------------- */

static void test_control_chars(void **state) {
    fixture *f = *state;
    rowdec_push p;
    static const struct { const char *body; bool cc; } cases[] = {
        {"{\"event\":\"E\",\"data\":{\"a\":\"plain \xc2\xa0 \xc2\xbf\"}}", false},
        {"{\"event\":\"E\",\"data\":{\"a\":\"\x7f\"}}", true},
        {"{\"event\":\"E\",\"data\":{\"a\":\"\xc2\x85\"}}", true},
        {"{\"event\":\"E\",\"data\":{\"a\":\"\\u0085\"}}", true},
        {"{\"event\":\"E\",\"data\":{\"a\":\"\\u007f\"}}", true},
        {"{\"event\":\"E\",\"data\":{\"a\":\"\\u00a0\"}}", false},
        {"{\"event\":\"E\",\"data\":{\"a\":\"\\t\"}}", true},
        {"{\"event\":\"E\",\"data\":{\"k\\u0001\":1}}", true},
        {"{\"event\":\"E\",\"data\":{\"a\":[{\"b\":\"\\u001f\"}]}}", true},
        {"{\"event\":\"E\",\"data\":{\"a\":{\"\\n\":1}}}", true},
        {"{\"event\":\"E\\u0000\",\"data\":{}}", true},
        {"{\"event\":\"E\",\"other\":\"\\u0001\",\"data\":{}}", false},
        {"{\"event\":\"E\",\"data\":{\"a\":\"x\"},\"\\u0002\":1}", false},
        /* a nested object keeps the last of a repeated key: only what it kept counts */
        {"{\"event\":\"E\",\"data\":{\"a\":{\"r\":\"\x7f\",\"r\":\"ok\"}}}", false},
        {"{\"event\":\"E\",\"data\":{\"a\":[{\"r\":\"ok\",\"r\":\"\\u0001\"}]}}", true},
        {"{\"event\":\"E\",\"data\":{\"r\":\"\\n\",\"b\":1,\"r\":\"ok\"}}", false},
        {"{\"event\":\"E\",\"data\":{\"r\":\"ok\",\"r\":[\"\\t\"]}}", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_int_equal(js(f, rowdec_json_push_http, cases[i].body, &p), ROWDEC_OK);
        if (p.has_control_char != cases[i].cc) fail_msg("case %zu: has_control_char %d", i, p.has_control_char);
        /* msgpack agrees (only where the body is an envelope msgpack can carry) */
        json_t *j = json_loads(cases[i].body, JSON_ALLOW_NUL, NULL);
        if (json_object_size(j) == 2) {
            json_t *env = json_pack("{s:O,s:O}", "event", json_object_get(j, "event"), "body", json_object_get(j, "data"));
            bv_buf m;
            bv_buf_init(&m);
            mpjson_encode(env, &m);
            assert_int_equal(run_keep(f, rowdec_msgpack_push, m.data, m.len, &p), ROWDEC_OK);
            if (p.has_control_char != cases[i].cc) fail_msg("msgpack case %zu: has_control_char %d", i, p.has_control_char);
            bv_buf_free(&m);
            json_decref(env);
        }
        json_decref(j);
    }
    /* NUL is allowed in values, never in keys */
    assert_int_equal(js(f, rowdec_json_data, "{\"a\\u0000b\":1}", &p), ROWDEC_ESYNTAX);
    assert_non_null(strstr(f->err, "NUL"));
    assert_int_equal(js(f, rowdec_json_data, "{\"a\":[{\"b\\u0000\":1}]}", &p), ROWDEC_ESYNTAX);
    mpw w;
    mp_env(&w, "E", 1);
    mp_strn(&w, "a\0b", 3);
    mp_byte(&w, 1);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_ESYNTAX);
    mp_env(&w, "E", 1);
    mp_str(&w, "a");
    mp_strn(&w, "a\0b", 3);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
    assert_true(p.has_control_char);
    /* raw control bytes are not JSON */
    assert_int_equal(js(f, rowdec_json_data, "{\"a\":\"x\ny\"}", &p), ROWDEC_ESYNTAX);
}

static const struct { const char *bytes; const char *what; } bad_utf8[] = {
    {"\x80", "lone continuation"}, {"\xc0\x80", "overlong NUL"}, {"\xc1\xbf", "overlong"},
    {"\xe0\x80\x80", "overlong 3"}, {"\xe0\x9f\xbf", "overlong 3 high"}, {"\xed\xa0\x80", "surrogate D800"},
    {"\xed\xbf\xbf", "surrogate DFFF"}, {"\xf0\x80\x80\x80", "overlong 4"}, {"\xf4\x90\x80\x80", "above U+10FFFF"},
    {"\xf5\x80\x80\x80", "F5"}, {"\xff", "FF"}, {"\xfe", "FE"}, {"\xe2\x82", "cut short"}, {"\xc3", "cut short 2"},
    {"\xc3\x28", "bad continuation"}, {"\xf0\x9f\x98", "cut short 4"},
};
static const char *good_utf8[] = {"\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbf",
                                  "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf"};

static void test_bad_utf8_json(void **state) {
    fixture *f = *state;
    rowdec_push p;
    char buf[256];
    /* each position: event name, field name, value, nested value, nested key, ignored member */
    static const char *templ[] = {
        "{\"event\":\"E%s\",\"data\":{}}",        "{\"event\":\"E\",\"data\":{\"k%s\":1}}",
        "{\"event\":\"E\",\"data\":{\"user_id\":\"ab%s\"}}", "{\"event\":\"E\",\"data\":{\"l\":[1,\"%s\"]}}",
        "{\"event\":\"E\",\"data\":{\"m\":{\"%s\":1}}}", "{\"x\":\"%s\",\"event\":\"E\"}",
        "{\"event\":\"E\",\"data\":{\"long\":\"0123456789abcdef0123456789%s\"}}",
        "{\"event\":\"E\",\"data\":{\"esc\":\"\\n%s\"}}",
    };
    static const char *where[] = {"event", "data", "data.user_id", "data.l[1]", "data.m", "x", "data.long",
                                  "data.esc"};
    for (size_t t = 0; t < sizeof templ / sizeof *templ; t++) {
        for (size_t i = 0; i < sizeof bad_utf8 / sizeof *bad_utf8; i++) {
            snprintf(buf, sizeof buf, templ[t], bad_utf8[i].bytes);
            int rc = js(f, rowdec_json_push_http, buf, &p);
            if (rc != ROWDEC_EUTF8) fail_msg("template %zu, %s: rc %d (%s)", t, bad_utf8[i].what, rc, f->err);
            if (!strstr(f->err, "invalid UTF-8") || !strstr(f->err, where[t]))
                fail_msg("template %zu, %s: err '%s'", t, bad_utf8[i].what, f->err);
            assert_null(json_loads(buf, JSON_ALLOW_NUL, NULL));
        }
        for (size_t i = 0; i < sizeof good_utf8 / sizeof *good_utf8; i++) {
            snprintf(buf, sizeof buf, templ[t], good_utf8[i]);
            assert_int_equal(js(f, rowdec_json_push_http, buf, &p), ROWDEC_OK);
        }
    }
    /* the message names the place */
    assert_int_equal(js(f, rowdec_json_push_http, "{\"event\":\"E\",\"data\":{\"user_id\":\"ab\xff\"}}", &p),
                     ROWDEC_EUTF8);
    assert_string_equal(f->err, "invalid UTF-8 in a string (string byte 2) at data.user_id, byte 34");
    /* a long key is cut in the message, on a character boundary (the message stays UTF-8) */
    bv_buf b;
    bv_buf_init(&b);
    bv_buf_puts(&b, "{\"event\":\"E\",\"data\":{\"k");
    for (int i = 0; i < 40; i++) bv_buf_puts(&b, "\xc3\xa9");
    bv_buf_puts(&b, "\":\"\xff\"}}");
    assert_int_equal(run_keep(f, rowdec_json_push_http, b.data, b.len, &p), ROWDEC_EUTF8);
    json_t *msg = json_string(f->err);
    assert_non_null(msg);
    json_decref(msg);
    assert_non_null(strstr(f->err, "at data.k\xc3\xa9"));
    assert_true(strlen(f->err) < 200);
    bv_buf_free(&b);
}

static void test_bad_utf8_msgpack(void **state) {
    fixture *f = *state;
    rowdec_push p;
    mpw w;
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof *bad_utf8; i++) {
        const char *s = bad_utf8[i].bytes;
        char v[64];
        snprintf(v, sizeof v, "ab%s", s);
        for (int pos = 0; pos < 5; pos++) {
            mp_env(&w, pos == 0 ? v : "E", 1);
            if (pos == 1) { mp_str(&w, v); mp_byte(&w, 1); }
            else if (pos == 2) { mp_str(&w, "user_id"); mp_str(&w, v); }
            else if (pos == 3) { mp_str(&w, "l"); mp_byte(&w, 0x92); mp_byte(&w, 1); mp_str(&w, v); }
            else if (pos == 4) { mp_str(&w, "m"); mp_byte(&w, 0x81); mp_str(&w, v); mp_byte(&w, 1); }
            else { mp_str(&w, "k"); mp_byte(&w, 1); }
            int rc = mpdec(f, &w, &p);
            if (rc != ROWDEC_EUTF8) fail_msg("pos %d, %s: rc %d (%s)", pos, bad_utf8[i].what, rc, f->err);
            static const char *where[] = {"event", "body", "body.user_id", "body.l[1]", "body.m"};
            if (!strstr(f->err, where[pos])) fail_msg("pos %d: err '%s'", pos, f->err);
        }
    }
    for (size_t i = 0; i < sizeof good_utf8 / sizeof *good_utf8; i++) {
        mp_env(&w, good_utf8[i], 1);
        mp_str(&w, good_utf8[i]);
        mp_str(&w, good_utf8[i]);
        assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
    }
    /* long strings take the word-at-a-time path: the bad byte at each offset */
    for (int at = 0; at < 40; at++) {
        char s[48];
        memset(s, 'a', sizeof s);
        s[at] = (char)0xff;
        mp_env(&w, "E", 1);
        mp_str(&w, "k");
        mp_strn(&w, s, sizeof s);
        assert_int_equal(mpdec(f, &w, &p), ROWDEC_EUTF8);
        s[at] = 0x01;
        mp_env(&w, "E", 1);
        mp_str(&w, "k");
        mp_strn(&w, s, sizeof s);
        assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
        assert_true(p.has_control_char);
    }
    /* short strings (one padded word, two overlapping 4-byte loads, two overlapping 8-byte
     * loads): clean at every length, and the byte that needs a look at every offset, in a
     * value and in a key */
    for (size_t n = 0; n <= 17; n++) {
        char s[24];
        memset(s, 'a', sizeof s);
        for (int key = 0; key < 2; key++) {
            mp_env(&w, "E", 1);
            if (key) { mp_strn(&w, s, n); mp_byte(&w, 1); }
            else { mp_str(&w, "k"); mp_strn(&w, s, n); }
            if (n == 0 && key) continue;          /* an empty key is another matter */
            assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
            assert_false(p.has_control_char);
        }
        for (size_t at = 0; at < n; at++) {
            static const struct { unsigned char b; int rc_value, rc_key; bool cc; } looks[] = {
                {0xff, ROWDEC_EUTF8, ROWDEC_EUTF8, false}, {0x01, ROWDEC_OK, ROWDEC_OK, true},
                {0x7f, ROWDEC_OK, ROWDEC_OK, true}, {0x00, ROWDEC_OK, ROWDEC_ESYNTAX, true},
                {0x1f, ROWDEC_OK, ROWDEC_OK, true},
            };
            for (size_t l = 0; l < sizeof looks / sizeof *looks; l++) {
                memset(s, 'a', sizeof s);
                s[at] = (char)looks[l].b;
                for (int key = 0; key < 2; key++) {
                    mp_env(&w, "E", 1);
                    if (key) { mp_strn(&w, s, n); mp_byte(&w, 1); }
                    else { mp_str(&w, "k"); mp_strn(&w, s, n); }
                    int rc = mpdec(f, &w, &p), want = key ? looks[l].rc_key : looks[l].rc_value;
                    if (rc != want) fail_msg("len %zu, byte %#x at %zu, key %d: rc %d", n, looks[l].b, at, key, rc);
                    if (rc == ROWDEC_OK && p.has_control_char != looks[l].cc)
                        fail_msg("len %zu, byte %#x at %zu, key %d: control flag", n, looks[l].b, at, key);
                }
            }
        }
    }
}

static void test_surrogate_escapes(void **state) {
    fixture *f = *state;
    rowdec_push p;
    static const char *bad[] = {"\\ud800", "\\udc00", "\\ud800\\u0041", "\\ud800x", "\\udbff\\udbff", "\\u12",
                                "\\u12g4", "\\x", "\\U0041", "\\'", "\\"};
    char buf[64];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(buf, sizeof buf, "{\"a\":\"%s\"}", bad[i]);
        int rc = js(f, rowdec_json_data, buf, &p);
        if (rc != ROWDEC_ESYNTAX) fail_msg("%s: rc %d", bad[i], rc);
        assert_null(json_loads(buf, JSON_ALLOW_NUL, NULL));
    }
    assert_int_equal(js(f, rowdec_json_data, "{\"a\":\"\\uDBFF\\uDFFF\"}", &p), ROWDEC_OK);
    assert_str_value(field(&p, "a"), "\xf4\x8f\xbf\xbf", 4);
}

/* ---- caps ------------------------------------------------------------------------------ */

static void nested(bv_buf *b, const char *pre, int arrays, const char *post) {
    bv_buf_init(b);
    bv_buf_puts(b, pre);
    for (int i = 0; i < arrays; i++) bv_buf_putc(b, '[');
    for (int i = 0; i < arrays; i++) bv_buf_putc(b, ']');
    bv_buf_puts(b, post);
}

static void test_depth_cap(void **state) {
    fixture *f = *state;
    rowdec_push p;
    bv_buf b;
    /* envelope + data + 62 arrays = 64 containers: fine; one more is refused */
    nested(&b, "{\"event\":\"E\",\"data\":{\"a\":", 62, "}}");
    assert_int_equal(run_keep(f, rowdec_json_push_http, b.data, b.len, &p), ROWDEC_OK);
    bv_buf_free(&b);
    nested(&b, "{\"event\":\"E\",\"data\":{\"a\":", 63, "}}");
    assert_int_equal(run_keep(f, rowdec_json_push_http, b.data, b.len, &p), ROWDEC_EDEPTH);
    assert_non_null(strstr(f->err, "data.a[0]"));
    bv_buf_free(&b);
    /* in an ignored member, and as the bare data */
    nested(&b, "{\"x\":", 64, ",\"event\":\"E\"}");
    assert_int_equal(run_keep(f, rowdec_json_push_http, b.data, b.len, &p), ROWDEC_EDEPTH);
    bv_buf_free(&b);
    nested(&b, "", 64, "");
    assert_int_equal(run_keep(f, rowdec_json_data, b.data, b.len, &p), ROWDEC_OK);
    bv_buf_free(&b);
    nested(&b, "", 65, "");
    assert_int_equal(run_keep(f, rowdec_json_data, b.data, b.len, &p), ROWDEC_EDEPTH);
    bv_buf_free(&b);
    /* a deep body costs no stack: 100000 brackets stop at the cap */
    nested(&b, "{\"event\":\"E\",\"data\":{\"a\":", 100000, "}}");
    assert_int_equal(run_keep(f, rowdec_json_push_http, b.data, b.len, &p), ROWDEC_EDEPTH);
    bv_buf_free(&b);
    /* msgpack, the same count */
    for (int extra = 62; extra <= 63; extra++) {
        mpw w;
        mp_env(&w, "E", 1);
        mp_str(&w, "a");
        for (int i = 0; i < extra; i++) mp_byte(&w, 0x91);
        mp_byte(&w, 0xc0);
        assert_int_equal(mpdec(f, &w, &p), extra == 62 ? ROWDEC_OK : ROWDEC_EDEPTH);
    }
}

static void test_size_caps(void **state) {
    fixture *f = *state;
    rowdec_push p;
    f->d.limits.max_string = 8;
    f->d.limits.max_key = 5;
    f->d.limits.max_fields = 3;
    assert_int_equal(js(f, rowdec_json_data, "{\"abcde\":\"12345678\",\"b\":1,\"c\":2,\"b\":3}", &p), ROWDEC_OK);
    assert_int_equal(js(f, rowdec_json_data, "{\"a\":\"123456789\"}", &p), ROWDEC_ESIZE);
    assert_non_null(strstr(f->err, "string of 9 bytes"));
    assert_int_equal(js(f, rowdec_json_data, "{\"a\":\"1234567\\n\"}", &p), ROWDEC_ESIZE);
    assert_int_equal(js(f, rowdec_json_data, "{\"abcdef\":1}", &p), ROWDEC_ESIZE);
    assert_non_null(strstr(f->err, "key of 6 bytes"));
    assert_int_equal(js(f, rowdec_json_data, "{\"a\":{\"abcdef\":1}}", &p), ROWDEC_ESIZE);
    assert_non_null(strstr(f->err, "at a, byte"));
    assert_int_equal(js(f, rowdec_json_data, "{\"a\":1,\"b\":1,\"c\":1,\"d\":1}", &p), ROWDEC_ESIZE);
    assert_non_null(strstr(f->err, "more than 3 fields"));
    mpw w;
    mp_env(&w, "E", 1);
    mp_str(&w, "a");
    mp_str(&w, "123456789");
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_ESIZE);
    assert_non_null(strstr(f->err, "string of 9 bytes"));
    assert_non_null(strstr(f->err, "body.a"));
    mp_env(&w, "E", 1);
    mp_str(&w, "abcdef");
    mp_byte(&w, 1);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_ESIZE);
    assert_non_null(strstr(f->err, "key of 6 bytes"));
    mp_env(&w, "123456789", 0);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_ESIZE);       /* the event name is a string too */
    assert_non_null(strstr(f->err, "at event"));
}

/* ---- malformed input ------------------------------------------------------------------- */

static void test_json_syntax(void **state) {
    fixture *f = *state;
    rowdec_push p;
    static const char *bad[] = {
        "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}", "{,}", "{\"a\":1 \"b\":2}", "{a:1}", "{'a':1}",
        "{\"a\":tru}", "{\"a\":nul}", "{\"a\":truex}", "{\"a\":[1 2]}", "{\"a\":[,1]}", "{\"a\":\"x}", "{\"a\":1}}",
        "{\"a\":1}x", "\xef\xbb\xbf{}", "{\"a\":1}/*c*/", "{\"a\":\"\\", "{\"a\":\"\\u00",
        "{\"a\"\v:1}", "{\"a\":\f1}", "{\"a\":[1,]}", "{\"a\":{\"b\":}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t n = strlen(bad[i]);
        int rc = run_keep(f, rowdec_json_data, bad[i], n, &p);
        if (rc != ROWDEC_ESYNTAX) fail_msg("'%s': rc %d (%s)", bad[i], rc, f->err);
        assert_non_null(strstr(f->err, "byte "));
        assert_null(json_loadb(bad[i], n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL));
    }
    /* a NUL byte after the value is trailing garbage, not an end */
    assert_int_equal(run_keep(f, rowdec_json_data, "{\"a\":1}\0", 8, &p), ROWDEC_ESYNTAX);
    assert_non_null(strstr(f->err, "trailing"));
    /* jansson skips a raw NUL right after a number; it is not JSON and is refused here */
    json_t *quirk = json_loadb("[1\0]", 4, JSON_DECODE_ANY, NULL);
    assert_non_null(quirk);
    json_decref(quirk);
    assert_int_equal(run_keep(f, rowdec_json_data, "[1\0]", 4, &p), ROWDEC_ESYNTAX);
}

static void test_msgpack_malformed(void **state) {
    fixture *f = *state;
    rowdec_push p;
    mpw w;
    static const unsigned char bodies[][8] = {{0xc4, 1, 'x'}, {0xc7, 1, 5, 'x'}, {0xd4, 1, 2}, {0xc1}, {0xdd, 0xff, 0xff, 0xff, 0xff},
                                              {0xdf, 0x7f, 0xff, 0xff, 0xff}, {0xdb, 0xff, 0xff, 0xff, 0xff}};
    static const size_t lens[] = {3, 4, 3, 1, 5, 5, 5};
    static const char *says[] = {"bin/ext", "bin/ext", "bin/ext", "0xc1", "declares", "declares", "truncated"};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        mp_env(&w, "E", 1);
        mp_str(&w, "v");
        mp_raw(&w, bodies[i], lens[i]);
        assert_int_equal(mpdec(f, &w, &p), ROWDEC_ESYNTAX);
        if (!strstr(f->err, says[i])) fail_msg("case %zu: '%s'", i, f->err);
        assert_non_null(strstr(f->err, "body.v"));
    }
    /* a non-string key, trailing bytes, NaN */
    mp_env(&w, "E", 1);
    mp_byte(&w, 0x01);
    mp_byte(&w, 0x01);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_ESYNTAX);
    assert_non_null(strstr(f->err, "not a string"));
    mp_env(&w, "E", 0);
    mp_byte(&w, 0xc0);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_ESYNTAX);
    assert_non_null(strstr(f->err, "trailing"));
    mp_env(&w, "E", 1);
    mp_str(&w, "nan");
    mp_byte(&w, 0xcb);
    mp_be(&w, 0x7ff8000000000000ull, 8);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_ESYNTAX);
    mp_env(&w, "E", 1);
    mp_str(&w, "inf");
    mp_byte(&w, 0xca);
    mp_be(&w, 0x7f800000u, 4);
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_ESYNTAX);
    assert_int_equal(run_keep(f, rowdec_msgpack_push, "", 0, &p), ROWDEC_ESYNTAX);
    assert_int_equal(rowdec_msgpack_push(&f->d, NULL, 0, &p, f->err, sizeof f->err), ROWDEC_ESYNTAX);
    assert_int_equal(rowdec_json_data(&f->d, NULL, 0, &p, f->err, sizeof f->err), ROWDEC_ESYNTAX);
    /* an empty key (msgpack-c hands it out as a NULL pointer; mpjson must not touch it) */
    static const unsigned char empty_key[] = {0x82, 0xa0, 0x62, 0xe4, 0x79};
    char why[128];
    assert_null(mpjson_decode((const char *)empty_key, sizeof empty_key, why, sizeof why));
    mp_env(&w, "E", 1);
    mp_str(&w, "");
    mp_str(&w, "");
    assert_int_equal(mpdec(f, &w, &p), ROWDEC_OK);
    assert_int_equal(p.row.fields[0].name_len, 0);
}

/* Every prefix of a valid body fails cleanly (each on an exact-size buffer). */
static void test_truncation(void **state) {
    fixture *f = *state;
    rowdec_push p;
    const char *json = "{\"event\":\"Txn\",\"data\":{\"event_time\":1733,\"user_id\":\"u\\u00e9\\n123\",\"amount\":12.5,"
                       "\"tags\":[\"a\",{\"b\":[true,false,null]}],\"neg\":-1e-3,\"s\":\"h\xc3\xa9\xf0\x9f\x98\x80\"}}";
    size_t n = strlen(json);
    assert_int_equal(run(f, rowdec_json_push_http, json, n, &p), ROWDEC_OK);
    for (size_t cut = 0; cut < n; cut++) {
        int rc = run(f, rowdec_json_push_http, json, cut, &p);
        if (rc == ROWDEC_OK || rc == ROWDEC_EENVELOPE) fail_msg("prefix %zu decoded (rc %d)", cut, rc);
        assert_null(p.event);
    }
    const char *data = json + 22;
    size_t dn = n - 23;
    assert_int_equal(run(f, rowdec_json_data, data, dn, &p), ROWDEC_OK);
    for (size_t cut = 0; cut < dn; cut++) {
        int rc = run(f, rowdec_json_data, data, cut, &p);
        /* a prefix that is a whole number ("1", "17", "173") is a valid bare value: none here,
         * the data starts with '{' */
        if (rc == ROWDEC_OK) fail_msg("data prefix %zu decoded", cut);
    }
    bv_buf m;
    char tcp[400];
    snprintf(tcp, sizeof tcp, "{\"event\":\"Txn\",\"body\":%.*s}", (int)dn, data);
    to_msgpack(tcp, &m);
    assert_int_equal(run(f, rowdec_msgpack_push, m.data, m.len, &p), ROWDEC_OK);
    for (size_t cut = 0; cut < m.len; cut++) {
        int rc = run(f, rowdec_msgpack_push, m.data, cut, &p);
        if (rc != ROWDEC_ESYNTAX) fail_msg("msgpack prefix %zu: rc %d", cut, rc);
    }
    bv_buf_free(&m);
    /* and for the batch entry points */
    const char *many = "{\"events\":[{\"event\":\"A\",\"body\":{\"x\":1}},{\"event\":\"B\",\"body\":{\"y\":\"z\"}}]}";
    rowdec_batch bt;
    to_msgpack(many, &m);
    for (size_t cut = 0; cut < strlen(many); cut++) {
        char *c = malloc(cut + 1);
        memcpy(c, many, cut);
        rowdec_reset(&f->d);
        assert_int_equal(rowdec_json_push_many(&f->d, c, cut, 100, &bt, f->err, sizeof f->err), ROWDEC_ESYNTAX);
        free(c);
    }
    for (size_t cut = 0; cut < m.len; cut++) {
        char *c = malloc(cut + 1);
        memcpy(c, m.data, cut);
        rowdec_reset(&f->d);
        assert_int_equal(rowdec_msgpack_push_many(&f->d, c, cut, 100, &bt, f->err, sizeof f->err), ROWDEC_ESYNTAX);
        free(c);
    }
    bv_buf_free(&m);
}

/* ---- equivalence with jansson and msgpack-c -------------------------------------------- */

static const char *corpus[] = {
    "{}",
    "{\"a\":1}",
    "{\"event_time\":1733,\"user_id\":\"u123\",\"amount\":12.5}",
    ("{\"s\":\"h\\u00e9llo\",\"i\":-42,\"big\":9223372036854775807,\"f\":0.1,\"t\":true,\"n\":null,"
     "\"fa\":false,\"l\":[1,\"x\",{\"y\":2.5}],\"m\":{\"a\":1},\"e\":\"\"}"),
    "{\"a\":1,\"a\":2,\"b\":{\"c\":[],\"c\":{}},\"a\":3}",
    "{\"\":\"\",\" \":\" \",\"\\u20ac\":\"\\ud83d\\ude00\"}",
    "{\"n\":[0,-0,1e0,1E-2,-1.5e+300,123456789.123456789,4.9e-324,1.7976931348623157e308]}",
    "{\"deep\":[[[[[[[[[[[[[[[[{\"x\":[[[]]]}]]]]]]]]]]]]]]]]}",
    "{\"s\":\"\\u0000\\u001f\\u007f\\u0080\\u009f\\u00a0 \\\" \\\\ \\/ \\b\\f\\n\\r\\t\"}",
    "{\"k\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
    "{\"u\":18446744073709551615.0,\"v\":-9223372036854775808}",
    " { \"a\" : [ 1 , 2 ] , \"b\" : { } , \"c\" : [ ] } ",
};

static void test_equivalence_json(void **state) {
    fixture *f = *state;
    rowdec_push p;
    for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) {
        if (js(f, rowdec_json_data, corpus[i], &p) != ROWDEC_OK) fail_msg("corpus %zu: %s", i, f->err);
        json_error_t je;
        json_t *j = json_loads(corpus[i], JSON_ALLOW_NUL, &je);
        if (!j) fail_msg("corpus %zu: jansson: %s", i, je.text);
        assert_row_equals_json(&p.row, j);
        /* the same through both envelopes */
        char buf[1024];
        snprintf(buf, sizeof buf, "{\"event\":\"E\",\"data\":%s}", corpus[i]);
        assert_int_equal(js(f, rowdec_json_push_http, buf, &p), ROWDEC_OK);
        assert_row_equals_json(&p.row, j);
        snprintf(buf, sizeof buf, "{\"body\":%s,\"event\":\"E\"}", corpus[i]);
        assert_int_equal(js(f, rowdec_json_push_tcp, buf, &p), ROWDEC_OK);
        assert_row_equals_json(&p.row, j);
        json_decref(j);
    }
}

static void test_equivalence_msgpack(void **state) {
    fixture *f = *state;
    rowdec_push p;
    for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) {
        char buf[1024];
        snprintf(buf, sizeof buf, "{\"event\":\"Ev\",\"body\":%s}", corpus[i]);
        bv_buf m;
        to_msgpack(buf, &m);
        char err[256];
        json_t *ref = mpjson_decode(m.data, m.len, err, sizeof err);
        assert_non_null(ref);
        assert_int_equal(run_keep(f, rowdec_msgpack_push, m.data, m.len, &p), ROWDEC_OK);
        assert_int_equal(p.event_len, 2);
        assert_memory_equal(p.event, "Ev", 2);
        assert_row_equals_json(&p.row, json_object_get(ref, "body"));
        json_decref(ref);
        bv_buf_free(&m);
    }
    /* integers of every width, as msgpack-c packs them */
    static const int64_t ints[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295ll, 4294967296ll, INT64_MAX,
                                   -1, -32, -33, -128, -129, -32768, -32769, INT32_MIN, (int64_t)INT32_MIN - 1, INT64_MIN};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        json_t *env = json_pack("{s:s,s:{s:I}}", "event", "E", "body", "v", (json_int_t)ints[i]);
        bv_buf m;
        bv_buf_init(&m);
        mpjson_encode(env, &m);
        assert_int_equal(run_keep(f, rowdec_msgpack_push, m.data, m.len, &p), ROWDEC_OK);
        assert_int_equal(field(&p, "v")->kind, BV_I64);
        assert_int_equal(field(&p, "v")->u.i, ints[i]);
        bv_buf_free(&m);
        json_decref(env);
    }
}

/* ---- batches --------------------------------------------------------------------------- */

static void test_push_many(void **state) {
    fixture *f = *state;
    rowdec_batch b;
    const char *many = "{\"x\":1,\"events\":[{\"event\":\"A\",\"body\":{\"x\":1}},{\"event\":\"B\"},5,"
                       "{\"body\":{},\"event\":\"C\",\"other\":[1]},{\"event\":7,\"body\":{}}]}";
    bv_buf m;
    to_msgpack(many, &m);
    for (int fmt = 0; fmt < 2; fmt++) {
        rowdec_reset(&f->d);
        int rc = fmt ? rowdec_msgpack_push_many(&f->d, m.data, m.len, 10, &b, f->err, sizeof f->err)
                     : rowdec_json_push_many(&f->d, many, strlen(many), 10, &b, f->err, sizeof f->err);
        assert_int_equal(rc, ROWDEC_OK);
        assert_int_equal(b.n, 5);
        assert_memory_equal(b.items[0].event, "A", 1);
        assert_int_equal(b.items[0].row.n, 1);
        assert_null(b.items[1].event);
        assert_null(b.items[2].event);
        assert_memory_equal(b.items[3].event, "C", 1);     /* other keys are ignored in entries */
        assert_true(b.items[3].data_is_object);
        assert_null(b.items[4].event);
        /* the cap: exactly 5 is fine, 4 is too few */
        rowdec_reset(&f->d);
        rc = fmt ? rowdec_msgpack_push_many(&f->d, m.data, m.len, 5, &b, f->err, sizeof f->err)
                 : rowdec_json_push_many(&f->d, many, strlen(many), 5, &b, f->err, sizeof f->err);
        assert_int_equal(rc, ROWDEC_OK);
        rowdec_reset(&f->d);
        rc = fmt ? rowdec_msgpack_push_many(&f->d, m.data, m.len, 4, &b, f->err, sizeof f->err)
                 : rowdec_json_push_many(&f->d, many, strlen(many), 4, &b, f->err, sizeof f->err);
        assert_int_equal(rc, ROWDEC_ETOOMANY);
        assert_non_null(strstr(f->err, "more than 4 events"));
    }
    bv_buf_free(&m);
    /* over the cap but malformed after it: a syntax error, as today */
    const char *bad = "{\"events\":[1,2,3,{\"event\":\"A\",\"body\":{\"x\":1}},[\"\xff\"]]}";
    assert_int_equal(rowdec_json_push_many(&f->d, bad, strlen(bad), 2, &b, f->err, sizeof f->err), ROWDEC_EUTF8);
    static const char *noevents[] = {"[]", "{}", "{\"events\":{}}", "{\"events\":[],\"events\":1}", "{\"Events\":[]}"};
    for (size_t i = 0; i < sizeof noevents / sizeof *noevents; i++) {
        rowdec_reset(&f->d);
        assert_int_equal(rowdec_json_push_many(&f->d, noevents[i], strlen(noevents[i]), 10, &b, f->err, sizeof f->err),
                         ROWDEC_EENVELOPE);
        to_msgpack(noevents[i], &m);
        assert_int_equal(rowdec_msgpack_push_many(&f->d, m.data, m.len, 10, &b, f->err, sizeof f->err),
                         ROWDEC_EENVELOPE);
        bv_buf_free(&m);
    }
    const char *empty = "{\"events\":[]}";
    assert_int_equal(rowdec_json_push_many(&f->d, empty, strlen(empty), 10, &b, f->err, sizeof f->err), ROWDEC_OK);
    assert_int_equal(b.n, 0);
    /* errors name the entry */
    const char *where = "{\"events\":[{\"event\":\"A\",\"body\":{}},{\"event\":\"B\",\"body\":{\"x\":\"\xc0\xaf\"}}]}";
    assert_int_equal(rowdec_json_push_many(&f->d, where, strlen(where), 10, &b, f->err, sizeof f->err), ROWDEC_EUTF8);
    assert_non_null(strstr(f->err, "events[1].body.x"));
}

/* ---- the arena ------------------------------------------------------------------------- */

static void test_arena_reuse(void **state) {
    fixture *f = *state;
    rowdec_push p;
    const char *body = "{\"event\":\"E\",\"data\":{\"a\":\"x\\ny\",\"b\":[1,2],\"c\":1}}";
    assert_int_equal(js(f, rowdec_json_push_http, body, &p), ROWDEC_OK);
    const void *fields = p.row.fields;
    const char *unesc = field(&p, "a")->u.s.ptr;
    for (int i = 0; i < 1000; i++) {
        rowdec_reset(&f->d);
        assert_int_equal(rowdec_json_push_http(&f->d, kept, strlen(body), &p, f->err, sizeof f->err), ROWDEC_OK);
        /* after a reset the same memory is handed out again: no allocation per push */
        assert_ptr_equal(p.row.fields, fields);
        assert_ptr_equal(field(&p, "a")->u.s.ptr, unesc);
    }
    /* many decodes without a reset: pointers handed out earlier stay valid */
    rowdec_push keep[3000];
    rowdec_reset(&f->d);
    for (int i = 0; i < 3000; i++)
        assert_int_equal(rowdec_json_push_http(&f->d, kept, strlen(body), &keep[i], f->err, sizeof f->err), ROWDEC_OK);
    for (int i = 0; i < 3000; i++) {
        assert_str_value(field(&keep[i], "a"), "x\ny", 3);
        assert_int_equal(json_array_size(field(&keep[i], "b")->u.j), 2);
    }
    assert_true(rowdec_retained_bytes(&f->d) > ARENA_BLOCK_BYTES);
    /* a reset gives every block but one back */
    rowdec_reset(&f->d);
    assert_int_equal(rowdec_retained_bytes(&f->d), ARENA_BLOCK_BYTES);
    /* a big string body goes to its own block and is released by the reset */
    bv_buf b;
    bv_buf_init(&b);
    bv_buf_puts(&b, "{\"a\":\"");
    for (int i = 0; i < 100000; i++) bv_buf_puts(&b, "\\t");
    bv_buf_puts(&b, "\"}");
    assert_int_equal(run_keep(f, rowdec_json_data, b.data, b.len, &p), ROWDEC_OK);
    assert_int_equal(field(&p, "a")->u.s.len, 100000);
    assert_true(rowdec_retained_bytes(&f->d) >= ARENA_BLOCK_BYTES + 200000);
    rowdec_reset(&f->d);
    assert_int_equal(rowdec_retained_bytes(&f->d), ARENA_BLOCK_BYTES);
    bv_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_json_every_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msgpack_every_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_copy_and_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_json_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msgpack_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_and_wide_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_control_chars, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_utf8_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_utf8_msgpack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_surrogate_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_caps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msgpack_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equivalence_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equivalence_msgpack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arena_reuse, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(kept);
    return rc;
}
