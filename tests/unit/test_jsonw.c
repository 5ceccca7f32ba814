/* test_jsonw.c - the wire's number formatting and the JSON writer. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "jsonw.h"

static void expect_f64(double v, const char *want) {
    char buf[48];
    bv_fmt_f64(v, buf);
    if (strcmp(buf, want) != 0) fail_msg("bv_fmt_f64(%.17g) = %s, want %s", v, buf, want);
}

static void test_f64_formatting(void **state) {
    (void)state;
    expect_f64(10.0, "10.0");
    expect_f64(42.5, "42.5");
    expect_f64(0.0, "0.0");
    expect_f64(-0.0, "-0.0");
    expect_f64(1240.0, "1240.0");
    expect_f64(0.1, "0.1");
    expect_f64(0.1 + 0.2, "0.30000000000000004");
    expect_f64(1.0 / 3.0, "0.3333333333333333");
    expect_f64(-2.5, "-2.5");
    expect_f64(1e15, "1000000000000000.0");
    expect_f64(1e16, "1e16");
    expect_f64(1.5e16, "1.5e16");
    expect_f64(123456789012345680.0, "1.2345678901234568e17");
    expect_f64(0.0001, "0.0001");
    expect_f64(0.00001, "0.00001");
    expect_f64(0.000001, "1e-6");
    expect_f64(0.0000123, "0.0000123");
    expect_f64(1.5e-7, "1.5e-7");
    expect_f64(5e-324, "5e-324");
    expect_f64(1.7976931348623157e308, "1.7976931348623157e308");
    expect_f64(NAN, "null");
    expect_f64(INFINITY, "null");
    expect_f64(-INFINITY, "null");
    expect_f64(9007199254740993.0, "9007199254740992.0");
}

static void test_f64_round_trips(void **state) {
    (void)state;
    srand(7);
    for (int i = 0; i < 20000; i++) {
        uint64_t bits = ((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 11) ^ (uint64_t)rand();
        double v;
        memcpy(&v, &bits, sizeof v);
        if (!isfinite(v)) continue;
        char buf[48];
        bv_fmt_f64(v, buf);
        assert_true(strtod(buf, NULL) == v);
    }
}

static void test_writer_nesting_and_escapes(void **state) {
    (void)state;
    bv_buf b;
    bv_buf_init(&b);
    jsonw w;
    jsonw_init(&w, &b);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "a");
    jsonw_arr_begin(&w);
    jsonw_i64(&w, -5);
    jsonw_f64(&w, 2.0);
    jsonw_null(&w);
    jsonw_obj_begin(&w);
    jsonw_obj_end(&w);
    jsonw_arr_end(&w);
    jsonw_key(&w, "b\"\n");
    jsonw_strn(&w, "x\x01y\\", 4);
    jsonw_key(&w, "c");
    jsonw_bool(&w, true);
    jsonw_obj_end(&w);
    assert_string_equal(b.data, "{\"a\":[-5,2.0,null,{}],\"b\\\"\\n\":\"x\\u0001y\\\\\",\"c\":true}");
    bv_buf_free(&b);
}

static void test_jansson_values_sorted(void **state) {
    (void)state;
    json_t *j = json_loads("{\"z\":1,\"a\":[1.5,{\"y\":true,\"b\":null}],\"m\":\"s\"}", 0, NULL);
    bv_buf b;
    bv_buf_init(&b);
    jsonw w;
    jsonw_init(&w, &b);
    jsonw_json(&w, j);
    assert_string_equal(b.data, "{\"a\":[1.5,{\"b\":null,\"y\":true}],\"m\":\"s\",\"z\":1}");
    bv_buf_free(&b);
    json_decref(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f64_formatting),
        cmocka_unit_test(test_f64_round_trips),
        cmocka_unit_test(test_writer_nesting_and_escapes),
        cmocka_unit_test(test_jansson_values_sorted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
