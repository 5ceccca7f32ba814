/*
 * test_opval.c - op_val (sketch/opval.h): the owned value copy with short text inline.
 *
 * Text of at most OPVAL_INLINE_MAX (14) bytes lives inside the 16-byte op_val, longer
 * text on the heap. Checked here: the all-zero empty value; every text length around
 * the boundary (0, 1, 13, 14, 15 bytes) and long ones through set, move (memcpy), view,
 * write, copy and the snapshot form (which must be the historic u8 kind, u32 len, bytes
 * whatever the memory form); replacing a value by one of the other form (inline <->
 * heap, text <-> number) without leaks (the test build runs under ASan/LSan); BV_JSON
 * values whose rendered text falls either side of the boundary; and that hash, order and
 * same_key depend on the text only, never on where it is kept.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "jsonw.h"
#include "opval.h"
#include "valmap.h"

/* Longer than any length the loops use. */
static const char TEXT[] =
    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijkl";
#define MAX_LEN (sizeof TEXT - 2)       /* leaves room for a text one byte longer */

static op_val zero_val(void) {
    op_val v;
    memset(&v, 0, sizeof v);
    return v;
}

static void assert_buf(const bv_buf *got, const void *want, size_t n) {
    if (got->len != n || (n && memcmp(got->data, want, n) != 0))
        fail_msg("bytes differ: %zu bytes, want %zu", got->len, n);
}

/* The JSON opval_write renders for v, into a fresh buffer (caller frees). */
static void render(const op_val *v, bv_buf *b) {
    jsonw w;
    bv_buf_init(b);
    jsonw_init(&w, b);
    opval_write(v, &w);
}

/* The snapshot form of v, decoded back into *d (must consume it all). */
static void roundtrip(const op_val *v, op_val *d, bv_buf *enc) {
    bv_buf_init(enc);
    opval_encode(enc, v);
    const uint8_t *p = (const uint8_t *)enc->data, *end = p + enc->len;
    assert_int_equal(opval_decode(&p, end, d), 0);
    assert_ptr_equal(p, end);
}

static void assert_text(const op_val *v, uint8_t kind, const char *text, size_t len) {
    assert_int_equal(v->kind, kind);
    assert_int_equal(opval_len(v), len);
    assert_int_equal(opval_inline(v), len <= OPVAL_INLINE_MAX);
    assert_true(len == 0 || memcmp(opval_bytes(v), text, len) == 0);
}

static void test_layout(void **state) {
    (void)state;
    assert_int_equal(sizeof(op_val), 16);
    assert_int_equal(OPVAL_INLINE_MAX, 14);
}

static void test_empty(void **state) {
    (void)state;
    op_val e = zero_val(), c = zero_val(), d;
    assert_int_equal(e.kind, BV_NULL);
    assert_int_equal(opval_view(&e).kind, BV_NULL);
    bv_buf b;
    render(&e, &b);
    assert_buf(&b, "null", 4);
    bv_buf_free(&b);
    /* snapshot form: the kind byte alone */
    memset(&d, 0x5a, sizeof d);
    d.kind = BV_I64;                   /* a non-text value is safe to overwrite */
    roundtrip(&e, &d, &b);
    uint8_t want = BV_NULL;
    assert_buf(&b, &want, 1);
    bv_buf_free(&b);
    assert_int_equal(d.kind, BV_NULL);
    assert_int_equal(opval_order(&d, &e), 0);
    opval_copy(&c, &e);
    assert_int_equal(c.kind, BV_NULL);
    bv_value n = bv_null();
    assert_true(opval_same_key(&e, &n));
    /* set to null empties, clear leaves all zero */
    bv_value s = bv_str(TEXT, 20);
    opval_set(&c, &s);
    opval_set(&c, &n);
    assert_int_equal(c.kind, BV_NULL);
    opval_set(&c, &s);
    opval_clear(&c);
    op_val z = zero_val();
    assert_memory_equal(&c, &z, sizeof c);
    opval_clear(&c);                   /* clearing an empty value is harmless */
}

