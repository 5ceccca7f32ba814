/*
 * test_ops_sparse.c - the compact state representations of the operators: the
 * sparse-then-dense cell array (ops/slots.h) and the kinds built on it
 * (dow_hour_histogram, hour_of_day_histogram, seasonal_deviation, burst_count), the sparse bloom filter, the
 * window's inline first bucket, the distinct set's forms (one hash inline, sorted array,
 * hash table, HLL) and the schema-position field lookup (short text inside op_val:
 * test_opval.c).
 *
 * Each representation is checked against a plain dense model kept by the test: the op's
 * snapshot encoding must be byte for byte the historic dense format the model writes
 * (so snapshots from before the change still load and new ones are unchanged), across
 * the sparse -> dense transition and at its exact boundary; and a state decoded from the
 * model's bytes must read, re-encode and keep updating exactly as the live one.
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

#include "codec.h"
#include "distinct.h"
#include "hll.h"
#include "feature.h"
#include "op.h"
#include "opval.h"
#include "slots.h"
#include "window.h"

#define PATH "p"
#define HOUR_MS 3600000LL
#define DAY_MS 86400000LL

static void mk_schema(bv_schema *s) {
    bv_schema_init(s);
    bv_schema_set(s, "s", WT_STR);
    bv_schema_set(s, "x", WT_F64);
    bv_schema_set(s, "k", WT_I64);
}

#include "feature_harness.h"

/* One event {s, x, k} at time t, fields in schema order. */
static void push(const feature *f, void *st, const char *s, double x, int64_t t) {
    bv_field fields[3] = {
        { "s", 1, bv_str(s, strlen(s)) },
        { "x", 1, bv_f64(x) },
        { "k", 1, bv_i64(1) },
    };
    bv_row row = { fields, 3, 0 };
    expr_arena arena;
    expr_arena_reset(&arena);
    feature_update(f, st, &row, t, &arena, NULL);
}

static void encode(const feature *f, const void *st, bv_buf *b) {
    bv_buf_init(b);
    feature_encode(f, st, b);
}

static void assert_bytes(const bv_buf *got, const bv_buf *want) {
    if (got->len != want->len || memcmp(got->data, want->data, got->len) != 0)
        fail_msg("encoding differs: %zu bytes, want %zu", got->len, want->len);
}

/* Decode `img` into a fresh state (must succeed and consume it all). */
static void *decode_new(const feature *f, const bv_buf *img) {
    void *st = state_new(f);
    const uint8_t *p = (const uint8_t *)img->data, *end = p + img->len;
    assert_int_equal(feature_decode(f, st, &p, end), 0);
    assert_ptr_equal(p, end);
    return st;
}

/* decode(encode(st)) encodes to the same bytes and reads the same at q. */
static void assert_roundtrip(const feature *f, const void *st, int64_t q) {
    bv_buf a, b;
    encode(f, st, &a);
    void *d = decode_new(f, &a);
    encode(f, d, &b);
    assert_bytes(&b, &a);
    char *r1 = read_json(f, st, q), *r2 = read_json(f, d, q);
    assert_string_equal(r1, r2);
    free(r1);
    free(r2);
    state_free(f, d);
    bv_buf_free(&a);
    bv_buf_free(&b);
}

/* ---------------------------------------------------------------------- slots */

