/*
 * test_sketch.c - sketch internals and their accuracy promises
 * over seeded random streams: HLL++ / distinct,
 * UDDSketch / quantile store, Count-Min + heap / top_k, the value map; their prefetch
 * hints leave every form unchanged.
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

#include "opval.h"
#include "cms.h"
#include "distinct.h"
#include "hll.h"
#include "quantile.h"
#include "topk.h"
#include "udd.h"
#include "valmap.h"

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

static double rng_normal(uint64_t *s) {
    double u1 = rng_unit(s), u2 = rng_unit(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static uint64_t hash_i64(int64_t i) {
    bv_value v = bv_i64(i);
    return opval_hash(&v);
}

/* ------------------------------------------------------------ distinct / HLL */

static void test_hll_accuracy(void **state) {
    (void)state;
    uint8_t *reg = calloc(HLL_M, 1);
    assert_int_equal(hll_estimate(reg), 0);
    static const uint64_t checkpoints[] = { 1, 10, 100, 1000, 3000, 5000, 10000, 20000, 50000, 200000 };
    uint64_t n = 0;
    for (size_t c = 0; c < sizeof checkpoints / sizeof checkpoints[0]; c++) {
        while (n < checkpoints[c]) hll_add(reg, hash_i64((int64_t)n++));
        double est = (double)hll_estimate(reg), err = fabs(est - (double)n) / (double)n;
        if (err > 0.03) fail_msg("n=%llu est=%.0f err=%.4f", (unsigned long long)n, est, err);
        /* re-adding the same values changes nothing */
        hll_add(reg, hash_i64(0));
        assert_true((double)hll_estimate(reg) == est);
    }
    for (uint32_t i = 0; i < HLL_M; i++) assert_true(reg[i] <= HLL_MAX_RANK);
    free(reg);
}

static void test_n_unique_million(void **state) {
    (void)state;
    distinct d;
    memset(&d, 0, sizeof d);
    uint64_t s = 0x1234567;
    const uint64_t N = 1000000;
    for (uint64_t i = 0; i < N; i++) {
        distinct_add(&d, hash_i64((int64_t)(i * 2654435761u)));
        if (i % 10 == 0) distinct_add(&d, hash_i64((int64_t)((rng_next(&s) % (i + 1)) * 2654435761u)));  /* repeats */
    }
    double est = (double)distinct_count(&d);
    double err = fabs(est - (double)N) / (double)N;
    if (err > 0.03) fail_msg("1M distinct: est %.0f err %.4f", est, err);
    distinct_free(&d);

    /* typed strings too */
    memset(&d, 0, sizeof d);
    char buf[32];
    for (int i = 0; i < 300000; i++) {
        int n = snprintf(buf, sizeof buf, "user-%d", i);
        bv_value v = bv_str(buf, (size_t)n);
        distinct_add(&d, opval_hash(&v));
    }
    est = (double)distinct_count(&d);
    assert_true(fabs(est - 300000) / 300000 <= 0.03);
    distinct_free(&d);
}

