/*
 * fuzz_feature_decode.c - libFuzzer entry point for operator state decoding
 * (feature_decode, i.e. every implemented kind's decode and the window list).
 *
 * The first input byte picks one compiled feature (every implemented kind of the op
 * table, lifetime and windowed, sketches with several params); the rest is handed to
 * feature_decode on a fresh state. Decoding must never read past the end, crash or leak. When it succeeds
 * the state must be fully usable: it is read at several query times, updated with a few
 * events of every value kind, encoded, and the encoding must decode again to a state
 * whose encoding is byte-identical (encode is canonical after one decode).
 *
 * Build: see tests/fuzz/CMakeLists.txt (clang -fsanitize=fuzzer,address,undefined).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feature.h"
#include "op.h"

/* One compiled feature per implemented kind and shape: lifetime, plus windowed for
 * windowable kinds, with params that satisfy every kind's register-time checks. Built
 * from the op table, so kinds implemented later are fuzzed without touching this file.
 * Compiled once per process: the harness may keep state, the library does not. */
#define MAX_FEATURES 128
static feature features[MAX_FEATURES];
static size_t nfeatures;
static bool ready;

static void add_feature(const bv_schema *s, const char *op, const char *window, const char *extra) {
    char spec[512];
    snprintf(spec, sizeof spec,
             "{\"op\":\"%s\",\"params\":{\"field\":\"v\",\"n\":3,\"half_life\":\"1h\","
             "\"sub_window\":\"1m\",\"buckets\":[1,2.5],\"samples\":4,\"lat\":\"x\",\"lon\":\"i\","
             "\"where\":\"(k > 1)\"%s%s%s%s}}",
             op, window ? ",\"window\":\"" : "", window ? window : "", window ? "\"" : "", extra);
    json_t *spec_j = json_loads(spec, 0, NULL);
    bv_err err;
    if (!spec_j || nfeatures == MAX_FEATURES ||
        feature_compile(&features[nfeatures], "f", spec_j, s, "p", &err) != 0) {
        fprintf(stderr, "fuzz setup: %s: %s\n", spec, err.reason);
        abort();
    }
    nfeatures++;
    json_decref(spec_j);
}

static void setup(void) {
    bv_schema s;
    bv_schema_init(&s);
    bv_schema_set(&s, "v", WT_JSON);
    bv_schema_set(&s, "x", WT_F64);
    bv_schema_set(&s, "i", WT_I64);
    bv_schema_set(&s, "k", WT_I64);
    const struct op_vtable *vt;
    for (size_t i = 0; (vt = op_kind_at(i)) != NULL; i++) {
        if (!op_implemented(vt)) continue;
        add_feature(&s, vt->name, (vt->flags & OPF_WINDOW_PARAM) ? "1h" : NULL, "");
        if (vt->flags & OPF_WINDOWABLE) add_feature(&s, vt->name, "1m", "");
    }
    /* sketch params that change the encoding's shape */
    add_feature(&s, "top_k", NULL, ",\"k\":1");
    add_feature(&s, "top_k", "64ms", ",\"k\":1024");
    add_feature(&s, "quantile", NULL, ",\"q\":0.99");
    bv_schema_free(&s);
    ready = true;
}

static void exercise(const feature *f, void *st) {
    static const int64_t qs[] = { 0, 1, 59999, 60000, 3600000, INT64_MAX, INT64_MIN, -5 };
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        bv_buf b;
        jsonw w;
        bv_buf_init(&b);
        jsonw_init(&w, &b);
        feature_read(f, st, qs[i], &w);
        bv_buf_free(&b);
    }
    json_t *list = json_loads("[1,{\"a\":2}]", 0, NULL);
    bv_value vals[] = { bv_i64(3), bv_f64(2.5), bv_str("s", 1), bv_bool(true), bv_from_json(list), bv_null() };
    op_stats stats = { 0, 0, 0 };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        bv_field fields[4] = {
            { "v", 1, vals[i] }, { "x", 1, vals[i] }, { "i", 1, vals[i] }, { "k", 1, bv_i64((int64_t)i) },
        };
        bv_row row = { fields, 4, 0 };
        expr_arena arena;
        expr_arena_reset(&arena);
        feature_update(f, st, &row, (int64_t)i * 40000 - 1000, &arena, &stats);
    }
    json_decref(list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ready) setup();
    if (size < 1) return 0;
    const feature *f = &features[data[0] % nfeatures];
    /* An exact-size heap copy so ASan sees any read past the end. */
    uint8_t *in = malloc(size - 1 ? size - 1 : 1);
    if (!in) return 0;
    memcpy(in, data + 1, size - 1);
    void *st = malloc(f->state_size);
    if (!st) abort();
    feature_state_init(f, st);
    const uint8_t *p = in;
    if (feature_decode(f, st, &p, in + (size - 1)) == 0) {
        if (p < in || p > in + (size - 1)) abort();
        bv_buf e1, e2;
        bv_buf_init(&e1);
        bv_buf_init(&e2);
        feature_encode(f, st, &e1);
        void *st2 = malloc(f->state_size);
        if (!st2) abort();
        feature_state_init(f, st2);
        const uint8_t *q = (const uint8_t *)e1.data;
        if (feature_decode(f, st2, &q, q + e1.len) != 0) abort();       /* our own output */
        if (q != (const uint8_t *)e1.data + e1.len) abort();
        feature_encode(f, st2, &e2);
        if (e1.len != e2.len || memcmp(e1.data, e2.data, e1.len) != 0) abort();
        exercise(f, st);
        exercise(f, st2);
        feature_state_destroy(f, st2);
        free(st2);
        bv_buf_free(&e1);
        bv_buf_free(&e2);
    }
    feature_state_destroy(f, st);
    free(st);
    free(in);
    return 0;
}