static void check_slots_shape(uint32_t ncells, uint32_t vsize, uint32_t last_sparse) {
    slots_shape sh = { ncells, vsize };
    slots *s = NULL;
    assert_null(slots_get(s, &sh, 0));
    uint32_t pos = 0, key;
    assert_null(slots_next(s, &sh, &pos, &key));
    /* keys inserted in a scrambled order; values carry the key */
    for (uint32_t n = 0; n < ncells; n++) {
        uint32_t k = (n * 11 + 3) % ncells;  /* a permutation: 11 is prime to every ncells here */
        uint64_t *v = slots_put(&s, &sh, k);
        assert_non_null(v);
        for (uint32_t j = 0; j < vsize / 8; j++) assert_int_equal(v[j], 0);
        v[0] = k + 1;
        v[vsize / 8 - 1] += 1000;
        /* the boundary: sparse while it is smaller than the dense array */
        assert_int_equal(slots_is_dense(s), n + 1 > last_sparse);
        /* every key written so far reads back; others are absent (sparse) or zero */
        for (uint32_t m = 0; m < ncells; m++) {
            const uint64_t *g = slots_get(s, &sh, m);
            bool written = false;
            for (uint32_t i = 0; i <= n; i++) written |= (i * 11 + 3) % ncells == m;
            if (written) {
                assert_non_null(g);
                assert_int_equal(g[0], vsize == 8 ? m + 1001 : m + 1);
                assert_int_equal(g[vsize / 8 - 1], vsize == 8 ? m + 1001 : 1000);
            } else if (!slots_is_dense(s)) {
                assert_null(g);
            } else {
                assert_int_equal(g[0], 0);
            }
        }
        /* iteration is ascending by key */
        uint32_t seen = 0, prev = 0;
        pos = 0;
        while (slots_next(s, &sh, &pos, &key)) {
            if (seen) assert_true(key > prev);
            prev = key;
            seen++;
        }
        assert_int_equal(seen, slots_is_dense(s) ? ncells : n + 1);
        /* a second put of a present key returns the same value */
        assert_int_equal(*(uint64_t *)slots_put(&s, &sh, k), vsize == 8 ? k + 1001 : k + 1);
    }
    assert_null(slots_get(s, &sh, ncells));
    assert_null(slots_put(&s, &sh, ncells));
    slots_free(&s);
    assert_null(s);
}

static void test_slots(void **state) {
    (void)state;
    /* sparse bytes = 8 * cap * (8 + vsize) against ncells * vsize; cap doubles from 1 */
    check_slots_shape(168, 8, 64);     /* dow_hour_histogram: 64 x 16 < 1344 <= 128 x 16 */
    check_slots_shape(24, 24, 16);     /* seasonal_deviation: 16 x 32 < 576 <= 32 x 32 */
    check_slots_shape(64, 16, 32);     /* burst_count: 32 x 24 < 1024 <= 64 x 24 */
    check_slots_shape(24, 8, 8);       /* hour_of_day_histogram: 8 x 16 < 192 <= 16 x 16 */
    check_slots_shape(1, 8, 0);        /* one cell: dense at once (1 x 16 >= 8) */
}

/* ------------------------------------------------------------ dow_hour_histogram */

/* The arrival time of dow_hour cell c (Mon-00 = 0 ... Sun-23 = 167) in week w. */
static int64_t dow_time(unsigned c, int64_t w) {
    int64_t day = ((int64_t)c / 24 - 3 + 7) % 7;       /* 1970-01-01 was a Thursday */
    return (w * 7 + day) * DAY_MS + (int64_t)(c % 24) * HOUR_MS + 1234;
}

static void dow_model_encode(const uint64_t *c, bool present, bv_buf *b) {
    bv_buf_init(b);
    cod_put_u8(b, present);
    for (unsigned i = 0; present && i < 168; i++) cod_put_u64(b, c[i]);
}