static void test_distinct_exact_phase(void **state) {
    (void)state;
    distinct d;
    memset(&d, 0, sizeof d);
    assert_int_equal(distinct_count(&d), 0);
    for (int rep = 0; rep < 3; rep++)
        for (int64_t i = 0; i < 1024; i++) distinct_add(&d, hash_i64(i));
    assert_int_equal(distinct_count(&d), 1024);      /* exact up to 1024 */
    assert_int_equal(d.n, 1024);
    distinct_add(&d, hash_i64(5000));
    assert_int_equal(d.n, DISTINCT_HLL);              /* the 1025th switches to HLL */
    double est = (double)distinct_count(&d);
    assert_true(fabs(est - 1025) / 1025 < 0.03);
    distinct_free(&d);

    /* merges: exact union, exact+HLL, HLL+HLL */
    distinct a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    for (int64_t i = 0; i < 600; i++) distinct_add(&a, hash_i64(i));
    for (int64_t i = 300; i < 900; i++) distinct_add(&b, hash_i64(i));
    distinct_merge(&a, &b);
    assert_int_equal(distinct_count(&a), 900);
    assert_int_not_equal(a.n, DISTINCT_HLL);
    /* two exact sets whose union passes 1024 become HLL (memory stays bounded) */
    distinct x, y;
    memset(&x, 0, sizeof x);
    memset(&y, 0, sizeof y);
    for (int64_t i = 0; i < 600; i++) distinct_add(&x, hash_i64(i));
    for (int64_t i = 600; i < 1200; i++) distinct_add(&y, hash_i64(i));
    distinct_merge(&x, &y);
    assert_int_equal(x.n, DISTINCT_HLL);
    assert_true(fabs((double)distinct_count(&x) - 1200) / 1200 < 0.03);
    distinct_free(&x);
    distinct_free(&y);
    for (int64_t i = 900; i < 1500; i++) distinct_add(&b, hash_i64(i));
    distinct_merge(&a, &b);                           /* union 1500 > 1024 */
    assert_int_equal(a.n, DISTINCT_HLL);
    assert_true(fabs((double)distinct_count(&a) - 1500) / 1500 < 0.03);
    distinct c;
    memset(&c, 0, sizeof c);
    for (int64_t i = 0; i < 20000; i++) distinct_add(&c, hash_i64(i + 100000));
    distinct_merge(&a, &c);
    assert_true(fabs((double)distinct_count(&a) - 21500) / 21500 < 0.03);
    distinct e;
    memset(&e, 0, sizeof e);
    distinct_merge(&e, &c);                           /* empty + HLL */
    assert_int_equal(distinct_count(&e), distinct_count(&c));
    distinct_merge(&e, &b);                           /* HLL + exact */
    distinct_free(&a);
    distinct_free(&b);
    distinct_free(&c);
    distinct_free(&e);
}

/* ------------------------------------------------------------ quantile */

static int dcmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double exact_q(const double *sorted, size_t n, double q) {
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)floor(pos), hi = (size_t)ceil(pos);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - (double)lo);
}

static void test_quantile_lognormal(void **state) {
    (void)state;
    const size_t N = 100000;
    double *x = malloc(N * sizeof *x);
    for (uint64_t seed = 1; seed <= 3; seed++) {
        uint64_t s = seed * 0x9E3779B97F4A7C15ull;
        qstore qs;
        memset(&qs, 0, sizeof qs);
        for (size_t i = 0; i < N; i++) {
            x[i] = exp(3.0 + 1.2 * rng_normal(&s));
            qs_add(&qs, x[i]);
        }
        assert_int_equal(qs.n, QS_SKETCH);
        qsort(x, N, sizeof *x, dcmp);
        static const double qv[] = { 0.5, 0.95, 0.99, 0.9, 0.25, 0.01 };
        for (size_t k = 0; k < sizeof qv / sizeof qv[0]; k++) {
            double got, want = exact_q(x, N, qv[k]);
            assert_true(qs_quantile(&qs, qv[k], &got));
            double err = fabs(got - want) / want;
            if (err > 0.01) fail_msg("seed %llu q=%g got %g want %g err %.4f", (unsigned long long)seed, qv[k], got, want, err);
        }
        assert_true(udd_alpha(qs.p) == 0.01);        /* no collapse on this range */
        qs_free(&qs);
    }
    free(x);
}

static void test_quantile_exact_phase(void **state) {
    (void)state;
    qstore qs;
    memset(&qs, 0, sizeof qs);
    double out;
    assert_false(qs_quantile(&qs, 0.5, &out));
    double x[256];
    uint64_t s = 99;
    for (int i = 0; i < 256; i++) {
        x[i] = (double)(int64_t)(rng_next(&s) % 2001) - 1000.0;
        qs_add(&qs, x[i]);
    }
    qs_add(&qs, NAN);                                 /* ignored */
    qs_add(&qs, INFINITY);
    assert_int_equal(qs.n, 256);
    qsort(x, 256, sizeof *x, dcmp);
    for (double q = 0.01; q < 1; q += 0.07) {
        assert_true(qs_quantile(&qs, q, &out));
        assert_true(out == exact_q(x, 256, q));
    }
    qs_add(&qs, 5.0);                                 /* 257th -> sketch */
    assert_int_equal(qs.n, QS_SKETCH);
    qs_free(&qs);

    /* single value, negative values, zeros */
    memset(&qs, 0, sizeof qs);
    qs_add(&qs, -7.5);
    assert_true(qs_quantile(&qs, 0.99, &out) && out == -7.5);
    qs_free(&qs);
}

/* Values over 600 orders of magnitude force collapses; the answer stays within the
 * current alpha of the true value at the same rank. */