/* Every length from 0 to MAX_LEN: the boundary 13, 14, 15 and long text. */
static void test_lengths(void **state) {
    (void)state;
    for (size_t len = 0; len <= MAX_LEN; len++) {
        bv_value v = bv_str(TEXT, len);
        op_val a = zero_val(), b = zero_val(), c = zero_val(), d = zero_val();
        opval_set(&a, &v);
        assert_text(&a, BV_STR, TEXT, len);
        assert_true(opval_same_key(&a, &v));
        /* moved (memcpy, as rows and arrays move) and the source scribbled: same text */
        memcpy(&b, &a, sizeof a);
        memset(&a, 0x5a, sizeof a);
        assert_text(&b, BV_STR, TEXT, len);
        assert_true(opval_same_key(&b, &v));
        bv_value view = opval_view(&b);
        assert_int_equal(view.kind, BV_STR);
        assert_int_equal(view.u.s.len, len);
        assert_true(len == 0 || memcmp(view.u.s.ptr, TEXT, len) == 0);
        assert_int_equal(opval_hash(&view), opval_hash(&v));
        /* written as a JSON string */
        bv_buf out, want;
        render(&b, &out);
        bv_buf_init(&want);
        bv_buf_putc(&want, '"');
        bv_buf_put(&want, TEXT, len);
        bv_buf_putc(&want, '"');
        assert_buf(&out, want.data, want.len);
        bv_buf_free(&out);
        bv_buf_free(&want);
        /* a copy owns its text: heap text is a new buffer */
        opval_copy(&c, &b);
        assert_text(&c, BV_STR, TEXT, len);
        if (len > OPVAL_INLINE_MAX) assert_ptr_not_equal(opval_bytes(&c), opval_bytes(&b));
        opval_copy(&c, &c);            /* self-copy keeps it */
        assert_text(&c, BV_STR, TEXT, len);
        /* snapshot form is the historic one whatever the memory form */
        roundtrip(&c, &d, &out);
        bv_buf_init(&want);
        cod_put_u8(&want, BV_STR);
        cod_put_u32(&want, (uint32_t)len);
        bv_buf_put(&want, TEXT, len);
        assert_buf(&out, want.data, want.len);
        bv_buf_free(&out);
        bv_buf_free(&want);
        assert_text(&d, BV_STR, TEXT, len);
        assert_int_equal(opval_order(&d, &b), 0);
        /* order across lengths (and so across the two forms): bytewise, then by length */
        bv_value longer = bv_str(TEXT, len + 1);
        op_val e = zero_val();
        opval_set(&e, &longer);
        assert_int_equal(opval_order(&d, &e), -1);
        assert_int_equal(opval_order(&e, &d), 1);
        assert_false(opval_same_key(&e, &v));
        assert_false(opval_same_key(&d, &longer));
        assert_true(opval_hash(&longer) != opval_hash(&v));
        opval_clear(&b);
        opval_clear(&c);
        opval_clear(&d);
        opval_clear(&e);
    }
}

