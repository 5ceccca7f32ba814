/*
 * test_window.c - the 64-sub-bucket sliding window (ops/window.h): epochs, the active
 * rule at its edges, eviction of the smallest epoch at the 65th, merge order, bucket
 * creation, sketch merges across buckets, the prefetch hint changing no state.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feature.h"
#include "op.h"
#include "window.h"

#define PATH "p"

static void mk_schema(bv_schema *s) {
    bv_schema_init(s);
    bv_schema_set(s, "v", WT_JSON);
    bv_schema_set(s, "x", WT_F64);
    bv_schema_set(s, "k", WT_I64);
}

#include "feature_harness.h"

/* Push value v (under field "v" and "x") with k at time t. */
static void push(const feature *f, void *st, bv_value v, int64_t k, int64_t t, op_stats *stats) {
    bv_field fields[3] = {
        { "v", 1, v },
        { "x", 1, v },
        { "k", 1, bv_i64(k) },
    };
    bv_row row = { fields, 3, 0 };
    expr_arena arena;
    expr_arena_reset(&arena);
    feature_update(f, st, &row, t, &arena, stats);
}

static double read_num(const feature *f, const void *st, int64_t q) {
    char *s = read_json(f, st, q);
    double d = strtod(s, NULL);
    free(s);
    return d;
}

static void test_epoch(void **state) {
    (void)state;
    assert_int_equal(window_epoch(0, 1000), 0);
    assert_int_equal(window_epoch(999, 1000), 0);
    assert_int_equal(window_epoch(1000, 1000), 1000);
    assert_int_equal(window_epoch(1999, 1000), 1000);
    assert_int_equal(window_epoch(-1, 1000), -1000);
    assert_int_equal(window_epoch(-1000, 1000), -1000);
    assert_int_equal(window_epoch(-1001, 1000), -2000);
    assert_int_equal(window_epoch(12345, 1), 12345);
    assert_int_equal(window_epoch(1700000000123LL, 56250), 1700000000123LL / 56250 * 56250);
    /* out-of-range times do not overflow */
    (void)window_epoch(INT64_MIN, 1000);
    (void)window_epoch(INT64_MAX, 1000);
    assert_int_equal(window_epoch(INT64_MAX, 1000), INT64_MAX / 1000 * 1000);

    assert_true(window_active(1000, 1000, 64000));
    assert_true(window_active(64999, 1000, 64000));
    assert_false(window_active(65000, 1000, 64000));
    assert_false(window_active(999, 1000, 64000));        /* bucket in the future */
    assert_false(window_active(INT64_MAX, INT64_MIN, 64000));
    assert_false(window_active(INT64_MIN, INT64_MAX, 64000));
}

/* An event exactly W ms after its bucket start is expired, W-1 is active. */
static void test_edges(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"count\",\"params\":{\"window\":\"64s\"}}");
    assert_int_equal(f.bucket_ms, 1000);
    void *st = state_new(&f);
    op_stats stats = { 0, 0, 0 };
    push(&f, st, bv_i64(1), 0, 5000, &stats);
    assert_read(&f, st, 4999, "0");                 /* before the bucket */
    assert_read(&f, st, 5000, "1");
    assert_read(&f, st, 5000 + 63999, "1");
    assert_read(&f, st, 5000 + 64000, "0");
    /* an event late in its bucket expires with the bucket (1/64 granularity) */
    push(&f, st, bv_i64(1), 0, 5999, &stats);
    assert_read(&f, st, 5999 + 63000, "2");
    assert_read(&f, st, 5999 + 63001, "0");
    assert_int_equal(window_nbuckets(st), 1);
    state_free(&f, st);
    feature_release(&f);

    /* W = 1 ms: one bucket per ms */
    compile_ok(&f, "{\"op\":\"sum\",\"params\":{\"field\":\"x\",\"window\":\"1ms\"}}");
    assert_int_equal(f.bucket_ms, 1);
    st = state_new(&f);
    push(&f, st, bv_f64(2.5), 0, 100, &stats);
    push(&f, st, bv_f64(1.0), 0, 100, &stats);
    assert_read(&f, st, 100, "3.5");
    assert_read(&f, st, 101, "null");
    state_free(&f, st);
    feature_release(&f);

    /* W = 100 ms: b = 2 */
    compile_ok(&f, "{\"op\":\"count\",\"params\":{\"window\":\"100ms\"}}");
    assert_int_equal(f.bucket_ms, 2);
    st = state_new(&f);
    push(&f, st, bv_i64(1), 0, 11, &stats);        /* epoch 10 */
    assert_read(&f, st, 109, "1");
    assert_read(&f, st, 110, "0");
    state_free(&f, st);
    feature_release(&f);

    /* negative times use floor division */
    compile_ok(&f, "{\"op\":\"count\",\"params\":{\"window\":\"64s\"}}");
    st = state_new(&f);
    push(&f, st, bv_i64(1), 0, -1, &stats);        /* epoch -1000 */
    assert_read(&f, st, -1000, "1");
    assert_read(&f, st, -1000 + 63999, "1");
    assert_read(&f, st, -1000 + 64000, "0");
    assert_read(&f, st, -1001, "0");
    state_free(&f, st);
    feature_release(&f);
}