static void test_dow_sparse(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"dow_hour_histogram\"}");
    void *st = state_new(&f);
    uint64_t model[168] = { 0 };
    bv_buf got, want;
    encode(&f, st, &got);
    dow_model_encode(model, false, &want);
    assert_bytes(&got, &want);
    bv_buf_free(&got);
    bv_buf_free(&want);
    for (unsigned n = 0; n < 168; n++) {
        unsigned c = (n * 11 + 5) % 168;
        for (unsigned rep = 0; rep <= n % 3; rep++) {
            push(&f, st, "a", 1, dow_time(c, rep));
            model[c]++;
        }
        if (n == 0 || n == 63 || n == 64 || n == 65 || n == 167) {     /* around the switch to dense */
            encode(&f, st, &got);
            dow_model_encode(model, true, &want);
            assert_bytes(&got, &want);
            /* the model's (historic, dense) bytes decode to a state that reads and
             * keeps counting the same */
            void *d = decode_new(&f, &want);
            assert_roundtrip(&f, d, 0);
            char *r1 = read_json(&f, st, 0), *r2 = read_json(&f, d, 0);
            assert_string_equal(r1, r2);
            free(r1);
            free(r2);
            push(&f, d, "a", 1, dow_time(c, 9));
            push(&f, st, "a", 1, dow_time(c, 9));
            model[c]++;
            bv_buf g2;
            encode(&f, d, &g2);
            bv_buf_free(&want);
            dow_model_encode(model, true, &want);
            assert_bytes(&g2, &want);
            bv_buf_free(&g2);
            state_free(&f, d);
            bv_buf_free(&got);
            bv_buf_free(&want);
        }
    }
    /* a read names every cell: Thu-00 is cell 3*24 */
    char *r = read_json(&f, st, 0);
    char key[32];
    snprintf(key, sizeof key, "\"Thu-00\":%llu", (unsigned long long)model[72]);
    assert_non_null(strstr(r, key));
    free(r);
    state_free(&f, st);

    /* a historic image that says present with every count zero stays present */
    uint64_t zero[168] = { 0 };
    dow_model_encode(zero, true, &want);
    void *d = decode_new(&f, &want);
    encode(&f, d, &got);
    assert_bytes(&got, &want);
    state_free(&f, d);
    bv_buf_free(&got);
    bv_buf_free(&want);
    feature_release(&f);
}

/* -------------------------------------------------------- hour_of_day_histogram */

static void test_hod_sparse(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"hour_of_day_histogram\"}");
    void *st = state_new(&f);
    uint64_t model[24] = { 0 };
    bv_buf got, want;
    for (int n = 0; n < 24; n++) {
        int h = (n * 7 + 2) % 24;
        for (int rep = 0; rep <= n % 2; rep++) {
            push(&f, st, "a", 0, (int64_t)rep * DAY_MS + h * HOUR_MS + 99);
            model[h]++;
        }
        if (n == 0 || n == 7 || n == 8 || n == 9 || n == 23) {     /* dense from the 9th hour */
            bv_buf_init(&want);
            for (int i = 0; i < 24; i++) cod_put_u64(&want, model[i]);
            encode(&f, st, &got);
            assert_bytes(&got, &want);
            void *d = decode_new(&f, &want);
            assert_roundtrip(&f, d, 0);
            char *r1 = read_json(&f, st, 0), *r2 = read_json(&f, d, 0);
            assert_string_equal(r1, r2);
            free(r1);
            free(r2);
            state_free(&f, d);
            bv_buf_free(&got);
            bv_buf_free(&want);
        }
    }
    char *r = read_json(&f, st, 0);
    char want_text[256], *p = want_text;
    p += sprintf(p, "[");
    for (int i = 0; i < 24; i++) p += sprintf(p, "%s%llu", i ? "," : "", (unsigned long long)model[i]);
    sprintf(p, "]");
    assert_string_equal(r, want_text);
    free(r);
    state_free(&f, st);
    /* the empty image (24 zeros) decodes to the empty state */
    bv_buf_init(&want);
    for (int i = 0; i < 24; i++) cod_put_u64(&want, 0);
    void *d = decode_new(&f, &want);
    assert_read(&f, d, 0, "[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]");
    state_free(&f, d);
    bv_buf_free(&want);
    feature_release(&f);
}

/* ----------------------------------------------------------- seasonal_deviation */

typedef struct sd_model { uint64_t n[24]; double sum[24], sumsq[24], last_v; int last_h; bool has; } sd_model;

static void sd_model_encode(const sd_model *m, bv_buf *b) {
    bv_buf_init(b);
    cod_put_u8(b, m->has);
    if (!m->has) return;
    cod_put_f64(b, m->last_v);
    cod_put_u8(b, (uint8_t)m->last_h);
    for (int i = 0; i < 24; i++) {
        cod_put_u64(b, m->n[i]);
        cod_put_f64(b, m->sum[i]);
        cod_put_f64(b, m->sumsq[i]);
    }
}

