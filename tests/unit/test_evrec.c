/* test_evrec.c - binary WAL event records: round trip of every value type, and every
 * truncation or trailing byte rejected without leaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "server/evrec.h"

static const char *SAMPLE =
    "{\"s\":\"h\\u00e9llo\",\"i\":-42,\"big\":9223372036854775807,\"f\":0.1,\"t\":true,\"n\":null,"
    "\"fa\":false,\"l\":[1,\"x\",{\"y\":2.5}],\"m\":{\"a\":1},\"e\":\"\"}";

static void test_round_trip(void **state) {
    (void)state;
    json_t *in = json_loads(SAMPLE, 0, NULL);
    assert_non_null(in);
    bv_buf b;
    bv_buf_init(&b);
    evrec_encode(1700000000123, "Click", 5, in, &b);
    int64_t now;
    const char *name;
    size_t nl;
    json_t *out;
    char why[200];
    assert_int_equal(evrec_decode(b.data, b.len, &now, &name, &nl, &out, why, sizeof why), 0);
    assert_int_equal(now, 1700000000123);
    assert_int_equal(nl, 5);
    assert_memory_equal(name, "Click", 5);
    assert_true(json_equal(in, out));
    /* integer stays integer, real stays real (the type is part of the value) */
    assert_true(json_is_integer(json_object_get(out, "i")));
    assert_true(json_is_real(json_object_get(out, "f")));
    assert_true(json_real_value(json_object_get(out, "f")) == 0.1);
    /* field order is the pushed order */
    const char *k;
    json_t *v;
    const char *order[] = { "s", "i", "big", "f", "t", "n", "fa", "l", "m", "e" };
    size_t i = 0;
    json_object_foreach(out, k, v) assert_string_equal(k, order[i++]);
    json_decref(out);
    json_decref(in);
    bv_buf_free(&b);
}

static void test_truncation_and_trailing_bytes(void **state) {
    (void)state;
    json_t *in = json_loads(SAMPLE, 0, NULL);
    bv_buf b;
    bv_buf_init(&b);
    evrec_encode(5, "E", 1, in, &b);
    int64_t now;
    const char *name;
    size_t nl;
    json_t *out;
    char why[200];
    for (size_t cut = 0; cut < b.len; cut++) {
        out = (json_t *)1;
        assert_int_equal(evrec_decode(b.data, cut, &now, &name, &nl, &out, why, sizeof why), -1);
        assert_null(out);
    }
    bv_buf_putc(&b, 'x');
    assert_int_equal(evrec_decode(b.data, b.len, &now, &name, &nl, &out, why, sizeof why), -1);
    assert_non_null(strstr(why, "trailing"));
    /* a bad tag */
    b.len--;
    char *tag = memchr(b.data + 8 + 4 + 1 + 4 + 2, 5, 8);   /* the first field's tag (string) */
    assert_non_null(tag);
    *tag = 9;
    assert_int_equal(evrec_decode(b.data, b.len, &now, &name, &nl, &out, why, sizeof why), -1);
    json_decref(in);
    bv_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_truncation_and_trailing_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