static void test_eviction(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"count\",\"params\":{\"window\":\"64s\"}}");
    void *st = state_new(&f);
    op_stats stats = { 0, 0, 0 };
    for (int64_t i = 0; i < 64; i++) push(&f, st, bv_i64(1), 0, i * 1000, &stats);
    assert_int_equal(window_nbuckets(st), 64);
    assert_int_equal(stats.bucket_reclaim, 0);
    assert_read(&f, st, 63999, "64");
    /* the 65th distinct epoch evicts the smallest (epoch 0) */
    push(&f, st, bv_i64(1), 0, 64000, &stats);
    assert_int_equal(window_nbuckets(st), 64);
    assert_int_equal(stats.bucket_reclaim, 1);
    assert_read(&f, st, 63999, "63");               /* epoch 0 is gone */
    assert_read(&f, st, 64000, "64");
    /* an existing epoch does not evict */
    push(&f, st, bv_i64(1), 0, 64500, &stats);
    assert_int_equal(stats.bucket_reclaim, 1);
    assert_read(&f, st, 64000, "65");
    /* clock regression to a new, older epoch evicts the smallest held (1000) */
    push(&f, st, bv_i64(1), 0, 500, &stats);
    assert_int_equal(stats.bucket_reclaim, 2);
    assert_int_equal(window_nbuckets(st), 64);
    assert_read(&f, st, 63999, "63");               /* epochs 0 and 2000..63000 */
    /* a long stream stays at 64 buckets */
    for (int64_t i = 0; i < 1000; i++) push(&f, st, bv_i64(1), 0, 100000 + i * 1000, &stats);
    assert_int_equal(window_nbuckets(st), 64);
    assert_int_equal(stats.bucket_reclaim, 1002);
    assert_read(&f, st, 100000 + 999 * 1000, "64");
    state_free(&f, st);
    feature_release(&f);
}

/* Buckets are merged oldest epoch first, whatever order they were created in: min's
 * "first observed wins" across kinds shows it. */
static void test_merge_order(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"min\",\"params\":{\"field\":\"v\",\"window\":\"64s\"}}");
    void *st = state_new(&f);
    op_stats stats = { 0, 0, 0 };
    push(&f, st, bv_str("a", 1), 0, 5000, &stats);
    push(&f, st, bv_i64(7), 0, 3000, &stats);        /* older epoch, created later */
    push(&f, st, bv_i64(9), 0, 4000, &stats);
    assert_read(&f, st, 10000, "7");
    assert_read(&f, st, 3000 + 64000, "9");          /* epoch 3000 expired */
    assert_read(&f, st, 4000 + 64000, "\"a\"");
    state_free(&f, st);
    feature_release(&f);

    /* min/max proper across buckets */
    compile_ok(&f, "{\"op\":\"max\",\"params\":{\"field\":\"x\",\"window\":\"64s\"}}");
    st = state_new(&f);
    push(&f, st, bv_i64(5), 0, 1000, &stats);
    push(&f, st, bv_f64(7.5), 0, 2000, &stats);
    push(&f, st, bv_i64(6), 0, 3000, &stats);
    assert_read(&f, st, 3000, "7.5");
    assert_read(&f, st, 2000 + 64000, "6.0");
    state_free(&f, st);
    feature_release(&f);
}