static void test_seasonal_sparse(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"seasonal_deviation\",\"params\":{\"field\":\"x\"}}");
    void *st = state_new(&f);
    sd_model m;
    memset(&m, 0, sizeof m);
    bv_buf got, want;
    for (int n = 0; n < 24; n++) {
        int h = (n * 5 + 7) % 24;
        for (int rep = 0; rep < 3; rep++) {
            double v = n * 10.0 + rep * rep + 0.25;
            push(&f, st, "a", v, (int64_t)rep * DAY_MS + h * HOUR_MS + 5);
            m.n[h]++;
            m.sum[h] += v;
            m.sumsq[h] += v * v;
            m.last_v = v;
            m.last_h = h;
            m.has = true;
        }
        if (n == 0 || n == 15 || n == 16 || n == 17 || n == 23) {      /* dense from the 17th hour */
            encode(&f, st, &got);
            sd_model_encode(&m, &want);
            assert_bytes(&got, &want);
            void *d = decode_new(&f, &want);
            char *r1 = read_json(&f, st, 0), *r2 = read_json(&f, d, 0);
            assert_string_equal(r1, r2);
            assert_string_not_equal(r1, "null");
            free(r1);
            free(r2);
            assert_roundtrip(&f, d, 0);
            state_free(&f, d);
            bv_buf_free(&got);
            bv_buf_free(&want);
        }
    }
    state_free(&f, st);
    /* an image whose last hour has no values is refused, sparse or not */
    m.n[m.last_h] = 0;
    m.sum[m.last_h] = m.sumsq[m.last_h] = 0;
    sd_model_encode(&m, &want);
    void *d = state_new(&f);
    const uint8_t *p = (const uint8_t *)want.data;
    assert_int_equal(feature_decode(&f, d, &p, p + want.len), -1);
    state_free(&f, d);
    bv_buf_free(&want);
    feature_release(&f);
}

/* ------------------------------------------------------------------ burst_count */

typedef struct burst_model { int64_t max, epoch[64], count[64]; } burst_model;

static void burst_model_encode(const burst_model *m, bv_buf *b) {
    bv_buf_init(b);
    uint8_t used = 0;
    for (int i = 0; i < 64; i++) used += m->count[i] > 0;
    cod_put_i64(b, m->max);
    cod_put_u8(b, used);
    for (int i = 0; i < 64; i++)
        if (m->count[i]) {
            cod_put_u8(b, (uint8_t)i);
            cod_put_i64(b, m->epoch[i]);
            cod_put_i64(b, m->count[i]);
        }
}

static void test_burst_sparse(void **state) {
    (void)state;
    feature f;
    const int64_t S = 60000;          /* 1m sub-windows */
    compile_ok(&f, "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1m\",\"window\":\"2h\"}}");
    void *st = state_new(&f);
    burst_model m;
    memset(&m, 0, sizeof m);
    bv_buf got, want;
    /* sub-windows 0..79: the ring fills (dense from the 33rd used slot), then recycles */
    for (int64_t sw = 0; sw < 80; sw++) {
        int reps = 1 + (int)(sw % 4);
        for (int r = 0; r < reps; r++) {
            int64_t t = sw * S + r * 1000;
            push(&f, st, "a", 1, t);
            int i = (int)(sw % 64);
            if (m.count[i] == 0 || m.epoch[i] != sw * S) {
                m.epoch[i] = sw * S;
                m.count[i] = 0;
            }
            m.count[i]++;
            if (m.count[i] > m.max) m.max = m.count[i];
        }
        if (sw == 0 || sw == 31 || sw == 32 || sw == 33 || sw == 63 || sw == 64 || sw == 79) {
            encode(&f, st, &got);
            burst_model_encode(&m, &want);
            assert_bytes(&got, &want);
            void *d = decode_new(&f, &want);
            for (int64_t q = 0; q <= 80 * S; q += 7 * S) {
                char *r1 = read_json(&f, st, q), *r2 = read_json(&f, d, q);
                assert_string_equal(r1, r2);
                free(r1);
                free(r2);
            }
            assert_roundtrip(&f, d, sw * S);
            state_free(&f, d);
            bv_buf_free(&got);
            bv_buf_free(&want);
        }
    }
    assert_read(&f, st, 79 * S, "4");
    state_free(&f, st);

    /* a duplicate slot in an image is refused in both forms */
    for (int used = 2; used <= 40; used += 38) {
        bv_buf b;
        bv_buf_init(&b);
        cod_put_i64(&b, 5);
        cod_put_u8(&b, (uint8_t)used);
        for (int i = 0; i < used - 1; i++) {
            cod_put_u8(&b, (uint8_t)i);
            cod_put_i64(&b, i * S);
            cod_put_i64(&b, 1);
        }
        cod_put_u8(&b, 0);                /* slot 0 again */
        cod_put_i64(&b, 64 * S);
        cod_put_i64(&b, 1);
        void *d = state_new(&f);
        const uint8_t *p = (const uint8_t *)b.data;
        assert_int_equal(feature_decode(&f, d, &p, p + b.len), -1);
        state_free(&f, d);
        bv_buf_free(&b);
    }
    feature_release(&f);
}