static void test_udd_collapse(void **state) {
    (void)state;
    const size_t N = 50000;
    double *x = malloc(N * sizeof *x);
    udd *u = udd_new(), *a = udd_new(), *b = udd_new();
    uint64_t s = 4242;
    for (size_t i = 0; i < N; i++) {
        double mag = pow(10.0, rng_unit(&s) * 600 - 300);
        int r = (int)(rng_next(&s) % 10);
        x[i] = r == 0 ? 0.0 : r < 4 ? -mag : mag;
        udd_add(u, x[i]);
        udd_add(i % 2 ? a : b, x[i]);
    }
    assert_true(u->collapses > 0);
    assert_true(u->pos.n + u->neg.n <= UDD_MAX_BUCKETS);
    assert_int_equal(u->total, N);
    udd_merge(a, b);
    assert_int_equal(a->total, N);
    qsort(x, N, sizeof *x, dcmp);
    double alpha = udd_alpha(u);
    assert_true(alpha > 0.01);
    for (double q = 0.001; q < 1; q += 0.0499) {
        size_t rank = (size_t)floor(q * (double)(N - 1));
        double want = x[rank], got;
        assert_true(udd_quantile(u, q, &got));
        if (want == 0) assert_true(got == 0);
        else assert_true(fabs(got - want) <= udd_alpha(u) * fabs(want) * (1 + 1e-9));
        assert_true(udd_quantile(a, q, &got));
        if (want == 0) assert_true(got == 0);
        else assert_true(fabs(got - want) <= udd_alpha(a) * fabs(want) * (1 + 1e-9));
    }
    /* encode/decode */
    bv_buf buf;
    bv_buf_init(&buf);
    udd_encode(&buf, u);
    const uint8_t *p = (const uint8_t *)buf.data;
    udd *d = udd_decode(&p, p + buf.len);
    assert_non_null(d);
    double g1, g2;
    udd_quantile(u, 0.37, &g1);
    udd_quantile(d, 0.37, &g2);
    assert_true(g1 == g2);
    udd_free(d);
    /* merging a coarser sketch into a finer one brings the finer one up */
    udd *fine = udd_new();
    udd_add(fine, 3.0);
    udd_merge(fine, u);
    assert_int_equal(fine->collapses, u->collapses);
    assert_int_equal(fine->total, N + 1);
    udd_free(fine);
    bv_buf_free(&buf);
    udd_free(u);
    udd_free(a);
    udd_free(b);
    free(x);
}

/* A store's buckets are strictly ascending, hold every value, and do not depend on the
 * order the values came in (store_add finds a bucket from the top key first, then by
 * binary search: both must land on the same place, with gaps between buckets too). */
static void udd_store_check(const udd_store *st) {
    for (uint32_t i = 1; i < st->n; i++) assert_true(st->b[i - 1].k < st->b[i].k);
}

static void test_udd_insert_order(void **state) {
    (void)state;
    const size_t N = 6000;
    double *x = malloc(N * sizeof *x);
    uint64_t s = 77;
    for (size_t i = 0; i < N; i++) {
        /* dense near the top, sparse (gaps) towards the bottom, a few negatives */
        double u = rng_unit(&s);
        x[i] = (i % 11 == 0 ? -1 : 1) * (i % 3 ? 1000.0 * u : pow(10.0, u * 6 - 3));
    }
    udd *fwd = udd_new(), *rev = udd_new(), *mix = udd_new();
    for (size_t i = 0; i < N; i++) udd_add(fwd, x[i]);
    for (size_t i = N; i-- > 0;) udd_add(rev, x[i]);
    /* a permutation of the same values: the multiplier is prime to N */
    for (size_t i = 0; i < N; i++) udd_add(mix, x[(i * 2654435761u) % N]);
    assert_int_equal(fwd->collapses, 0);
    const udd *all[3] = { fwd, rev, mix };
    for (int i = 0; i < 3; i++) {
        udd_store_check(&all[i]->pos);
        udd_store_check(&all[i]->neg);
        uint64_t sum = all[i]->zero;
        for (uint32_t j = 0; j < all[i]->pos.n; j++) sum += all[i]->pos.b[j].c;
        for (uint32_t j = 0; j < all[i]->neg.n; j++) sum += all[i]->neg.b[j].c;
        assert_int_equal(sum, N);
        assert_int_equal(all[i]->pos.n, fwd->pos.n);
        assert_int_equal(all[i]->neg.n, fwd->neg.n);
        assert_memory_equal(all[i]->pos.b, fwd->pos.b, fwd->pos.n * sizeof *fwd->pos.b);
        assert_memory_equal(all[i]->neg.b, fwd->neg.b, fwd->neg.n * sizeof *fwd->neg.b);
    }
    udd_free(fwd);
    udd_free(rev);
    udd_free(mix);
    free(x);
}

