/*
 * test_ops_state.c - decoded operator state at the edges of its integer ranges.
 *
 * A snapshot's body is protected by a CRC, not by a signature: a crafted file can carry
 * any state bytes, so every state a decoder accepts must be safe to read, update, merge
 * (windowed reads merge buckets) and encode again. For every implemented kind, lifetime
 * and windowed, a real state is encoded after a few events; then, at every byte offset
 * of that encoding, an extreme 64-bit value (INT64_MAX, INT64_MIN, -1, 2^62) is stamped
 * in; whatever still decodes is read at extreme query times, updated and re-encoded.
 * The test build aborts on the first UBSan report, so a signed overflow on a count or a
 * timestamp fails this test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/feature.h"
#include "ops/op.h"

#define PATH "p"
#define MAX_FEATURES 160

static void mk_schema(bv_schema *s) {
    bv_schema_init(s);
    bv_schema_set(s, "v", WT_JSON);
    bv_schema_set(s, "x", WT_F64);
    bv_schema_set(s, "i", WT_I64);
    bv_schema_set(s, "k", WT_I64);
}

#include "feature_harness.h"

static const int64_t QUERY_TIMES[] = { 0, 1, 60000, 3600000, INT64_MAX, INT64_MIN, -5 };
static const uint64_t STAMPS[] = { (uint64_t)INT64_MAX, (uint64_t)INT64_MIN, UINT64_MAX, UINT64_C(1) << 62 };

static size_t compile_all(feature *fs) {
    size_t n = 0;
    const struct op_vtable *vt;
    for (size_t i = 0; (vt = op_kind_at(i)) != NULL; i++) {
        if (!op_implemented(vt)) continue;
        for (int windowed = 0; windowed < 2; windowed++) {
            const char *win = (vt->flags & OPF_WINDOW_PARAM) ? "1h" : windowed ? "1m" : NULL;
            if (windowed && !(vt->flags & OPF_WINDOWABLE)) continue;
            char spec[512];
            snprintf(spec, sizeof spec,
                     "{\"op\":\"%s\",\"params\":{\"field\":\"x\",\"n\":3,\"half_life\":\"1h\",\"sub_window\":\"1m\","
                     "\"buckets\":[1,2.5],\"samples\":4,\"lat\":\"x\",\"lon\":\"i\"%s%s%s}}",
                     vt->name, win ? ",\"window\":\"" : "", win ? win : "", win ? "\"" : "");
            assert_true(n < MAX_FEATURES);
            compile_ok(&fs[n++], spec);
        }
    }
    return n;
}

static void update_some(const feature *f, void *st, int64_t t0) {
    for (int i = 0; i < 4; i++) {
        bv_field fields[4] = {
            { "v", 1, bv_i64(i) }, { "x", 1, bv_f64(1.5 * i) }, { "i", 1, bv_i64(i % 2) }, { "k", 1, bv_i64(i) },
        };
        bv_row row = { fields, 4, 0 };
        expr_arena arena;
        expr_arena_reset(&arena);
        op_stats stats = { 0, 0, 0 };
        int64_t t = t0 > INT64_MAX - 200000 ? t0 : t0 + i * 50000;
        feature_update(f, st, &row, t, &arena, &stats);
    }
}

static void exercise(const feature *f, void *st) {
    for (size_t i = 0; i < sizeof QUERY_TIMES / sizeof QUERY_TIMES[0]; i++) free(read_json(f, st, QUERY_TIMES[i]));
    update_some(f, st, 1000);
    update_some(f, st, INT64_MAX - 10);
    for (size_t i = 0; i < sizeof QUERY_TIMES / sizeof QUERY_TIMES[0]; i++) free(read_json(f, st, QUERY_TIMES[i]));
    bv_buf b;
    bv_buf_init(&b);
    feature_encode(f, st, &b);
    bv_buf_free(&b);
}

static void test_stamped_states(void **state) {
    (void)state;
    static feature fs[MAX_FEATURES];
    size_t n = compile_all(fs);
    size_t decoded = 0;
    for (size_t k = 0; k < n; k++) {
        const feature *f = &fs[k];
        void *st = state_new(f);
        update_some(f, st, 1000);
        bv_buf enc;
        bv_buf_init(&enc);
        feature_encode(f, st, &enc);
        state_free(f, st);
        for (size_t off = 0; off + 8 <= enc.len; off++) {
            for (size_t s = 0; s < sizeof STAMPS / sizeof STAMPS[0]; s++) {
                uint8_t *buf = malloc(enc.len);
                assert_non_null(buf);
                memcpy(buf, enc.data, enc.len);
                for (int i = 0; i < 8; i++) buf[off + (size_t)i] = (uint8_t)(STAMPS[s] >> (8 * i));
                void *t = state_new(f);
                const uint8_t *p = buf;
                if (feature_decode(f, t, &p, buf + enc.len) == 0) {
                    decoded++;
                    exercise(f, t);
                }
                state_free(f, t);
                free(buf);
            }
        }
        bv_buf_free(&enc);
        feature_release(&fs[k]);
    }
    assert_true(decoded > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stamped_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
