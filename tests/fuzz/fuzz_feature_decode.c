/*
 * fuzz_feature_decode.c - libFuzzer entry point for operator state decoding
 * (feature_decode, i.e. every implemented kind's decode and the window list).
 *
 * The first input byte picks one compiled feature (every implemented kind, lifetime and
 * windowed, sketches with several params); the rest is handed to feature_decode on a
 * fresh state. Decoding must never read past the end, crash or leak. When it succeeds
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

#include "ops/feature.h"

static const char *const SPECS[] = {
    "{\"op\":\"count\"}",
    "{\"op\":\"sum\",\"params\":{\"field\":\"v\"}}",
    "{\"op\":\"mean\",\"params\":{\"field\":\"v\"}}",
    "{\"op\":\"min\",\"params\":{\"field\":\"v\"}}",
    "{\"op\":\"max\",\"params\":{\"field\":\"x\"}}",
    "{\"op\":\"var\",\"params\":{\"field\":\"v\"}}",
    "{\"op\":\"std\",\"params\":{\"field\":\"v\"}}",
    "{\"op\":\"ratio\",\"params\":{\"where\":\"(k > 1)\"}}",
    "{\"op\":\"n_unique\",\"params\":{\"field\":\"v\"}}",
    "{\"op\":\"quantile\",\"params\":{\"field\":\"v\",\"q\":0.9}}",
    "{\"op\":\"top_k\",\"params\":{\"field\":\"v\"}}",
    "{\"op\":\"top_k\",\"params\":{\"field\":\"v\",\"k\":1}}",
    "{\"op\":\"entropy\",\"params\":{\"field\":\"v\"}}",
    "{\"op\":\"first\",\"params\":{\"field\":\"v\"}}",
    "{\"op\":\"last\",\"params\":{\"field\":\"i\"}}",
    "{\"op\":\"count\",\"params\":{\"window\":\"1h\"}}",
    "{\"op\":\"sum\",\"params\":{\"field\":\"v\",\"window\":\"10s\"}}",
    "{\"op\":\"mean\",\"params\":{\"field\":\"v\",\"window\":\"10s\"}}",
    "{\"op\":\"min\",\"params\":{\"field\":\"v\",\"window\":\"64ms\"}}",
    "{\"op\":\"max\",\"params\":{\"field\":\"x\",\"window\":\"1d\"}}",
    "{\"op\":\"var\",\"params\":{\"field\":\"v\",\"window\":\"5m\"}}",
    "{\"op\":\"std\",\"params\":{\"field\":\"v\",\"window\":\"5m\"}}",
    "{\"op\":\"ratio\",\"params\":{\"where\":\"(k > 1)\",\"window\":\"1m\"}}",
    "{\"op\":\"n_unique\",\"params\":{\"field\":\"v\",\"window\":\"1m\"}}",
    "{\"op\":\"quantile\",\"params\":{\"field\":\"v\",\"window\":\"1m\"}}",
    "{\"op\":\"top_k\",\"params\":{\"field\":\"v\",\"k\":3,\"window\":\"1m\"}}",
    "{\"op\":\"entropy\",\"params\":{\"field\":\"v\",\"window\":\"1m\"}}",
};
#define NSPECS (sizeof SPECS / sizeof SPECS[0])

/* Compiled once per process: the harness may keep state, the library does not. */
static feature features[NSPECS];
static bool ready;

static void setup(void) {
    bv_schema s;
    bv_schema_init(&s);
    bv_schema_set(&s, "v", WT_JSON);
    bv_schema_set(&s, "x", WT_F64);
    bv_schema_set(&s, "i", WT_I64);
    bv_schema_set(&s, "k", WT_I64);
    for (size_t i = 0; i < NSPECS; i++) {
        json_t *spec = json_loads(SPECS[i], 0, NULL);
        bv_err err;
        if (!spec || feature_compile(&features[i], "f", spec, &s, "p", &err) != 0) {
            fprintf(stderr, "fuzz setup: %s: %s\n", SPECS[i], err.reason);
            abort();
        }
        json_decref(spec);
    }
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
    op_stats stats = { 0, 0 };
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
    const feature *f = &features[data[0] % NSPECS];
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