/* ------------------------------------------------------------ top_k */

/* Zipf(s=1) over n values: the rank with inverse-CDF sampling on the cumulative weights. */
static size_t zipf_draw(const double *cdf, size_t n, uint64_t *s) {
    double u = rng_unit(s) * cdf[n - 1];
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cdf[mid] < u) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static void test_topk_zipf(void **state) {
    (void)state;
    const size_t V = 100000, E = 1000000, K = 10;
    double *cdf = malloc(V * sizeof *cdf);
    uint64_t *truth = calloc(V, sizeof *truth);
    double acc = 0;
    for (size_t i = 0; i < V; i++) { acc += 1.0 / (double)(i + 1); cdf[i] = acc; }
    /* values are a scrambled permutation of the ranks, as strings and ints alternately */
    topk t;
    memset(&t, 0, sizeof t);
    uint64_t s = 777;
    char buf[32];
    for (size_t e = 0; e < E; e++) {
        size_t r = zipf_draw(cdf, V, &s);
        truth[r]++;
        bv_value v;
        if (r % 2) v = bv_i64((int64_t)(r * 7919 % 1000003));
        else v = bv_str(buf, (size_t)snprintf(buf, sizeof buf, "page-%zu", r * 104729 % 1000003));
        topk_add(&t, &v, K);
    }
    assert_true(topk_is_hybrid(&t));
    topk_item *it;
    size_t n = topk_result(&t, K, &it);
    assert_int_equal(n, K);
    /* the true top 10 are ranks 0..9 (Zipf counts are strictly decreasing with margin) */
    for (size_t i = 0; i + 1 < K + 1; i++) assert_true(truth[i] > truth[i + 1]);
    for (size_t i = 0; i < K; i++) {
        size_t r = i;
        bv_value v = opval_view(it[i].v);
        if (r % 2) {
            assert_int_equal(v.kind, BV_I64);
            assert_int_equal(v.u.i, (int64_t)(r * 7919 % 1000003));
        } else {
            int len = snprintf(buf, sizeof buf, "page-%zu", r * 104729 % 1000003);
            assert_int_equal(v.kind, BV_STR);
            assert_int_equal(v.u.s.len, (size_t)len);
            assert_memory_equal(v.u.s.ptr, buf, (size_t)len);
        }
        /* CMS never underestimates, and here stays within e/2048 * N */
        assert_true(it[i].count >= truth[r]);
        assert_true(it[i].count - truth[r] <= (uint64_t)(2.72 / 2048 * (double)E));
    }
    free(it);
    topk_free(&t);
    free(cdf);
    free(truth);
}

static void test_topk_exact_and_merge(void **state) {
    (void)state;
    topk a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    for (int i = 0; i < 1024; i++) {
        bv_value v = bv_i64(i);
        for (int j = 0; j <= i % 5; j++) topk_add(&a, &v, 3);
    }
    assert_false(topk_is_hybrid(&a));
    topk_item *it;
    size_t n = topk_result(&a, 3, &it);
    assert_int_equal(n, 3);
    /* count 5 for i % 5 == 4: 4, 9, 14 are the smallest values with the top count */
    assert_int_equal(it[0].count, 5);
    assert_int_equal(it[0].v->u.i, 4);
    assert_int_equal(it[1].v->u.i, 9);
    assert_int_equal(it[2].v->u.i, 14);
    free(it);
    /* merge exact + exact beyond 1024 distinct -> hybrid, heavy hitter survives */
    bv_value hot = bv_str("hot", 3);
    for (int i = 0; i < 500; i++) topk_add(&b, &hot, 3);
    for (int i = 5000; i < 5100; i++) { bv_value v = bv_i64(i); topk_add(&b, &v, 3); }
    topk_merge(&a, &b, 3);
    assert_true(topk_is_hybrid(&a));
    n = topk_result(&a, 3, &it);
    assert_int_equal(n, 3);
    assert_int_equal(it[0].v->kind, BV_STR);
    assert_true(it[0].count >= 500);
    free(it);
    /* hybrid + hybrid */
    topk c;
    memset(&c, 0, sizeof c);
    topk_merge(&c, &a, 3);
    topk_merge(&c, &a, 3);
    n = topk_result(&c, 3, &it);
    assert_true(it[0].count >= 1000);
    free(it);
    /* encode/decode of a hybrid keeps the answer */
    bv_buf buf;
    bv_buf_init(&buf);
    topk_encode(&buf, &c);
    topk d;
    memset(&d, 0, sizeof d);
    const uint8_t *p = (const uint8_t *)buf.data;
    assert_int_equal(topk_decode(&p, p + buf.len, &d, 3), 0);
    topk_item *it2;
    size_t n2 = topk_result(&d, 3, &it2);
    n = topk_result(&c, 3, &it);
    assert_int_equal(n, n2);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(it[i].count, it2[i].count);
        assert_int_equal(opval_order(it[i].v, it2[i].v), 0);
    }
    p = (const uint8_t *)buf.data;
    assert_int_equal(topk_decode(&p, p + buf.len, &d, 4), -1);   /* k mismatch */
    free(it);
    free(it2);
    bv_buf_free(&buf);
    topk_free(&a);
    topk_free(&b);
    topk_free(&c);
    topk_free(&d);
}