/* Only events the op consumes open buckets; ratio consumes unmatched events too. */
static void test_bucket_creation(void **state) {
    (void)state;
    feature fc, fr, fs;
    compile_ok(&fc, "{\"op\":\"count\",\"params\":{\"where\":\"(k > 3)\",\"window\":\"1h\"}}");
    compile_ok(&fr, "{\"op\":\"ratio\",\"params\":{\"where\":\"(k > 3)\",\"window\":\"1h\"}}");
    compile_ok(&fs, "{\"op\":\"sum\",\"params\":{\"field\":\"x\",\"window\":\"1h\"}}");
    void *sc = state_new(&fc), *sr = state_new(&fr), *ss = state_new(&fs);
    op_stats stats = { 0, 0, 0 };
    push(&fc, sc, bv_null(), 1, 1000, &stats);
    push(&fr, sr, bv_null(), 1, 1000, &stats);
    push(&fs, ss, bv_null(), 1, 1000, &stats);
    assert_int_equal(window_nbuckets(sc), 0);
    assert_int_equal(window_nbuckets(sr), 1);
    assert_int_equal(window_nbuckets(ss), 0);
    assert_read(&fc, sc, 1000, "0");
    assert_read(&fr, sr, 1000, "0.0");
    assert_read(&fs, ss, 1000, "null");
    push(&fc, sc, bv_null(), 5, 1000, &stats);
    push(&fr, sr, bv_null(), 5, 1000, &stats);
    push(&fs, ss, bv_i64(3), 5, 1000, &stats);
    assert_read(&fc, sc, 1000, "1");
    assert_read(&fr, sr, 1000, "0.5");
    assert_read(&fs, ss, 1000, "3.0");
    state_free(&fc, sc);
    state_free(&fr, sr);
    state_free(&fs, ss);
    feature_release(&fc);
    feature_release(&fr);
    feature_release(&fs);
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Sketch kinds across buckets: exact unions while small, sketches past the thresholds. */
static void test_sketch_merges(void **state) {
    (void)state;
    op_stats stats = { 0, 0, 0 };
    feature f;

    /* n_unique: 40 buckets x 100 values from 0..2999 (exact per bucket, HLL merged) */
    compile_ok(&f, "{\"op\":\"n_unique\",\"params\":{\"field\":\"v\",\"window\":\"64s\"}}");
    void *st = state_new(&f);
    static bool seen[3000];
    memset(seen, 0, sizeof seen);
    uint64_t s = 7;
    size_t truth = 0, small_truth = 0;
    for (int64_t b = 0; b < 40; b++)
        for (int i = 0; i < 100; i++) {
            int64_t v = (int64_t)(rng_next(&s) % 3000);
            if (!seen[v]) { seen[v] = true; truth++; }
            push(&f, st, bv_i64(v), 0, b * 1000 + i, &stats);
            if (b == 0 && i == 99) small_truth = truth;
        }
    double est = read_num(&f, st, 39999);
    assert_true(fabs(est - (double)truth) / (double)truth < 0.03);
    /* first bucket alone: exact */
    char want[32];
    snprintf(want, sizeof want, "%zu", small_truth);
    assert_read(&f, st, 999, want);
    state_free(&f, st);
    feature_release(&f);

    /* quantile: 2 buckets of 100 stay exact (200 <= 256); 3 of 100 become a sketch */
    compile_ok(&f, "{\"op\":\"quantile\",\"params\":{\"field\":\"x\",\"q\":0.5,\"window\":\"64s\"}}");
    st = state_new(&f);
    for (int64_t b = 0; b < 3; b++)
        for (int i = 0; i < 100; i++) push(&f, st, bv_i64(b * 100 + i + 1), 0, b * 1000, &stats);
    /* q at 64000+999: only buckets 1000 and 2000 -> values 101..300, median 200.5 */
    assert_read(&f, st, 64999, "200.5");
    double med = read_num(&f, st, 2000);             /* 1..300: 150.5 exact, sketch within 1% */
    assert_true(fabs(med - 150.5) / 150.5 <= 0.02);
    state_free(&f, st);
    feature_release(&f);

    /* top_k: counts add across buckets; > 1024 distinct in the union -> hybrid merge */
    compile_ok(&f, "{\"op\":\"top_k\",\"params\":{\"field\":\"v\",\"k\":2,\"window\":\"64s\"}}");
    st = state_new(&f);
    for (int64_t b = 0; b < 4; b++) {
        for (int i = 0; i < 600; i++) push(&f, st, bv_i64(b * 1000 + i), 0, b * 1000, &stats);
        for (int i = 0; i < 50 + b; i++) push(&f, st, bv_str("hot", 3), 0, b * 1000, &stats);
        for (int i = 0; i < 30; i++) push(&f, st, bv_str("warm", 4), 0, b * 1000, &stats);
    }
    /* buckets 2000, 3000 only: 1200 + 2 distinct -> hybrid, still exact-ish counts */
    char *got = read_json(&f, st, 65500);
    json_t *j = json_loads(got, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_array_size(j), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "value")), "hot");
    assert_true(json_integer_value(json_object_get(json_array_get(j, 0), "count")) >= 105);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 1), "value")), "warm");
    json_decref(j);
    free(got);
    /* bucket 3000 alone: exact */
    assert_read(&f, st, 66999, "[{\"count\":53,\"value\":\"hot\"},{\"count\":30,\"value\":\"warm\"}]");
    state_free(&f, st);
    feature_release(&f);

    /* entropy: counts add */
    compile_ok(&f, "{\"op\":\"entropy\",\"params\":{\"field\":\"v\",\"window\":\"64s\"}}");
    st = state_new(&f);
    push(&f, st, bv_str("a", 1), 0, 0, &stats);
    push(&f, st, bv_str("b", 1), 0, 1000, &stats);
    push(&f, st, bv_str("a", 1), 0, 2000, &stats);
    push(&f, st, bv_str("b", 1), 0, 2000, &stats);
    assert_read(&f, st, 2000, "1.0");
    assert_read(&f, st, 64000, "0.9182958340544896"); /* b, a, b */
    assert_read(&f, st, 65500, "1.0");                /* a, b */
    assert_read(&f, st, 66000, "0.0");
    state_free(&f, st);
    feature_release(&f);

    /* var/std: Chan merge equals the pooled sample variance */
    compile_ok(&f, "{\"op\":\"var\",\"params\":{\"field\":\"x\",\"window\":\"64s\"}}");
    st = state_new(&f);
    double xs[] = { 1, 2, 3, 4, 10, 20 };
    for (int i = 0; i < 6; i++) push(&f, st, bv_f64(xs[i]), 0, (i / 2) * 1000, &stats);
    double mean = 40.0 / 6, ss = 0;
    for (int i = 0; i < 6; i++) ss += (xs[i] - mean) * (xs[i] - mean);
    assert_true(fabs(read_num(&f, st, 2000) - ss / 5) < 1e-9);
    state_free(&f, st);
    feature_release(&f);
}