/* Replacing a value with one of another form frees or keeps as it must (LSan checks). */
static void test_replace(void **state) {
    (void)state;
    static const size_t lens[] = { 0, 1, 9, 13, 14, 15, 16, 40 };
    const size_t nl = sizeof lens / sizeof lens[0];
    for (size_t i = 0; i < nl; i++) {
        for (size_t j = 0; j < nl; j++) {
            bv_value x = bv_str(TEXT, lens[i]), y = bv_str(TEXT + 3, lens[j]);
            op_val a = zero_val(), b = zero_val(), c = zero_val();
            /* set over existing */
            opval_set(&a, &x);
            opval_set(&a, &y);
            assert_text(&a, BV_STR, TEXT + 3, lens[j]);
            /* copy over existing */
            opval_set(&b, &x);
            opval_set(&c, &y);
            opval_copy(&b, &c);
            assert_text(&b, BV_STR, TEXT + 3, lens[j]);
            assert_int_equal(opval_order(&a, &b), 0);
            /* decode over existing */
            bv_buf enc;
            opval_set(&c, &x);
            roundtrip(&a, &c, &enc);
            bv_buf_free(&enc);
            assert_text(&c, BV_STR, TEXT + 3, lens[j]);
            opval_clear(&a);
            opval_clear(&b);
            opval_clear(&c);
        }
        /* text -> number -> text */
        bv_value x = bv_str(TEXT, lens[i]), n = bv_i64(-7), f = bv_f64(2.5), t = bv_bool(true);
        op_val a = zero_val();
        opval_set(&a, &x);
        opval_set(&a, &n);
        assert_int_equal(a.kind, BV_I64);
        assert_int_equal(opval_view(&a).u.i, -7);
        assert_true(opval_same_key(&a, &n));
        opval_set(&a, &x);
        assert_text(&a, BV_STR, TEXT, lens[i]);
        opval_set(&a, &f);
        assert_true(opval_view(&a).u.f == 2.5);
        opval_set(&a, &t);
        assert_true(opval_view(&a).u.b);
        opval_set(&a, &x);
        assert_text(&a, BV_STR, TEXT, lens[i]);
        opval_clear(&a);
    }
}

/* A BV_JSON value keeps its rendered text, inline or not by the text's length. */
static void test_json(void **state) {
    (void)state;
    /* [n] renders as 3, 13, 14, 15 and 21 bytes */
    static const json_int_t ints[] = {
        7, 12345678901LL, 123456789012LL, 1234567890123LL, 1234567890123456789LL,
    };
    static const size_t int_lens[] = { 3, 13, 14, 15, 21 };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0] + 2; i++) {
        json_t *j;
        if (i < sizeof ints / sizeof ints[0]) j = json_pack("[I]", ints[i]);
        else if (i == sizeof ints / sizeof ints[0]) j = json_pack("{s:i}", "abcdefg", 1);
        else j = json_pack("{s:[i,i,i],s:s}", "xs", 1, 2, 3, "name", "a long enough value");
        assert_non_null(j);
        bv_value jv;
        jv.kind = BV_JSON;
        jv.u.j = j;
        bv_buf r;
        bv_buf_init(&r);
        jsonw w;
        jsonw_init(&w, &r);
        jsonw_json(&w, j);
        size_t wl = r.len;
        if (i < sizeof ints / sizeof ints[0]) assert_int_equal(wl, int_lens[i]);
        op_val a = zero_val(), c = zero_val(), d = zero_val();
        opval_set(&a, &jv);
        assert_text(&a, BV_JSON, r.data, wl);
        /* view: BV_STR of the text; write: the raw text; hash: of the rendered text */
        bv_value view = opval_view(&a);
        assert_int_equal(view.kind, BV_STR);
        assert_int_equal(view.u.s.len, wl);
        assert_int_equal(opval_hash(&jv), opval_hash(&(bv_value){ .kind = BV_JSON, .u.j = j }));
        bv_buf out;
        render(&a, &out);
        assert_buf(&out, r.data, wl);
        bv_buf_free(&out);
        opval_copy(&c, &a);
        assert_text(&c, BV_JSON, r.data, wl);
        roundtrip(&c, &d, &out);
        bv_buf enc;
        bv_buf_init(&enc);
        cod_put_u8(&enc, BV_JSON);
        cod_put_u32(&enc, (uint32_t)wl);
        bv_buf_put(&enc, r.data, wl);
        assert_buf(&out, enc.data, enc.len);
        assert_text(&d, BV_JSON, r.data, wl);
        /* a list/map is never a string key */
        bv_value sv = bv_str(r.data, wl);
        assert_false(opval_same_key(&a, &sv));
        bv_buf_free(&out);
        bv_buf_free(&enc);
        bv_buf_free(&r);
        json_decref(j);
        opval_clear(&a);
        opval_clear(&c);
        opval_clear(&d);
    }
}