/* ----------------------------------------------------------------- bloom_member */

/* The filter as op_bloom_member.c's header specifies it, over 154 words (defaults). */
typedef struct bloom_model { uint64_t w[154], inserts; bool seen; } bloom_model;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void bloom_model_add(bloom_model *m, const char *s) {
    bv_value v = bv_str(s, strlen(s));
    uint64_t h1 = opval_hash(&v), h2 = mix64(h1) | 1, bits = 154 * 64;
    bool present = true;
    for (uint64_t i = 0; i < 7; i++) {
        uint64_t bit = (h1 + i * h2) % bits;
        if (!(m->w[bit >> 6] & (1ull << (bit & 63)))) present = false;
        m->w[bit >> 6] |= 1ull << (bit & 63);
    }
    m->seen = present;
    m->inserts++;
}

static void bloom_model_encode(const bloom_model *m, bv_buf *b) {
    bv_buf_init(b);
    cod_put_u64(b, m->inserts);
    cod_put_u8(b, m->seen);
    cod_put_u32(b, m->inserts ? 154 : 0);
    for (int i = 0; m->inserts && i < 154; i++) cod_put_u64(b, m->w[i]);
}

static unsigned model_bits(const bloom_model *m) {
    unsigned n = 0;
    for (int i = 0; i < 154; i++) n += (unsigned)__builtin_popcountll(m->w[i]);
    return n;
}

static void test_bloom_sparse(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"bloom_member\",\"params\":{\"field\":\"s\"}}");
    void *st = state_new(&f);
    bloom_model m;
    memset(&m, 0, sizeof m);
    bv_buf got, want;
    char val[32];
    bool crossed = false;
    /* 9856 bits, 7 probes: the sparse form holds up to 256 set bits (8 + 256 x 4 bytes <
     * 1,232), so the filter turns dense around the 37th distinct value; 400 values
     * (each twice) take it well past that */
    for (int n = 0; n < 400; n++) {
        snprintf(val, sizeof val, "v%d", n);
        for (int rep = 0; rep < 2; rep++) {
            unsigned before = model_bits(&m);
            push(&f, st, val, 0, n);
            bloom_model_add(&m, val);
            assert_read(&f, st, 0, m.seen ? "true" : "false");
            if (rep == 1) assert_true(m.seen);
            bool at_switch = before <= 256 && model_bits(&m) > 256;
            crossed |= at_switch;
            if (n < 3 || at_switch || n % 97 == 0 || n == 399) {
                encode(&f, st, &got);
                bloom_model_encode(&m, &want);
                assert_bytes(&got, &want);
                /* the historic image decodes (sparse while few bits are set) and goes on
                 * answering exactly like the model */
                void *d = decode_new(&f, &want);
                assert_roundtrip(&f, d, 0);
                bloom_model dm = m;
                for (int k = 0; k < 40; k++) {
                    snprintf(val, sizeof val, "%s%d", k % 2 ? "v" : "w", k * 13);
                    push(&f, d, val, 0, n);
                    bloom_model_add(&dm, val);
                    assert_read(&f, d, 0, dm.seen ? "true" : "false");
                }
                bv_buf g2, w2;
                encode(&f, d, &g2);
                bloom_model_encode(&dm, &w2);
                assert_bytes(&g2, &w2);
                bv_buf_free(&g2);
                bv_buf_free(&w2);
                state_free(&f, d);
                bv_buf_free(&got);
                bv_buf_free(&want);
                snprintf(val, sizeof val, "v%d", n);
            }
        }
    }
    assert_true(crossed);
    state_free(&f, st);
    feature_release(&f);
}