/* A windowed state survives encode/decode with its epochs. */
static void test_window_roundtrip(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"mean\",\"params\":{\"field\":\"x\",\"window\":\"64s\"}}");
    void *st = state_new(&f);
    op_stats stats = { 0, 0, 0 };
    for (int64_t i = 0; i < 100; i++) push(&f, st, bv_i64(i), 0, i * 700 - 20000, &stats);
    bv_buf b;
    bv_buf_init(&b);
    feature_encode(&f, st, &b);
    void *st2 = state_new(&f);
    const uint8_t *p = (const uint8_t *)b.data;
    assert_int_equal(feature_decode(&f, st2, &p, p + b.len), 0);
    assert_int_equal(window_nbuckets(st2), window_nbuckets(st));
    for (int64_t q = -30000; q < 120000; q += 333) {
        char *a = read_json(&f, st, q), *c = read_json(&f, st2, q);
        assert_string_equal(a, c);
        free(a);
        free(c);
    }
    /* the decoded list keeps evicting correctly */
    push(&f, st2, bv_i64(1), 0, 500000, &stats);
    assert_int_equal(window_nbuckets(st2), 64);
    bv_buf_free(&b);
    state_free(&f, st);
    state_free(&f, st2);
    feature_release(&f);
}

/* The encoded state of f (its whole observable content). */
static bv_buf encoded(const feature *f, const void *st) {
    bv_buf b;
    bv_buf_init(&b);
    feature_encode(f, st, &b);
    return b;
}

/* feature_prefetch (the apply path's memory hint) must leave a state exactly as it was,
 * in every form a state passes through: empty, the inline bucket, a bucket list whose
 * latest bucket is (or is not) the event's, exact sets growing into hash tables and
 * sketches; for values of every kind, null and absent included. */