static void test_cms_bounds(void **state) {
    (void)state;
    cms *c = calloc(1, sizeof *c);
    uint64_t *truth = calloc(5000, sizeof *truth);
    uint64_t s = 5;
    for (int i = 0; i < 200000; i++) {
        size_t v = (size_t)(rng_next(&s) % 5000);
        truth[v]++;
        cms_add(c, hash_i64((int64_t)v), 1);
    }
    size_t over = 0;
    for (size_t v = 0; v < 5000; v++) {
        uint64_t est = cms_estimate(c, hash_i64((int64_t)v));
        assert_true(est >= truth[v]);
        if (est - truth[v] > (uint64_t)(2.72 / 2048 * 200000)) over++;
    }
    assert_true(over < 5000 * 0.02);                 /* >= 1 - e^-4 within the bound */
    cms *d = calloc(1, sizeof *d);
    cms_merge(d, c);
    cms_merge(d, c);
    assert_int_equal(cms_estimate(d, hash_i64(1)), 2 * cms_estimate(c, hash_i64(1)));
    free(c);
    free(d);
    free(truth);
}

static void test_valmap(void **state) {
    (void)state;
    valmap m;
    memset(&m, 0, sizeof m);
    char buf[16];
    for (int i = 0; i < 3000; i++) {
        bv_value v;
        if (i % 3 == 0) v = bv_i64(i);
        else if (i % 3 == 1) v = bv_f64(i);
        else v = bv_str(buf, (size_t)snprintf(buf, sizeof buf, "%d", i));
        uint64_t h = opval_hash(&v);
        assert_null(vm_find(&m, &v, h));
        vm_insert(&m, &v, h)->count = (uint64_t)i;
    }
    assert_int_equal(m.n, 3000);
    for (int i = 0; i < 3000; i++) {
        bv_value v;
        if (i % 3 == 0) v = bv_i64(i);
        else if (i % 3 == 1) v = bv_f64(i);
        else v = bv_str(buf, (size_t)snprintf(buf, sizeof buf, "%d", i));
        vm_entry *e = vm_find(&m, &v, opval_hash(&v));
        assert_non_null(e);
        assert_int_equal(e->count, (uint64_t)i);
        /* same number, other kind: absent */
        bv_value w = v.kind == BV_I64 ? bv_f64((double)i) : bv_i64(i);
        assert_null(vm_find(&m, &w, opval_hash(&w)));
    }
    bv_value nan1 = bv_f64(NAN);
    vm_insert(&m, &nan1, opval_hash(&nan1));
    assert_non_null(vm_find(&m, &nan1, opval_hash(&nan1)));
    vm_free(&m);
}

/* ------------------------------------------------------------ prefetch hints */

static bv_buf distinct_bytes(const distinct *d) {
    bv_buf b;
    bv_buf_init(&b);
    distinct_encode(&b, d);
    return b;
}

/* distinct_prefetch reads a set in each of its forms (empty, one inline hash, the sorted
 * array, the hash table with and without the zero hash, HLL) and changes none of them:
 * hinted for present, absent and zero hashes, the set encodes the same and its fields
 * stay put. */