/* -------------------------------------------------------- window, inline bucket 0 */

static void test_window_inline_bucket(void **state) {
    (void)state;
    feature f;
    /* 64s window: 1 s buckets */
    compile_ok(&f, "{\"op\":\"sum\",\"params\":{\"field\":\"x\",\"window\":\"64s\"}}");
    assert_int_equal(f.state_size, window_state_size(f.vt));
    void *st = state_new(&f);
    assert_int_equal(window_nbuckets(st), 0);
    assert_roundtrip(&f, st, 0);
    push(&f, st, "a", 1, 500);
    assert_int_equal(window_nbuckets(st), 1);          /* inline, nothing allocated */
    assert_read(&f, st, 500, "1.0");
    assert_roundtrip(&f, st, 500);
    push(&f, st, "a", 2, 700);                          /* same bucket */
    assert_int_equal(window_nbuckets(st), 1);
    push(&f, st, "a", 4, 1500);                         /* bucket 1: the list begins */
    assert_int_equal(window_nbuckets(st), 2);
    assert_read(&f, st, 1500, "7.0");
    assert_read(&f, st, 64000, "4.0");                  /* the inline bucket expired */
    assert_roundtrip(&f, st, 1500);
    /* back to the inline bucket's epoch after another one was used */
    push(&f, st, "a", 8, 900);
    assert_read(&f, st, 1500, "15.0");
    /* 70 more buckets: the 65th epoch recycles the smallest, the inline bucket first */
    double total = 15;
    for (int64_t b = 2; b < 72; b++) {
        push(&f, st, "a", 16, b * 1000);
        total += 16;
        if (b == 63) assert_int_equal(window_nbuckets(st), 64);
        if (b == 64) {
            /* epoch 0 (inline) was recycled: 1 + 2 + 8 left the window's state */
            assert_int_equal(window_nbuckets(st), 64);
            assert_read(&f, st, 64000, "1012.0");       /* buckets 1..63 and 64: 4 + 62*16 + 16 */
        }
        assert_roundtrip(&f, st, b * 1000);
    }
    (void)total;
    /* the encoding is the historic one: u8 n, then (i64 epoch, inner) in bucket order */
    bv_buf img;
    encode(&f, st, &img);
    assert_int_equal((uint8_t)img.data[0], 64);
    const uint8_t *p = (const uint8_t *)img.data + 1;
    int64_t e0;
    cod_get_i64(&p, p + 8, &e0);
    assert_int_equal(e0, 64000);                        /* bucket 0 now holds epoch 64 s */
    bv_buf_free(&img);
    state_free(&f, st);
    feature_release(&f);

    /* a kind with a sketch inner state (n_unique) inline: decode, read, destroy clean */
    compile_ok(&f, "{\"op\":\"n_unique\",\"params\":{\"field\":\"s\",\"window\":\"1h\"}}");
    st = state_new(&f);
    push(&f, st, "a", 0, 10);
    push(&f, st, "b", 0, 20);
    assert_read(&f, st, 30, "2");
    assert_roundtrip(&f, st, 30);
    push(&f, st, "c", 0, 60000);                        /* the next 56.25 s bucket */
    assert_read(&f, st, 60000, "3");
    assert_roundtrip(&f, st, 60000);
    state_free(&f, st);
    feature_release(&f);
}