static void test_prefetch_changes_nothing(void **state) {
    (void)state;
    static const char *const specs[] = {
        "{\"op\":\"n_unique\",\"params\":{\"field\":\"v\",\"window\":\"64s\"}}",
        "{\"op\":\"n_unique\",\"params\":{\"field\":\"v\"}}",
        "{\"op\":\"top_k\",\"params\":{\"field\":\"v\",\"k\":3,\"window\":\"64s\"}}",
        "{\"op\":\"top_k\",\"params\":{\"field\":\"v\",\"k\":3}}",
        "{\"op\":\"entropy\",\"params\":{\"field\":\"v\",\"window\":\"64s\"}}",
        "{\"op\":\"quantile\",\"params\":{\"field\":\"x\",\"q\":0.9,\"window\":\"64s\"}}",
        "{\"op\":\"quantile\",\"params\":{\"field\":\"x\",\"q\":0.5}}",
        "{\"op\":\"bloom_member\",\"params\":{\"field\":\"v\"}}",
        "{\"op\":\"count\",\"params\":{\"window\":\"64s\"}}",
        "{\"op\":\"n_unique\",\"params\":{\"field\":\"v\",\"where\":\"k > 0\",\"window\":\"64s\"}}",
        /* kinds hinting their out-of-line arrays, with and without a field */
        "{\"op\":\"hour_of_day_histogram\",\"params\":{}}",
        "{\"op\":\"dow_hour_histogram\",\"params\":{}}",
        "{\"op\":\"seasonal_deviation\",\"params\":{\"field\":\"x\"}}",
        "{\"op\":\"burst_count\",\"params\":{\"window\":\"64s\",\"sub_window\":\"1s\"}}",
        "{\"op\":\"time_since_last_n\",\"params\":{\"n\":3}}",
        "{\"op\":\"outlier_count\",\"params\":{\"field\":\"x\",\"window\":\"64s\"}}",
        "{\"op\":\"distance_from_home\",\"params\":{\"lat\":\"x\",\"lon\":\"x\",\"samples\":4}}",
        "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"v\"}}",
        "{\"op\":\"first_n\",\"params\":{\"field\":\"v\",\"n\":3}}",
        "{\"op\":\"last_n\",\"params\":{\"field\":\"v\",\"n\":3}}",
        "{\"op\":\"lag\",\"params\":{\"field\":\"x\",\"n\":2}}",
        "{\"op\":\"most_recent_n\",\"params\":{\"field\":\"v\",\"n\":3}}",
        "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"x\",\"samples\":4}}",
    };
    op_stats stats = { 0, 0, 0 };
    char text[32];
    for (size_t si = 0; si < sizeof specs / sizeof specs[0]; si++) {
        feature f;
        compile_ok(&f, specs[si]);
        if (!f.where) assert_true(f.hinted);          /* every kind here has a hint to run */
        void *st = state_new(&f);
        uint64_t s = 11 + si;
        for (int64_t i = 0; i < 3000; i++) {
            /* mostly fresh values (sets grow past 1024), some repeats, every kind */
            int64_t r = (int64_t)(rng_next(&s) % 5000);
            bv_value v;
            switch (i % 5) {
            case 0: v = bv_str(text, (size_t)snprintf(text, sizeof text, "s%lld", (long long)r)); break;
            case 1: v = bv_f64((double)r / 8); break;
            case 2: v = bv_i64(i % 7 ? i : r); break;
            case 3: v = i % 2 ? bv_null() : bv_bool(r & 1); break;
            default: v = bv_i64(i); break;
            }
            /* the hint first, at this event's time and at a later (new bucket) one */
            int64_t t = i * 37;
            bv_field fields[3] = { { "v", 1, v }, { "x", 1, v }, { "k", 1, bv_i64(i % 3) } };
            bv_row row = { fields, 3, 0 };
            bv_row empty = { NULL, 0, 0 };
            bv_buf before = encoded(&f, st);
            size_t nb = f.window_ms ? window_nbuckets(st) : 0;
            feature_prefetch(&f, st, &row, t);
            feature_prefetch(&f, st, &row, t + 10000);
            feature_prefetch(&f, st, &empty, t);
            bv_buf after = encoded(&f, st);
            assert_int_equal(before.len, after.len);
            assert_memory_equal(before.data, after.data, before.len);
            if (f.window_ms) assert_int_equal(window_nbuckets(st), nb);
            bv_buf_free(&before);
            bv_buf_free(&after);
            push(&f, st, v, i % 3, t, &stats);
        }
        state_free(&f, st);
        feature_release(&f);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_epoch),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_merge_order),
        cmocka_unit_test(test_bucket_creation),
        cmocka_unit_test(test_sketch_merges),
        cmocka_unit_test(test_window_roundtrip),
        cmocka_unit_test(test_prefetch_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