/* Hash, order and same_key see the text only: a value kept on the heap although short
 * (no writer makes one, but nothing may depend on the form) compares as the inline one. */
static void test_form_blind(void **state) {
    (void)state;
    static const size_t lens[] = { 0, 1, 9, 13, 14 };
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t len = lens[i];
        bv_value v = bv_str(TEXT, len);
        op_val in = zero_val(), heap = zero_val();
        opval_set(&in, &v);
        assert_true(opval_inline(&in));
        heap.kind = BV_STR;
        heap.heap_len = (uint32_t)len;
        heap.u.heap = malloc(len + 1);
        assert_non_null(heap.u.heap);
        memcpy(heap.u.heap, TEXT, len);
        assert_false(opval_inline(&heap));
        assert_int_equal(opval_len(&heap), len);
        assert_int_equal(opval_order(&in, &heap), 0);
        assert_int_equal(opval_order(&heap, &in), 0);
        assert_true(opval_same_key(&heap, &v));
        bv_value hv = opval_view(&heap), iv = opval_view(&in);
        assert_int_equal(opval_hash(&hv), opval_hash(&iv));
        bv_buf a, b;
        render(&in, &a);
        render(&heap, &b);
        assert_buf(&a, b.data, b.len);
        bv_buf_free(&a);
        bv_buf_free(&b);
        bv_buf_init(&a);
        bv_buf_init(&b);
        opval_encode(&a, &in);
        opval_encode(&b, &heap);
        assert_buf(&a, b.data, b.len);
        bv_buf_free(&a);
        bv_buf_free(&b);
        /* a copy of the odd form is a normal value; clear frees the heap text */
        op_val c = zero_val();
        opval_copy(&c, &heap);
        assert_int_equal(opval_order(&c, &in), 0);
        opval_clear(&c);
        opval_clear(&heap);
        opval_clear(&in);
    }
    /* ordering across forms: a short text after a long one with a smaller prefix */
    bv_value s = bv_str("b", 1), l = bv_str(TEXT, 30), p14 = bv_str(TEXT, 14), p15 = bv_str(TEXT, 15);
    op_val a = zero_val(), b = zero_val();
    opval_set(&a, &s);
    opval_set(&b, &l);
    assert_int_equal(opval_order(&a, &b), 1);
    assert_int_equal(opval_order(&b, &a), -1);
    opval_set(&a, &p14);
    opval_set(&b, &p15);
    assert_int_equal(opval_order(&a, &b), -1);
    assert_false(opval_same_key(&a, &p15));
    assert_false(opval_same_key(&b, &p14));
    opval_clear(&a);
    opval_clear(&b);
}

/* valmap keys (top_k, entropy, event_type_mix) of every length find themselves. */
static void test_valmap_keys(void **state) {
    (void)state;
    valmap m;
    memset(&m, 0, sizeof m);
    char key[64];
    const int n = 300;                 /* past VM_LINEAR: the hashed index */
    for (int i = 0; i < n; i++) {
        int kl = snprintf(key, sizeof key, "%.*s%d", i % 20, TEXT, i);
        bv_value k = bv_str(key, (size_t)kl);
        uint64_t h = opval_hash(&k);
        assert_null(vm_find(&m, &k, h));
        vm_entry *e = vm_insert(&m, &k, h);
        e->count = (uint64_t)i + 1;
    }
    for (int i = 0; i < n; i++) {
        int kl = snprintf(key, sizeof key, "%.*s%d", i % 20, TEXT, i);
        bv_value k = bv_str(key, (size_t)kl);
        vm_entry *e = vm_find(&m, &k, opval_hash(&k));
        assert_non_null(e);
        assert_int_equal(e->count, (uint64_t)i + 1);
        assert_text(&e->key, BV_STR, key, (size_t)kl);
    }
    vm_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_replace),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_form_blind),
        cmocka_unit_test(test_valmap_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
