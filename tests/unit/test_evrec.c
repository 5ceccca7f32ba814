/* test_evrec.c - binary WAL event records: round trip of every value type from a row
 * and back, little-endian bytes, and every truncation or trailing byte rejected without
 * leaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "engine.h"
#include "evrec.h"

static const char *SAMPLE =
    "{\"s\":\"h\\u00e9llo\",\"i\":-42,\"big\":9223372036854775807,\"f\":0.1,\"t\":true,\"n\":null,"
    "\"fa\":false,\"l\":[1,\"x\",{\"y\":2.5}],\"m\":{\"a\":1},\"e\":\"\"}";

static void encode_sample(int64_t now, const char *name, bv_buf *b, json_t **in) {
    *in = json_loads(SAMPLE, 0, NULL);
    assert_non_null(*in);
    bv_row row;
    engine_push_item item;
    engine_item_from_json(&item, &row, name, strlen(name), *in);
    evrec_encode(now, name, strlen(name), &row, b);
    free(row.fields);
}

static void test_round_trip(void **state) {
    (void)state;
    json_t *in;
    bv_buf b;
    bv_buf_init(&b);
    encode_sample(1700000000123, "Click", &b, &in);
    /* little-endian whatever the host: the arrival time's low byte comes first */
    assert_int_equal((unsigned char)b.data[0], 1700000000123ull & 0xff);
    arena a;
    arena_init(&a);
    evrec r;
    char why[200];
    assert_int_equal(evrec_decode(b.data, b.len, &a, &r, why, sizeof why), 0);
    assert_int_equal(r.now, 1700000000123);
    assert_int_equal(r.event_len, 5);
    assert_memory_equal(r.event, "Click", 5);
    /* field order is the pushed order, and every value comes back with its type */
    const char *order[] = { "s", "i", "big", "f", "t", "n", "fa", "l", "m", "e" };
    assert_int_equal(r.row.n, 10);
    for (size_t i = 0; i < 10; i++) {
        const bv_field *f = &r.row.fields[i];
        assert_int_equal(f->name_len, strlen(order[i]));
        assert_memory_equal(f->name, order[i], f->name_len);
        bv_value want = bv_from_json(json_object_get(in, order[i]));
        assert_int_equal(f->value.kind, want.kind);
        if (want.kind == BV_JSON) assert_true(json_equal(f->value.u.j, want.u.j));
        else if (want.kind == BV_F64) assert_true(f->value.u.f == want.u.f);
        else assert_true(bv_equal(&f->value, &want));
    }
    evrec_release(&r);
    arena_free(&a);
    json_decref(in);
    bv_buf_free(&b);
}

/* Records appended one after another into one buffer (the push path's batch buffer),
 * one with more list/map fields than encode renders on its stack (8), decode alike. */
static void test_appended_records_many_lists(void **state) {
    (void)state;
    bv_buf b;
    bv_buf_init(&b);
    bv_buf_puts(&b, "xyz");                    /* bytes already in the buffer are kept */
    json_t *in1;
    encode_sample(5, "A", &b, &in1);
    size_t first_end = b.len;
    json_t *in2 = json_object();
    for (int i = 0; i < 11; i++) {
        char k[8];
        snprintf(k, sizeof k, "l%d", i);
        json_object_set_new(in2, k, json_pack("[i,s]", i, "v"));
    }
    json_object_set_new(in2, "", json_string(""));   /* empty name and empty string */
    bv_row row;
    engine_push_item item;
    engine_item_from_json(&item, &row, "Bee", 3, in2);
    evrec_encode(7, "Bee", 3, &row, &b);
    free(row.fields);
    assert_memory_equal(b.data, "xyz", 3);
    assert_int_equal(b.data[b.len], 0);
    arena a;
    arena_init(&a);
    evrec r;
    char why[200];
    assert_int_equal(evrec_decode(b.data + 3, first_end - 3, &a, &r, why, sizeof why), 0);
    assert_int_equal(r.now, 5);
    assert_int_equal(r.row.n, 10);
    evrec_release(&r);
    assert_int_equal(evrec_decode(b.data + first_end, b.len - first_end, &a, &r, why, sizeof why), 0);
    assert_int_equal(r.now, 7);
    assert_memory_equal(r.event, "Bee", 3);
    assert_int_equal(r.row.n, 12);
    for (size_t i = 0; i < r.row.n; i++) {
        const bv_field *f = &r.row.fields[i];
        char k[8];
        memcpy(k, f->name, f->name_len);
        k[f->name_len] = 0;
        bv_value want = bv_from_json(json_object_get(in2, k));
        assert_int_equal(f->value.kind, want.kind);
        if (want.kind == BV_JSON) assert_true(json_equal(f->value.u.j, want.u.j));
        else assert_true(bv_equal(&f->value, &want));
    }
    evrec_release(&r);
    arena_free(&a);
    json_decref(in1);
    json_decref(in2);
    bv_buf_free(&b);
}

static void test_truncation_and_trailing_bytes(void **state) {
    (void)state;
    json_t *in;
    bv_buf b;
    bv_buf_init(&b);
    encode_sample(5, "E", &b, &in);
    arena a;
    arena_init(&a);
    evrec r;
    char why[200];
    for (size_t cut = 0; cut < b.len; cut++) {
        assert_int_equal(evrec_decode(b.data, cut, &a, &r, why, sizeof why), -1);
        assert_int_equal(r.njson, 0);
        arena_reset(&a);
    }
    bv_buf_putc(&b, 'x');
    assert_int_equal(evrec_decode(b.data, b.len, &a, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "trailing"));
    /* a bad tag */
    b.len--;
    char *tag = memchr(b.data + 8 + 4 + 1 + 4 + 2, 5, 8);   /* the first field's tag (string) */
    assert_non_null(tag);
    *tag = 9;
    assert_int_equal(evrec_decode(b.data, b.len, &a, &r, why, sizeof why), -1);
    arena_free(&a);
    json_decref(in);
    bv_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_appended_records_many_lists),
        cmocka_unit_test(test_truncation_and_trailing_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