static void test_distinct_prefetch(void **state) {
    (void)state;
    distinct d;
    memset(&d, 0, sizeof d);
    uint64_t s = 99;
    for (int64_t i = 0; i < 1100; i++) {
        uint64_t probe[4] = { hash_i64(i), hash_i64(i / 2), rng_next(&s), 0 };
        bv_buf before = distinct_bytes(&d);
        distinct copy = d;
        for (int k = 0; k < 4; k++) distinct_prefetch(&d, probe[k]);
        assert_memory_equal(&copy, &d, sizeof d);
        bv_buf after = distinct_bytes(&d);
        assert_int_equal(before.len, after.len);
        assert_memory_equal(before.data, after.data, before.len);
        bv_buf_free(&before);
        bv_buf_free(&after);
        distinct_add(&d, i == 500 ? 0 : hash_i64(i));  /* the zero hash: the table's extra slot */
    }
    assert_int_equal(d.n, DISTINCT_HLL);
    distinct_free(&d);
}

/* topk_prefetch / vm_prefetch / qs_prefetch / cms_prefetch / hll_prefetch on every form:
 * the results read the same afterwards. */
static void test_other_prefetch(void **state) {
    (void)state;
    topk t;
    memset(&t, 0, sizeof t);
    qstore q;
    memset(&q, 0, sizeof q);
    uint8_t reg[HLL_M];
    memset(reg, 0, sizeof reg);
    for (int64_t i = 0; i < 1500; i++) {
        bv_value v = bv_i64(i % 1200), w = bv_str("x", 1);
        topk_prefetch(&t, &v);
        topk_prefetch(&t, &w);
        qs_prefetch(&q);
        hll_prefetch(reg, (uint64_t)i);
        if (i % 100 == 0) {
            bv_buf a, b;
            bv_buf_init(&a);
            bv_buf_init(&b);
            topk_encode(&a, &t);
            topk_prefetch(&t, &v);
            topk_encode(&b, &t);
            assert_int_equal(a.len, b.len);
            assert_memory_equal(a.data, b.data, a.len);
            bv_buf_free(&a);
            bv_buf_free(&b);
            double before = 0, after = 0;
            bool had = qs_quantile(&q, 0.5, &before);
            qs_prefetch(&q);
            assert_int_equal(qs_quantile(&q, 0.5, &after), had);
            assert_true(before == after);
        }
        topk_add(&t, &v, 3);
        qs_add(&q, (double)i);
        hll_add(reg, (uint64_t)i);
    }
    assert_true(topk_is_hybrid(&t));
    assert_int_equal(q.n, QS_SKETCH);
    uint64_t est = hll_estimate(reg);
    hll_prefetch(reg, 12345);
    assert_int_equal(hll_estimate(reg), est);
    cms *c = calloc(1, sizeof *c);
    assert_non_null(c);
    cms_add(c, 42, 7);
    cms_prefetch(c, 42);
    cms_prefetch(c, 43);
    assert_int_equal(cms_estimate(c, 42), 7);
    free(c);
    valmap m;
    memset(&m, 0, sizeof m);
    vm_prefetch(&m, 1);                               /* empty */
    for (int64_t i = 0; i < 20; i++) {
        bv_value v = bv_i64(i);
        vm_prefetch(&m, opval_hash(&v));              /* linear, then indexed */
        assert_null(vm_find(&m, &v, opval_hash(&v)));
        vm_insert(&m, &v, opval_hash(&v))->count = (uint64_t)i;
    }
    assert_int_equal(m.n, 20);
    vm_free(&m);
    topk_free(&t);
    qs_free(&q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hll_accuracy),
        cmocka_unit_test(test_n_unique_million),
        cmocka_unit_test(test_distinct_exact_phase),
        cmocka_unit_test(test_quantile_lognormal),
        cmocka_unit_test(test_quantile_exact_phase),
        cmocka_unit_test(test_udd_collapse),
        cmocka_unit_test(test_udd_insert_order),
        cmocka_unit_test(test_topk_zipf),
        cmocka_unit_test(test_topk_exact_and_merge),
        cmocka_unit_test(test_cms_bounds),
        cmocka_unit_test(test_valmap),
        cmocka_unit_test(test_distinct_prefetch),
        cmocka_unit_test(test_other_prefetch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