/* ------------------------------------------------------------ distinct forms */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The historic encoding of a set given as n ascending hashes (HLL past 1024). */
static void distinct_model_encode(const uint64_t *a, uint32_t n, bv_buf *b) {
    bv_buf_init(b);
    if (n > DISTINCT_EXACT_MAX) {
        uint8_t *reg = calloc(HLL_M, 1);
        for (uint32_t i = 0; i < n; i++) hll_add(reg, a[i]);
        cod_put_u8(b, 1);
        bv_buf_put(b, reg, HLL_M);
        free(reg);
        return;
    }
    cod_put_u8(b, 0);
    cod_put_u32(b, n);
    for (uint32_t i = 0; i < n; i++) cod_put_u64(b, a[i]);
}

static void assert_distinct_is(const distinct *d, const uint64_t *model, uint32_t n) {
    bv_buf got, want;
    bv_buf_init(&got);
    distinct_encode(&got, d);
    distinct_model_encode(model, n, &want);
    assert_bytes(&got, &want);
    if (n <= DISTINCT_EXACT_MAX) assert_int_equal(distinct_count(d), n);
    /* and the image decodes to a set that encodes the same */
    distinct e;
    memset(&e, 0, sizeof e);
    const uint8_t *p = (const uint8_t *)want.data;
    assert_int_equal(distinct_decode(&p, p + want.len, &e), 0);
    bv_buf again;
    bv_buf_init(&again);
    distinct_encode(&again, &e);
    assert_bytes(&again, &want);
    distinct_free(&e);
    bv_buf_free(&got);
    bv_buf_free(&want);
    bv_buf_free(&again);
}

/* Add to a sorted model (no duplicates); returns the new size. */
static uint32_t model_add(uint64_t *a, uint32_t n, uint64_t h) {
    for (uint32_t i = 0; i < n; i++)
        if (a[i] == h) return n;
    a[n++] = h;
    qsort(a, n, sizeof *a, cmp_u64);
    return n;
}

static uint64_t draw(uint64_t *x) {
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x ^ (*x >> 29);
}

static void test_distinct_forms(void **state) {
    (void)state;
    static uint64_t model[1100];
    distinct d;
    memset(&d, 0, sizeof d);
    uint32_t n = 0;
    uint64_t x = 7;
    assert_distinct_is(&d, model, 0);
    /* 0 and UINT64_MAX among the hashes (0 is the table's free mark); repeats */
    for (uint32_t k = 0; n < DISTINCT_EXACT_MAX; k++) {
        uint64_t h = k == 3 ? 0 : k == 5 ? UINT64_MAX : k % 4 == 1 && n ? model[draw(&x) % n] : draw(&x);
        distinct_add(&d, h);
        n = model_add(model, n, h);
        assert_int_equal(distinct_count(&d), n);
        if (n <= 3 || (n >= 31 && n <= 34) || n == 48 || n == 49 || n == 97 || n == 768 || n == 769 ||
            n == DISTINCT_EXACT_MAX)
            assert_distinct_is(&d, model, n);
    }
    /* a repeat at 1024 changes nothing; a new hash folds into HLL */
    distinct_add(&d, 0);
    assert_distinct_is(&d, model, n);
    uint64_t h = draw(&x);
    distinct_add(&d, h);
    n = model_add(model, n, h);
    assert_int_equal(d.n, DISTINCT_HLL);
    assert_distinct_is(&d, model, n);
    distinct_free(&d);

    /* merges across the forms: every pair of sizes, union checked against the model */
    static const uint32_t sizes[] = { 0, 1, 2, 32, 33, 100, 700 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++) {
            static uint64_t a[800], b[800], u[1600];
            distinct da, db;
            memset(&da, 0, sizeof da);
            memset(&db, 0, sizeof db);
            uint32_t na = 0, nb = 0, nu = 0;
            while (na < sizes[i]) {
                uint64_t v = draw(&x) % 2000;       /* overlapping ranges */
                distinct_add(&da, v);
                na = model_add(a, na, v);
            }
            while (nb < sizes[j]) {
                uint64_t v = draw(&x) % 2000;
                distinct_add(&db, v);
                nb = model_add(b, nb, v);
            }
            for (uint32_t k = 0; k < na; k++) nu = model_add(u, nu, a[k]);
            for (uint32_t k = 0; k < nb; k++) nu = model_add(u, nu, b[k]);
            distinct_merge(&da, &db);
            assert_distinct_is(&da, u, nu);
            assert_distinct_is(&db, b, nb);             /* the source is untouched */
            distinct_free(&da);
            distinct_free(&db);
        }
    /* a decoded image is refused when not ascending, in every size class */
    for (uint32_t m = 2; m <= 64; m *= 2) {
        bv_buf b;
        bv_buf_init(&b);
        cod_put_u8(&b, 0);
        cod_put_u32(&b, m);
        for (uint32_t k = 0; k < m; k++) cod_put_u64(&b, k == m - 1 ? 1 : 10 + k);
        distinct e;
        memset(&e, 0, sizeof e);
        const uint8_t *p = (const uint8_t *)b.data;
        assert_int_equal(distinct_decode(&p, p + b.len, &e), -1);
        distinct_free(&e);
        bv_buf_free(&b);
    }
}

