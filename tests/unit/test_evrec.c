/* test_evrec.c - binary WAL event records: round trip of every value type from a row
 * and back, little-endian bytes, and every truncation or trailing byte rejected without
 * leaks; records naming fields by schema position (exact bytes, names from the schema,
 * refusal against another schema, an unknown event, a position past the schema) and the
 * schema fingerprint they carry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "codec.h"
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
    evrec_encode(now, name, strlen(name), &row, NULL, b);
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
    assert_int_equal(evrec_decode(b.data, b.len, &a, NULL, NULL, &r, why, sizeof why), 0);
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
    evrec_encode(7, "Bee", 3, &row, NULL, &b);
    free(row.fields);
    assert_memory_equal(b.data, "xyz", 3);
    assert_int_equal(b.data[b.len], 0);
    arena a;
    arena_init(&a);
    evrec r;
    char why[200];
    assert_int_equal(evrec_decode(b.data + 3, first_end - 3, &a, NULL, NULL, &r, why, sizeof why), 0);
    assert_int_equal(r.now, 5);
    assert_int_equal(r.row.n, 10);
    evrec_release(&r);
    assert_int_equal(evrec_decode(b.data + first_end, b.len - first_end, &a, NULL, NULL, &r, why, sizeof why), 0);
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
        assert_int_equal(evrec_decode(b.data, cut, &a, NULL, NULL, &r, why, sizeof why), -1);
        assert_int_equal(r.njson, 0);
        arena_reset(&a);
    }
    bv_buf_putc(&b, 'x');
    assert_int_equal(evrec_decode(b.data, b.len, &a, NULL, NULL, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "trailing"));
    /* a bad tag */
    b.len--;
    char *tag = memchr(b.data + 8 + 4 + 1 + 4 + 2, 7, 8);   /* the first field's tag (short string) */
    assert_non_null(tag);
    *tag = 9;
    assert_int_equal(evrec_decode(b.data, b.len, &a, NULL, NULL, &r, why, sizeof why), -1);
    arena_free(&a);
    json_decref(in);
    bv_buf_free(&b);
}

/* The schema the by-position tests decode against (the registry's part of it). */
/* Event Txn's schema, then the same widened in place by one field (appended). */
static char *const TXN_NAMES[] = { "event_time", "user_id", "amount", "extra" };
static const bv_wtype TXN_TYPES[] = { WT_I64, WT_STR, WT_F64, WT_BOOL };
static const uint32_t TXN_LENS[] = { 10, 7, 6, 5 };

typedef struct test_reg {
    size_t n;                     /* the registry's Txn has the first n of TXN_NAMES */
    uint32_t prefix_fp[5];
    int asked;
    const uint32_t *lens;         /* the names' lengths as the registry gives them, or NULL */
} test_reg;

static test_reg txn_reg(size_t n, const uint32_t *lens) {
    test_reg r = { .n = n, .lens = lens };
    for (size_t i = 0; i < n; i++) r.prefix_fp[i + 1] = bv_schema_fingerprint_extend(r.prefix_fp[i], TXN_NAMES[i], TXN_TYPES[i]);
    return r;
}

static bool txn_schema(void *ctx, const char *event, size_t len, evrec_schema *out) {
    test_reg *r = ctx;
    r->asked++;
    if (len != 3 || memcmp(event, "Txn", 3) != 0) return false;
    *out = (evrec_schema){ TXN_NAMES, r->lens, r->n, r->prefix_fp };
    return true;
}

static uint32_t txn_fingerprint(void) {
    bv_schema sc;
    bv_schema_init(&sc);
    for (size_t i = 0; i < 3; i++) bv_schema_set(&sc, TXN_NAMES[i], TXN_TYPES[i]);
    uint32_t fp = bv_schema_fingerprint(&sc);
    bv_schema_free(&sc);
    return fp;
}