/* ----------------------------------------------------------- bv_row_field_at */

static void test_row_field(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"last\",\"params\":{\"field\":\"x\"}}");
    assert_int_equal(f.field_pos, 1);
    assert_int_equal(f.field_len, 1);
    bv_field in_order[3] = { { "s", 1, bv_str("a", 1) }, { "x", 1, bv_f64(1.5) }, { "k", 1, bv_i64(3) } };
    bv_field shuffled[3] = { { "x", 1, bv_f64(2.5) }, { "k", 1, bv_i64(3) }, { "s", 1, bv_str("a", 1) } };
    bv_field short_row[1] = { { "x", 1, bv_f64(3.5) } };
    bv_field absent[2] = { { "s", 1, bv_str("a", 1) }, { "xx", 2, bv_f64(9) } };
    bv_row r1 = { in_order, 3, 0 }, r2 = { shuffled, 3, 0 }, r3 = { short_row, 1, 0 }, r4 = { absent, 2, 0 };
    assert_true(bv_row_field_at(&r1, f.field, f.field_len, f.field_pos)->u.f == 1.5);
    assert_true(bv_row_field_at(&r2, f.field, f.field_len, f.field_pos)->u.f == 2.5);
    assert_true(bv_row_field_at(&r3, f.field, f.field_len, f.field_pos)->u.f == 3.5);
    assert_null(bv_row_field_at(&r4, f.field, f.field_len, f.field_pos));
    assert_null(bv_row_field_at(&r1, "y", 1, -1));
    /* through the op: whatever the order, the value is the one named x */
    void *st = state_new(&f);
    expr_arena arena;
    expr_arena_reset(&arena);
    feature_update(&f, st, &r2, 1, &arena, NULL);
    assert_read(&f, st, 1, "2.5");
    feature_update(&f, st, &r4, 2, &arena, NULL);       /* no x: unchanged */
    assert_read(&f, st, 2, "2.5");
    state_free(&f, st);
    feature_release(&f);

    /* geo kinds look up their two fields the same way */
    compile_ok(&f, "{\"op\":\"geo_distance\",\"params\":{\"lat\":\"x\",\"lon\":\"k\"}}");
    assert_int_equal(f.p.lat_pos, 1);
    assert_int_equal(f.p.lon_pos, 2);
    feature_release(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_dow_sparse),
        cmocka_unit_test(test_hod_sparse),
        cmocka_unit_test(test_seasonal_sparse),
        cmocka_unit_test(test_burst_sparse),
        cmocka_unit_test(test_bloom_sparse),
        cmocka_unit_test(test_window_inline_bucket),
        cmocka_unit_test(test_distinct_forms),
        cmocka_unit_test(test_row_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