static void test_fingerprint(void **state) {
    (void)state;
    bv_schema a, b;
    bv_schema_init(&a);
    bv_schema_init(&b);
    bv_schema_set(&a, "x", WT_I64);
    bv_schema_set(&a, "y", WT_STR);
    bv_schema_set(&b, "x", WT_I64);
    bv_schema_set(&b, "y", WT_STR);
    assert_int_equal(bv_schema_fingerprint(&a), bv_schema_fingerprint(&b));
    bv_schema_add_optional(&b, "z");                     /* optional_fields are not part of it */
    assert_int_equal(bv_schema_fingerprint(&a), bv_schema_fingerprint(&b));
    bv_schema_set(&b, "y", WT_F64);                      /* another type */
    assert_int_not_equal(bv_schema_fingerprint(&a), bv_schema_fingerprint(&b));
    bv_schema_free(&b);
    bv_schema_init(&b);
    bv_schema_set(&b, "y", WT_STR);                      /* another order */
    bv_schema_set(&b, "x", WT_I64);
    assert_int_not_equal(bv_schema_fingerprint(&a), bv_schema_fingerprint(&b));
    bv_schema_free(&b);
    bv_schema_init(&b);
    bv_schema_set(&b, "xy", WT_I64);                     /* names run together differently */
    bv_schema_set(&b, "", WT_STR);
    assert_int_not_equal(bv_schema_fingerprint(&a), bv_schema_fingerprint(&b));
    bv_schema_set(&a, "w", WT_BOOL);                     /* a widened schema */
    assert_int_not_equal(bv_schema_fingerprint(&a), bv_schema_fingerprint(&b));
    bv_schema_free(&a);
    bv_schema_free(&b);
}

/* A Txn row: user_id (position 1), event_time (0), an optional field outside the schema
 * (by name), amount (2), a 300-byte string by name. */
typedef struct txn_case {
    bv_field f[5];
    char longs[300];
    bv_row row;
} txn_case;

static void txn_case_init(txn_case *c) {
    memset(c->longs, 'q', sizeof c->longs);
    c->f[0] = (bv_field){ "user_id", 7, bv_str("k1", 2) };
    c->f[1] = (bv_field){ "event_time", 10, bv_i64(-7) };
    c->f[2] = (bv_field){ "note", 4, bv_null() };
    c->f[3] = (bv_field){ "amount", 6, bv_f64(2.5) };
    c->f[4] = (bv_field){ "memo", 4, bv_str(c->longs, sizeof c->longs) };
    c->row = (bv_row){ .fields = c->f, .n = 5, .cap = 0 };
}

static void test_by_position(void **state) {
    (void)state;
    txn_case c;
    txn_case_init(&c);
    const bv_field *f = c.f;
    test_reg reg = txn_reg(3, TXN_LENS);
    assert_int_equal(reg.prefix_fp[3], txn_fingerprint());   /* prefixes extend alike */
    const int32_t fpos[5] = { 1, 0, -1, 2, -1 };
    evrec_pos pos = { reg.prefix_fp[3], 3, fpos };
    bv_buf b;
    bv_buf_init(&b);
    evrec_encode(99, "Txn", 3, &c.row, &pos, &b);
    /* the bytes, as evrec.h lays them out */
    const unsigned char *p = (const unsigned char *)b.data;
    assert_int_equal(codec_get64(p), 99);
    assert_int_equal(codec_get32(p + 8), 0x80000003u);
    assert_memory_equal(p + 12, "Txn", 3);
    assert_int_equal(codec_get32(p + 15), reg.prefix_fp[3]);
    assert_int_equal(codec_get32(p + 19), 3);
    assert_int_equal(codec_get32(p + 23), 5);
    p += 27;
    assert_int_equal(p[0], 1);                           /* user_id: position 1, short string */
    assert_int_equal(p[1], 7);
    assert_int_equal(p[2], 2);
    assert_memory_equal(p + 3, "k1", 2);
    p += 5;
    assert_int_equal(p[0], 0);                           /* event_time: position 0, i64 */
    assert_int_equal(p[1], 3);
    assert_int_equal((int64_t)codec_get64(p + 2), -7);
    p += 10;
    assert_int_equal(p[0], EVREC_REF_NAME);              /* note: by name, null */
    assert_int_equal(codec_get16(p + 1), 4);
    assert_memory_equal(p + 3, "note", 4);
    assert_int_equal(p[7], 0);
    p += 8;
    assert_int_equal(p[0], 2);                           /* amount: position 2, f64 */
    assert_int_equal(p[1], 4);
    p += 10;
    assert_int_equal(p[0], EVREC_REF_NAME);              /* memo: by name, long string */
    assert_int_equal(p[7], 5);
    assert_int_equal(codec_get32(p + 8), 300);
    p += 12 + 300;
    assert_int_equal((size_t)((const char *)p - b.data), b.len);

    arena a;
    arena_init(&a);
    evrec r;
    char why[300];
    assert_int_equal(evrec_decode(b.data, b.len, &a, txn_schema, &reg, &r, why, sizeof why), 0);
    assert_int_equal(reg.asked, 1);
    assert_int_equal(r.now, 99);
    assert_int_equal(r.event_len, 3);
    assert_int_equal(r.row.n, 5);
    assert_ptr_equal(r.row.fields[0].name, TXN_NAMES[1]);   /* names by position: the schema's */
    assert_ptr_equal(r.row.fields[1].name, TXN_NAMES[0]);
    assert_ptr_equal(r.row.fields[3].name, TXN_NAMES[2]);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(r.row.fields[i].name_len, f[i].name_len);
        assert_memory_equal(r.row.fields[i].name, f[i].name, f[i].name_len);
        assert_true(bv_equal(&r.row.fields[i].value, &f[i].value));
    }
    evrec_release(&r);

    /* the same row by name decodes alike, without asking for a schema */
    bv_buf nb;
    bv_buf_init(&nb);
    evrec_encode(99, "Txn", 3, &c.row, NULL, &nb);
    assert_true(nb.len > b.len);
    assert_int_equal(evrec_decode(nb.data, nb.len, &a, NULL, NULL, &r, why, sizeof why), 0);
    assert_int_equal(r.row.n, 5);
    assert_memory_equal(r.row.fields[3].name, "amount", 6);
    evrec_release(&r);
    bv_buf_free(&nb);
    arena_free(&a);
    bv_buf_free(&b);
}

static void test_by_position_refused(void **state) {
    (void)state;
    txn_case c;
    txn_case_init(&c);
    test_reg reg = txn_reg(3, NULL);
    const int32_t fpos[5] = { 1, 0, -1, 2, 300 };       /* a position past a ref byte: by name */
    evrec_pos pos = { reg.prefix_fp[3], 3, fpos };
    bv_buf b;
    bv_buf_init(&b);
    evrec_encode(1, "Txn", 3, &c.row, &pos, &b);
    arena a;
    arena_init(&a);
    evrec r;
    char why[300];
    assert_int_equal(evrec_decode(b.data, b.len, &a, txn_schema, &reg, &r, why, sizeof why), 0);
    assert_memory_equal(r.row.fields[4].name, "memo", 4);
    evrec_release(&r);
    /* no registry to ask */
    assert_int_equal(evrec_decode(b.data, b.len, &a, NULL, NULL, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "position"));
    /* the schema widened in place (a field appended): decoded as before */
    test_reg wide = txn_reg(4, TXN_LENS);
    assert_int_equal(evrec_decode(b.data, b.len, &a, txn_schema, &wide, &r, why, sizeof why), 0);
    assert_int_equal(r.row.n, 5);
    assert_ptr_equal(r.row.fields[3].name, TXN_NAMES[2]);
    evrec_release(&r);
    /* another schema of the event: other first fields, or fewer fields than written for */
    test_reg other = txn_reg(3, NULL);
    other.prefix_fp[3] ^= 1;
    assert_int_equal(evrec_decode(b.data, b.len, &a, txn_schema, &other, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "another schema"));
    test_reg narrow = txn_reg(2, NULL);
    assert_int_equal(evrec_decode(b.data, b.len, &a, txn_schema, &narrow, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "schema of 3 fields, the registry's has 2"));
    /* an event the registry does not have at that point */
    bv_buf u;
    bv_buf_init(&u);
    evrec_encode(1, "Tx", 2, &c.row, &pos, &u);
    assert_int_equal(evrec_decode(u.data, u.len, &a, txn_schema, &reg, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "'Tx'"));
    assert_non_null(strstr(why, "registered"));
    bv_buf_free(&u);
    /* a position past the schema it was written for (even where a wider one has it) */
    unsigned char *ref = (unsigned char *)b.data + 27;
    assert_int_equal(*ref, 1);
    *ref = 3;
    assert_int_equal(evrec_decode(b.data, b.len, &a, txn_schema, &reg, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "schema position 3 of 3"));
    assert_int_equal(evrec_decode(b.data, b.len, &a, txn_schema, &wide, &r, why, sizeof why), -1);
    *ref = 1;
    /* every cut short */
    for (size_t cut = 0; cut < b.len; cut++) {
        assert_int_equal(evrec_decode(b.data, cut, &a, txn_schema, &reg, &r, why, sizeof why), -1);
        assert_int_equal(r.njson, 0);
        assert_true(why[0] != 0);
        arena_reset(&a);
    }
    arena_free(&a);
    bv_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_appended_records_many_lists),
        cmocka_unit_test(test_truncation_and_trailing_bytes),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_by_position),
        cmocka_unit_test(test_by_position_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
