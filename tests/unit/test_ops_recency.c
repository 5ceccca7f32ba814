/*
 * test_ops_recency.c - the buffer, recency, streak, histogram and categorical operator
 * kinds and bloom_member (ops/op_<kind>.c).
 *
 * Every kind is driven through the public feature API (feature_compile, feature_update,
 * feature_read) with random event streams and compared, as JSON text, against a
 * brute-force answer computed from the raw event list, with and without `where`, and
 * for the raw-value kinds on f64, i64 and untyped fields (numeric coercion). Then:
 * empty values, wrong-type and null values, register-time errors with the reference
 * codes, snapshot round trips (including every truncation and hand-made garbage),
 * histogram labels, day-of-week keys, reservoir determinism and the Bloom filter's
 * semantics and false-positive rate.
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
#include <time.h>

#include "feature.h"
#include "op.h"

#define PATH "nodes[1].T.ops[0].agg.feat"

/* ------------------------------------------------------------------ helpers */

static void mk_schema(bv_schema *s) {
    bv_schema_init(s);
    bv_schema_set(s, "amount", WT_F64);
    bv_schema_set(s, "qty", WT_I64);
    bv_schema_set(s, "k", WT_I64);
    bv_schema_set(s, "name", WT_STR);
    bv_schema_set(s, "flag", WT_BOOL);
    bv_schema_set(s, "any", WT_JSON);
}

#include "feature_harness.h"

/* One test event: `v` goes under the feature's field; `k` drives where = (k > 3). */
typedef struct tev {
    int64_t t;
    bool has;                 /* field present (possibly null) */
    bv_value v;
    bool has_k;               /* k absent: where evaluates to null, a non-match */
    int64_t k;
} tev;

static void push(const feature *f, void *st, const tev *e) {
    bv_field fields[2];
    size_t n = 0;
    const char *fname = f->field ? f->field : "amount";
    if (e->has) fields[n++] = (bv_field){ fname, strlen(fname), e->v };
    if (e->has_k) fields[n++] = (bv_field){ "k", 1, bv_i64(e->k) };
    bv_row row = { fields, n, 0 };
    expr_arena arena;
    expr_arena_reset(&arena);
    op_stats stats = { 0, 0, 0 };
    feature_update(f, st, &row, e->t, &arena, &stats);
}

static void push_value(const feature *f, void *st, bv_value v, int64_t t) {
    tev e = { t, true, v, true, 9 };
    push(f, st, &e);
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static const char *const NAMES[] = { "a", "b", "c", "bb", "zz", "ab", "5", "true", "q\"t" };
#define NNAMES (sizeof NAMES / sizeof NAMES[0])

static json_t *g_list, *g_map;

/* Random events: I64, F64 (multiples of 1/8, some integral), null, missing, strings,
 * bools, lists/maps; times non-decreasing with same-ms repeats, small and multi-hour
 * gaps (so hours and weekdays vary); k sometimes absent. */
static void gen_stream(tev *ev, size_t n, uint64_t seed, int64_t t0) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    int64_t t = t0;
    for (size_t i = 0; i < n; i++) {
        tev *e = &ev[i];
        uint64_t g = rng_next(&s);
        if (g % 4 == 0) t += 0;
        else if (g % 4 == 1) t += (int64_t)(rng_next(&s) % 3000);
        else t += (int64_t)(rng_next(&s) % 7200000);
        e->t = t;
        e->has_k = rng_next(&s) % 20 != 0;
        e->k = (int64_t)(rng_next(&s) % 10);
        unsigned r = (unsigned)(rng_next(&s) % 100);
        e->has = true;
        if (r < 28) e->v = bv_i64((int64_t)(rng_next(&s) % 41) - 20);
        else if (r < 52) e->v = bv_f64((double)(int64_t)(rng_next(&s) % 161) / 8.0 - 10.0);
        else if (r < 60) e->v = bv_null();
        else if (r < 67) e->has = false;
        else if (r < 80) {
            const char *nm = NAMES[rng_next(&s) % NNAMES];
            e->v = bv_str(nm, strlen(nm));
        } else if (r < 87) e->v = bv_bool(rng_next(&s) & 1);
        else if (r < 91) e->v = bv_from_json(rng_next(&s) & 1 ? g_list : g_map);
        else e->v = bv_i64((int64_t)(rng_next(&s) % 3));
    }
}

/* ------------------------------------------------------------ brute force */

typedef struct bctx {
    const tev *ev;
    size_t n;                 /* events so far */
    bool use_where;           /* where = (k > 3) */
    int coerce;               /* -1 none, else the declared type values are coerced to */
    int64_t np;               /* n / samples */
    int64_t window;
    const char *const *cats;  /* event_type_mix allowlist (NULL: none) */
    size_t ncats;
    int64_t max_cats;
} bctx;

static bool b_matched(const bctx *c, const tev *e) { return !c->use_where || (e->has_k && e->k > 3); }

static bv_value b_coerce(const bctx *c, bv_value v) {
    if (c->coerce == WT_F64 && v.kind == BV_I64) return bv_f64((double)v.u.i);
    if (c->coerce == WT_I64 && v.kind == BV_F64 && v.u.f == floor(v.u.f) && fabs(v.u.f) < 9e18)
        return bv_i64((int64_t)v.u.f);
    return v;
}

/* Matched non-null values (coerced) and their times. */
static size_t b_values(const bctx *c, bv_value *out, int64_t *times) {
    size_t m = 0;
    for (size_t i = 0; i < c->n; i++) {
        const tev *e = &c->ev[i];
        if (!b_matched(c, e) || !e->has || e->v.kind == BV_NULL) continue;
        if (times) times[m] = e->t;
        out[m++] = b_coerce(c, e->v);
    }
    return m;
}

static void b_list(jsonw *w, const bv_value *v, size_t from, size_t to) {
    jsonw_arr_begin(w);
    for (size_t i = from; i < to; i++) jsonw_value(w, &v[i]);
    jsonw_arr_end(w);
}

static bv_value *vbuf(const bctx *c) {
    bv_value *v = malloc((c->n + 1) * sizeof *v);
    assert_non_null(v);
    return v;
}

static void b_first_n(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    bv_value *v = vbuf(c);
    size_t m = b_values(c, v, NULL);
    b_list(w, v, 0, m < (size_t)c->np ? m : (size_t)c->np);
    free(v);
}

static void b_last_n(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    bv_value *v = vbuf(c);
    size_t m = b_values(c, v, NULL);
    b_list(w, v, m > (size_t)c->np ? m - (size_t)c->np : 0, m);
    free(v);
}

static void b_lag(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    bv_value *v = vbuf(c);
    size_t m = b_values(c, v, NULL);
    if (m >= (size_t)c->np + 1) jsonw_value(w, &v[m - 1 - (size_t)c->np]);
    else jsonw_null(w);
    free(v);
}

/* Algorithm R exactly as ops/op_reservoir_sample.c words it. */
static void b_reservoir(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    bv_value *v = vbuf(c), *res = vbuf(c);
    size_t m = b_values(c, v, NULL), len = 0, k = (size_t)c->np;
    uint64_t seen = 0;
    for (size_t i = 0; i < m; i++) {
        seen++;
        if (len < k) { res[len++] = v[i]; continue; }
        uint64_t s = seen ^ 0xA0B1C2D3E4F50617ull ^ 0x9E3779B97F4A7C15ull;
        if (s == 0) s = 0xD2B74E4572D7C2B0ull;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        uint64_t j = s % seen;
        if (j < k) res[j] = v[i];
    }
    b_list(w, res, 0, len);
    free(v);
    free(res);
}

/* Matched arrival times. */
static size_t b_times(const bctx *c, int64_t *out) {
    size_t m = 0;
    for (size_t i = 0; i < c->n; i++)
        if (b_matched(c, &c->ev[i])) out[m++] = c->ev[i].t;
    return m;
}

static int64_t *tbuf(const bctx *c) {
    int64_t *t = malloc((c->n + 1) * sizeof *t);
    assert_non_null(t);
    return t;
}

static void b_first_seen(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    int64_t *t = tbuf(c);
    size_t m = b_times(c, t);
    if (m) jsonw_i64(w, t[0]); else jsonw_null(w);
    free(t);
}

static void b_last_seen(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    int64_t *t = tbuf(c);
    size_t m = b_times(c, t);
    if (m) jsonw_i64(w, t[m - 1]); else jsonw_null(w);
    free(t);
}

static void b_age(const bctx *c, int64_t q, jsonw *w) {
    int64_t *t = tbuf(c);
    size_t m = b_times(c, t);
    if (m) jsonw_i64(w, q > t[0] ? q - t[0] : 0); else jsonw_null(w);
    free(t);
}

static void b_has_seen(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    int64_t *t = tbuf(c);
    jsonw_bool(w, b_times(c, t) > 0);
    free(t);
}

static void b_time_since(const bctx *c, int64_t q, jsonw *w) {
    int64_t *t = tbuf(c);
    size_t m = b_times(c, t);
    if (m) jsonw_i64(w, q > t[m - 1] ? q - t[m - 1] : 0); else jsonw_null(w);
    free(t);
}

static void b_tsln(const bctx *c, int64_t q, jsonw *w) {
    int64_t *t = tbuf(c);
    size_t m = b_times(c, t), n = (size_t)c->np;
    if (m < n) jsonw_null(w);
    else jsonw_i64(w, q > t[m - n] ? q - t[m - n] : 0);
    free(t);
}

static void b_fsiw(const bctx *c, int64_t q, jsonw *w) {
    int64_t *t = tbuf(c);
    size_t m = b_times(c, t);
    jsonw_bool(w, m && q - t[m - 1] >= 0 && q - t[m - 1] < c->window);
    free(t);
}

/* Runs over every event reaching the feature (unmatched ones included). */
static void b_runs(const bctx *c, int64_t *cur, int64_t *best, int64_t *neg) {
    *cur = *best = *neg = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (b_matched(c, &c->ev[i])) {
            (*cur)++;
            *neg = 0;
            if (*cur > *best) *best = *cur;
        } else {
            *cur = 0;
            (*neg)++;
        }
    }
}

static void b_streak(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    int64_t a, b, n;
    b_runs(c, &a, &b, &n);
    jsonw_i64(w, a);
}

static void b_max_streak(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    int64_t a, b, n;
    b_runs(c, &a, &b, &n);
    jsonw_i64(w, b);
}

static void b_negative_streak(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    int64_t a, b, n;
    b_runs(c, &a, &b, &n);
    jsonw_i64(w, n);
}

/* histogram over buckets [-5, 0, 2.5, 10]; labels listed in byte order with their cell */
static const double HB[] = { -5, 0, 2.5, 10 };
static const struct { const char *label; int cell; } HB_LABELS[] = {
    { "-5-0", 1 }, { "0-2.5", 2 }, { "2.5-10", 3 }, { "<-5", 0 }, { ">=10", 4 },
};

static void b_histogram(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    bv_value *v = vbuf(c);
    size_t m = b_values(c, v, NULL);
    int64_t cnt[5] = { 0 };
    for (size_t i = 0; i < m; i++) {
        double x;
        if (!bv_as_f64(&v[i], &x)) continue;
        int cell = 4;
        for (int j = 0; j < 4; j++)
            if (x < HB[j]) { cell = j; break; }
        cnt[cell]++;
    }
    jsonw_obj_begin(w);
    for (int i = 0; i < 5; i++) {
        jsonw_key(w, HB_LABELS[i].label);
        jsonw_i64(w, cnt[HB_LABELS[i].cell]);
    }
    jsonw_obj_end(w);
    free(v);
}

static void utc(int64_t t_ms, int *wday_mon0, int *hour) {
    time_t secs = (time_t)(t_ms >= 0 ? t_ms / 1000 : -((-t_ms + 999) / 1000));
    struct tm tm;
    gmtime_r(&secs, &tm);
    *wday_mon0 = (tm.tm_wday + 6) % 7;
    *hour = tm.tm_hour;
}

static void b_hod(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    int64_t cnt[24] = { 0 };
    int64_t *t = tbuf(c);
    size_t m = b_times(c, t);
    for (size_t i = 0; i < m; i++) {
        int d, h;
        utc(t[i], &d, &h);
        cnt[h]++;
    }
    jsonw_arr_begin(w);
    for (int i = 0; i < 24; i++) jsonw_i64(w, cnt[i]);
    jsonw_arr_end(w);
    free(t);
}

static const char *const DAYS[7] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };

typedef struct bcat { char key[32]; int64_t n; } bcat;

static int bcat_cmp(const void *a, const void *b) { return strcmp(((const bcat *)a)->key, ((const bcat *)b)->key); }

static void b_dow(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    int64_t cnt[168] = { 0 };
    int64_t *t = tbuf(c);
    size_t m = b_times(c, t);
    for (size_t i = 0; i < m; i++) {
        int d, h;
        utc(t[i], &d, &h);
        cnt[d * 24 + h]++;
    }
    bcat keys[168];
    for (int d = 0; d < 7; d++)
        for (int h = 0; h < 24; h++) {
            snprintf(keys[d * 24 + h].key, sizeof keys[0].key, "%s-%02d", DAYS[d], h);
            keys[d * 24 + h].n = cnt[d * 24 + h];
        }
    qsort(keys, 168, sizeof keys[0], bcat_cmp);
    jsonw_obj_begin(w);
    for (int i = 0; i < 168; i++) {
        jsonw_key(w, keys[i].key);
        jsonw_i64(w, keys[i].n);
    }
    jsonw_obj_end(w);
    free(t);
}

static void b_seasonal(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    bv_value *v = vbuf(c);
    int64_t *t = tbuf(c);
    size_t m = b_values(c, v, t);
    double n[24] = { 0 }, s[24] = { 0 }, ss[24] = { 0 }, last = 0;
    int lh = -1;
    for (size_t i = 0; i < m; i++) {
        double x;
        int d, h;
        if (!bv_as_f64(&v[i], &x)) continue;
        utc(t[i], &d, &h);
        n[h]++;
        s[h] += x;
        ss[h] += x * x;
        last = x;
        lh = h;
    }
    if (lh < 0 || n[lh] < 2) jsonw_null(w);
    else {
        double mean = s[lh] / n[lh], var = (ss[lh] - s[lh] * s[lh] / n[lh]) / (n[lh] - 1);
        if (var <= 0) jsonw_null(w);
        else jsonw_f64(w, (last - mean) / sqrt(var));
    }
    free(v);
    free(t);
}

static void b_etm(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    bv_value *v = vbuf(c);
    size_t m = b_values(c, v, NULL), nc = 0;
    bcat *cats = calloc(m + 1, sizeof *cats);
    int64_t total = 0;
    for (size_t i = 0; i < m; i++) {
        char key[32];
        if (v[i].kind == BV_STR) snprintf(key, sizeof key, "%.*s", (int)v[i].u.s.len, v[i].u.s.ptr);
        else if (v[i].kind == BV_I64) snprintf(key, sizeof key, "%lld", (long long)v[i].u.i);
        else if (v[i].kind == BV_BOOL) snprintf(key, sizeof key, "%s", v[i].u.b ? "true" : "false");
        else continue;
        total++;
        size_t j;
        for (j = 0; j < nc; j++)
            if (!strcmp(cats[j].key, key)) break;
        if (j == nc) {
            if (c->cats) {
                bool ok = false;
                for (size_t a = 0; a < c->ncats; a++) ok |= !strcmp(c->cats[a], key);
                if (!ok) continue;
            } else if ((int64_t)nc >= c->max_cats) {
                continue;
            }
            snprintf(cats[nc].key, sizeof cats[nc].key, "%s", key);
            nc++;
        }
        cats[j].n++;
    }
    qsort(cats, nc, sizeof *cats, bcat_cmp);
    jsonw_obj_begin(w);
    for (size_t i = 0; i < nc && total; i++) {
        jsonw_key(w, cats[i].key);
        jsonw_f64(w, (double)cats[i].n / (double)total);
    }
    jsonw_obj_end(w);
    free(cats);
    free(v);
}

static bool b_same(const bv_value *a, const bv_value *b) {
    if (a->kind != b->kind) return false;
    switch (a->kind) {
    case BV_STR: return a->u.s.len == b->u.s.len && !memcmp(a->u.s.ptr, b->u.s.ptr, a->u.s.len);
    case BV_I64: return a->u.i == b->u.i;
    case BV_F64: return a->u.f == b->u.f;
    case BV_BOOL: return a->u.b == b->u.b;
    default: return false;
    }
}

/* Exact membership: was the latest accepted value seen before it? */
static void b_bloom(const bctx *c, int64_t q, jsonw *w) {
    (void)q;
    bv_value *v = vbuf(c);
    size_t m = b_values(c, v, NULL), k = 0;
    bool any = false, present = false;
    for (size_t i = 0; i < m; i++) {
        if (v[i].kind == BV_JSON) continue;
        present = false;
        for (size_t j = 0; j < k && !present; j++) present = b_same(&v[j], &v[i]);
        v[k++] = v[i];
        any = true;
    }
    jsonw_bool(w, any && present);
    free(v);
}

/* ------------------------------------------------------------ cases */

static const char *const ETM_CATS[] = { "a", "5", "true", "zz", "nope" };

typedef struct rcase {
    const char *op;
    const char *field;        /* NULL: no field param */
    const char *extra;        /* more params (",\"n\":3") */
    void (*brute)(const bctx *, int64_t, jsonw *);
    bool coerce;              /* the kind coerces numerics to the field's type */
    int64_t np, window;
    int etm;                  /* 1: allowlist ETM_CATS, 2: max_categories 3 */
    double rtol;              /* 0: exact text */
} rcase;

static const rcase CASES[] = {
    { "first_n", "amount", ",\"n\":3", b_first_n, true, 3, 0, 0, 0 },
    { "first_n", "any", ",\"n\":5", b_first_n, true, 5, 0, 0, 0 },
    { "first_n", "qty", ",\"n\":1", b_first_n, true, 1, 0, 0, 0 },
    { "first_n", "name", ",\"n\":1024", b_first_n, true, 1024, 0, 0, 0 },
    { "last_n", "amount", ",\"n\":4", b_last_n, true, 4, 0, 0, 0 },
    { "last_n", "any", ",\"n\":1", b_last_n, true, 1, 0, 0, 0 },
    { "last_n", "qty", ",\"n\":7", b_last_n, true, 7, 0, 0, 0 },
    { "lag", "any", ",\"n\":1", b_lag, true, 1, 0, 0, 0 },
    { "lag", "amount", ",\"n\":3", b_lag, true, 3, 0, 0, 0 },
    { "lag", "qty", ",\"n\":2", b_lag, true, 2, 0, 0, 0 },
    { "most_recent_n", "any", "", b_last_n, true, 10, 0, 0, 0 },
    { "most_recent_n", "amount", ",\"n\":3", b_last_n, true, 3, 0, 0, 0 },
    { "most_recent_n", "qty", ",\"n\":2", b_last_n, true, 2, 0, 0, 0 },
    { "reservoir_sample", "any", ",\"samples\":5", b_reservoir, true, 5, 0, 0, 0 },
    { "reservoir_sample", "amount", ",\"samples\":3,\"k\":7", b_reservoir, true, 3, 0, 0, 0 },
    { "reservoir_sample", "qty", ",\"k\":4", b_reservoir, true, 4, 0, 0, 0 },
    { "reservoir_sample", "any", "", b_reservoir, true, 10, 0, 0, 0 },
    { "first_seen", NULL, "", b_first_seen, false, 0, 0, 0, 0 },
    { "last_seen", NULL, "", b_last_seen, false, 0, 0, 0, 0 },
    { "age", NULL, "", b_age, false, 0, 0, 0, 0 },
    { "has_seen", NULL, "", b_has_seen, false, 0, 0, 0, 0 },
    { "time_since", NULL, "", b_time_since, false, 0, 0, 0, 0 },
    { "time_since_last_n", NULL, ",\"n\":1", b_tsln, false, 1, 0, 0, 0 },
    { "time_since_last_n", NULL, ",\"n\":4", b_tsln, false, 4, 0, 0, 0 },
    { "streak", NULL, "", b_streak, false, 0, 0, 0, 0 },
    { "max_streak", NULL, "", b_max_streak, false, 0, 0, 0, 0 },
    { "negative_streak", NULL, "", b_negative_streak, false, 0, 0, 0, 0 },
    /* a field on a kind that does not read one changes nothing */
    { "streak", "amount", "", b_streak, false, 0, 0, 0, 0 },
    { "first_seen_in_window", NULL, ",\"window\":\"5s\"", b_fsiw, false, 0, 5000, 0, 0 },
    { "first_seen_in_window", NULL, ",\"window\":\"1h\"", b_fsiw, false, 0, 3600000, 0, 0 },
    { "histogram", "amount", ",\"buckets\":[-5,0,2.5,10]", b_histogram, false, 0, 0, 0, 0 },
    { "histogram", "any", ",\"buckets\":[-5,\"x\",0,2.5,null,10.0]", b_histogram, false, 0, 0, 0, 0 },
    { "hour_of_day_histogram", NULL, "", b_hod, false, 0, 0, 0, 0 },
    { "dow_hour_histogram", NULL, "", b_dow, false, 0, 0, 0, 0 },
    { "seasonal_deviation", "amount", "", b_seasonal, false, 0, 0, 0, 1e-9 },
    { "seasonal_deviation", "any", "", b_seasonal, false, 0, 0, 0, 1e-9 },
    { "event_type_mix", "any", "", b_etm, false, 0, 0, 0, 0 },
    { "event_type_mix", "any", ",\"max_categories\":3", b_etm, false, 0, 0, 2, 0 },
    { "event_type_mix", "any", ",\"categories\":[\"a\",\"5\",7,\"true\",\"zz\",\"nope\"]", b_etm, false, 0, 0, 1, 0 },
    { "event_type_mix", "qty", ",\"max_categories\":1000", b_etm, false, 0, 0, 0, 0 },
    { "bloom_member", "any", "", b_bloom, true, 0, 0, 0, 0 },
    /* sized so that a false positive among these ~200 distinct values is improbable
     * (the hashing is deterministic, so a pass is a pass): the rate is test_bloom_fpr's */
    { "bloom_member", "amount", ",\"expected_n\":3000,\"fpr\":0.001", b_bloom, true, 0, 0, 0, 0 },
    { "bloom_member", "qty", ",\"capacity\":5000,\"target_fpr\":0.05", b_bloom, true, 0, 0, 0, 0 },
    { "bloom_member", "name", "", b_bloom, true, 0, 0, 0, 0 },
};

/* Reals within rtol, everything else equal. */
static bool json_close(const json_t *a, const json_t *b, double rtol) {
    if (json_typeof(a) != json_typeof(b)) return false;
    if (json_is_real(a)) {
        double x = json_real_value(a), y = json_real_value(b);
        return fabs(x - y) <= rtol * fmax(1.0, fmax(fabs(x), fabs(y)));
    }
    return json_equal((json_t *)a, (json_t *)b);
}

static void check_text(const char *op, const char *got, const char *want, double rtol, size_t at) {
    if (strcmp(got, want) == 0) return;
    if (rtol > 0) {
        json_t *a = json_loads(got, JSON_DECODE_ANY, NULL), *b = json_loads(want, JSON_DECODE_ANY, NULL);
        bool ok = a && b && json_close(a, b, rtol);
        json_decref(a);
        json_decref(b);
        if (ok) return;
    }
    fail_msg("op %s after event %zu: got %s want %s", op, at, got, want);
}

static int field_type(const char *field) {
    if (!field) return -1;
    if (!strcmp(field, "amount")) return WT_F64;
    if (!strcmp(field, "qty") || !strcmp(field, "k")) return WT_I64;
    return -1;
}

static void run_case(const rcase *rc, bool use_where, uint64_t seed) {
    enum { N = 300 };
    tev ev[N];
    gen_stream(ev, N, seed, 1700000000000LL);
    char spec[512];
    char fieldp[64] = "";
    if (rc->field) snprintf(fieldp, sizeof fieldp, "\"field\":\"%s\",", rc->field);
    snprintf(spec, sizeof spec, "{\"op\":\"%s\",\"params\":{%s\"where\":\"%s\"%s}}", rc->op, fieldp,
             use_where ? "(k > 3)" : "true", rc->extra);
    /* no where at all, or the literal true: both always match */
    if (!use_where && (seed & 1)) {
        char *w = strstr(spec, "\"where\":\"true\"");
        size_t cut = strlen("\"where\":\"true\"");
        memmove(w, w + cut, strlen(w + cut) + 1);
        if (*w == ',') memmove(w, w + 1, strlen(w + 1) + 1);
        else if (w[-1] == ',') memmove(w - 1, w, strlen(w) + 1);
    }
    feature f;
    compile_ok(&f, spec);
    void *st = state_new(&f);
    bctx c = { ev, 0, use_where, rc->coerce ? field_type(rc->field) : -1, rc->np, rc->window,
               rc->etm == 1 ? ETM_CATS : NULL, rc->etm == 1 ? 5 : 0, rc->etm == 2 ? 3 : 256 };
    if (rc->etm == 0 && strstr(rc->extra, "1000")) c.max_cats = 1000;
    for (size_t i = 0; i < N; i++) {
        push(&f, st, &ev[i]);
        if (i % 5 != 0 && i != N - 1 && i > 20) continue;
        c.n = i + 1;
        int64_t qs[] = { ev[i].t, ev[i].t + 1, ev[i].t + 2500, ev[i].t + 4999, ev[i].t + 5000,
                         ev[i].t + 3600000, ev[i].t - 3 };
        for (size_t j = 0; j < sizeof qs / sizeof qs[0]; j++) {
            bv_buf b;
            jsonw w;
            bv_buf_init(&b);
            jsonw_init(&w, &b);
            rc->brute(&c, qs[j], &w);
            char *got = read_json(&f, st, qs[j]);
            check_text(spec, got, b.data, rc->rtol, i);
            free(got);
            bv_buf_free(&b);
        }
    }
    state_free(&f, st);
    feature_release(&f);
}

static void test_bruteforce(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        for (uint64_t seed = 1; seed <= 4; seed++) {
            run_case(&CASES[i], false, seed * 7919 + i);
            run_case(&CASES[i], true, seed * 104729 + i);
        }
}

/* ------------------------------------------------------------ empty values */

static const struct { const char *spec, *empty; } KINDS[] = {
    { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\"}}", "false" },
    { "{\"op\":\"first_n\",\"params\":{\"field\":\"name\",\"n\":3}}", "[]" },
    { "{\"op\":\"last_n\",\"params\":{\"field\":\"name\",\"n\":3}}", "[]" },
    { "{\"op\":\"lag\",\"params\":{\"field\":\"name\",\"n\":1}}", "null" },
    { "{\"op\":\"first_seen\"}", "null" },
    { "{\"op\":\"last_seen\"}", "null" },
    { "{\"op\":\"age\"}", "null" },
    { "{\"op\":\"has_seen\"}", "false" },
    { "{\"op\":\"time_since\"}", "null" },
    { "{\"op\":\"time_since_last_n\",\"params\":{\"n\":2}}", "null" },
    { "{\"op\":\"streak\"}", "0" },
    { "{\"op\":\"max_streak\"}", "0" },
    { "{\"op\":\"negative_streak\"}", "0" },
    { "{\"op\":\"first_seen_in_window\",\"params\":{\"window\":\"1h\"}}", "false" },
    { "{\"op\":\"histogram\",\"params\":{\"field\":\"amount\",\"buckets\":[10,100,1000]}}",
      "{\"10-100\":0,\"100-1000\":0,\"<10\":0,\">=1000\":0}" },
    { "{\"op\":\"hour_of_day_histogram\"}", "[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]" },
    { "{\"op\":\"dow_hour_histogram\"}", NULL },   /* checked structurally */
    { "{\"op\":\"seasonal_deviation\",\"params\":{\"field\":\"amount\"}}", "null" },
    { "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"name\"}}", "{}" },
    { "{\"op\":\"most_recent_n\",\"params\":{\"field\":\"name\",\"n\":3}}", "[]" },
    { "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"name\",\"samples\":3}}", "[]" },
};
#define NKINDS (sizeof KINDS / sizeof KINDS[0])

static void check_dow_zero(const char *got) {
    json_t *j = json_loads(got, 0, NULL);
    assert_non_null(j);
    assert_true(json_is_object(j));
    assert_int_equal(json_object_size(j), 168);
    for (int d = 0; d < 7; d++)
        for (int h = 0; h < 24; h++) {
            char key[8];
            snprintf(key, sizeof key, "%s-%02d", DAYS[d], h);
            json_t *v = json_object_get(j, key);
            assert_non_null(v);
            assert_true(json_is_integer(v));
            assert_int_equal(json_integer_value(v), 0);
        }
    json_decref(j);
}

static void test_empty_values(void **state) {
    (void)state;
    for (size_t i = 0; i < NKINDS; i++) {
        /* a fresh state, and an entity whose events all failed `where` (the streak kinds
         * see those, checked below) */
        for (int with_where = 0; with_where < 2; with_where++) {
            feature f;
            char spec[256];
            if (with_where) {
                json_t *s = json_loads(KINDS[i].spec, 0, NULL);
                json_t *p = json_object_get(s, "params");
                if (!p) { p = json_object(); json_object_set_new(s, "params", p); }
                json_object_set_new(p, "where", json_string("(k > 100)"));
                char *t = json_dumps(s, JSON_COMPACT);
                snprintf(spec, sizeof spec, "%s", t);
                free(t);
                json_decref(s);
            } else {
                snprintf(spec, sizeof spec, "%s", KINDS[i].spec);
            }
            compile_ok(&f, spec);
            assert_int_equal(f.state_size % 8, 0);
            void *st = state_new(&f);
            if (with_where)
                for (int e = 0; e < 3; e++) push_value(&f, st, bv_i64(e), 1000 + e);
            char *got = read_json(&f, st, 5000);
            if (!strcmp(f.op_name, "negative_streak") && with_where) assert_string_equal(got, "3");
            else if (!KINDS[i].empty) check_dow_zero(got);
            else if (strcmp(got, KINDS[i].empty) != 0) fail_msg("%s: empty %s, want %s", spec, got, KINDS[i].empty);
            free(got);
            state_free(&f, st);
            feature_release(&f);
        }
    }
    /* histogram without usable edges: one "all" cell */
    feature f;
    compile_ok(&f, "{\"op\":\"histogram\",\"params\":{\"field\":\"amount\",\"buckets\":[\"a\",true]}}");
    void *st = state_new(&f);
    assert_read(&f, st, 1, "{\"all\":0}");
    push_value(&f, st, bv_f64(3), 1);
    push_value(&f, st, bv_i64(-3), 1);
    push_value(&f, st, bv_str("x", 1), 1);
    assert_read(&f, st, 1, "{\"all\":2}");
    state_free(&f, st);
    feature_release(&f);
}

/* ------------------------------------------------------------ where */

static void test_where_streaks(void **state) {
    (void)state;
    /* where evaluates to true, false, or null (k absent / not comparable): only true
     * counts as a match */
    feature fs, fm, fn, fh;
    compile_ok(&fs, "{\"op\":\"streak\",\"params\":{\"where\":\"(k > 3)\"}}");
    compile_ok(&fm, "{\"op\":\"max_streak\",\"params\":{\"where\":\"(k > 3)\"}}");
    compile_ok(&fn, "{\"op\":\"negative_streak\",\"params\":{\"where\":\"(k > 3)\"}}");
    compile_ok(&fh, "{\"op\":\"has_seen\",\"params\":{\"where\":\"(k > 3)\"}}");
    void *s = state_new(&fs), *m = state_new(&fm), *n = state_new(&fn), *h = state_new(&fh);
    static const struct { bool has_k; int64_t k; const char *s, *m, *n, *h; } seq[] = {
        { false, 0, "0", "0", "1", "false" },  /* null where */
        { true, 5, "1", "1", "0", "true" },
        { true, 9, "2", "2", "0", "true" },
        { true, 3, "0", "2", "1", "true" },    /* false */
        { false, 0, "0", "2", "2", "true" },   /* null */
        { true, 4, "1", "2", "0", "true" },
        { true, 4, "2", "2", "0", "true" },
        { true, 4, "3", "3", "0", "true" },
        { true, 1, "0", "3", "1", "true" },
    };
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        tev e = { (int64_t)i, false, bv_null(), seq[i].has_k, seq[i].k };
        push(&fs, s, &e);
        push(&fm, m, &e);
        push(&fn, n, &e);
        push(&fh, h, &e);
        assert_read(&fs, s, 100, seq[i].s);
        assert_read(&fm, m, 100, seq[i].m);
        assert_read(&fn, n, 100, seq[i].n);
        assert_read(&fh, h, 100, seq[i].h);
    }
    state_free(&fs, s);
    state_free(&fm, m);
    state_free(&fn, n);
    state_free(&fh, h);
    feature_release(&fs);
    feature_release(&fm);
    feature_release(&fn);
    feature_release(&fh);

    /* without where: streak = events, negative_streak = 0 */
    compile_ok(&fs, "{\"op\":\"streak\"}");
    compile_ok(&fn, "{\"op\":\"negative_streak\",\"params\":{\"field\":\"amount\"}}");
    s = state_new(&fs);
    n = state_new(&fn);
    for (int i = 0; i < 7; i++) {
        tev e = { i, false, bv_null(), false, 0 };
        push(&fs, s, &e);
        push(&fn, n, &e);
    }
    assert_read(&fs, s, 0, "7");
    assert_read(&fn, n, 0, "0");
    state_free(&fs, s);
    state_free(&fn, n);
    feature_release(&fs);
    feature_release(&fn);

    /* a where naming an unknown function never matches */
    compile_ok(&fs, "{\"op\":\"last_seen\",\"params\":{\"where\":\"nofn(k)\"}}");
    s = state_new(&fs);
    push_value(&fs, s, bv_i64(1), 5);
    assert_read(&fs, s, 9, "null");
    state_free(&fs, s);
    feature_release(&fs);
}

/* ------------------------------------------------------------ value handling */

static void test_values_and_coercion(void **state) {
    (void)state;
    feature f;
    void *st;
    json_t *list = json_loads("{\"b\":[1,2.5],\"a\":\"x\"}", 0, NULL);

    /* last_n keeps every non-null kind, lists/maps as JSON; null and missing skip */
    compile_ok(&f, "{\"op\":\"last_n\",\"params\":{\"field\":\"any\",\"n\":6}}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(1), 1);
    push_value(&f, st, bv_null(), 2);
    push_value(&f, st, bv_f64(2.0), 3);
    push_value(&f, st, bv_bool(false), 4);
    char buf[8] = "str";
    push_value(&f, st, bv_str(buf, 3), 5);
    memset(buf, 'X', sizeof buf);          /* the state holds a copy */
    push_value(&f, st, bv_from_json(list), 6);
    tev missing = { 7, false, bv_null(), true, 1 };
    push(&f, st, &missing);
    assert_read(&f, st, 9, "[1,2.0,false,\"str\",{\"a\":\"x\",\"b\":[1,2.5]}]");
    state_free(&f, st);
    feature_release(&f);

    /* f64 field: I64 values become F64 */
    compile_ok(&f, "{\"op\":\"first_n\",\"params\":{\"field\":\"amount\",\"n\":3}}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(7), 1);
    push_value(&f, st, bv_f64(7.5), 2);
    push_value(&f, st, bv_str("s", 1), 3);
    push_value(&f, st, bv_i64(8), 4);
    assert_read(&f, st, 9, "[7.0,7.5,\"s\"]");
    state_free(&f, st);
    feature_release(&f);

    /* i64 field: integral F64 values become I64, fractional ones stay */
    static const char *const raw_ops[] = { "last_n", "most_recent_n", "reservoir_sample" };
    for (size_t i = 0; i < 3; i++) {
        char spec[128];
        snprintf(spec, sizeof spec, "{\"op\":\"%s\",\"params\":{\"field\":\"qty\",\"n\":5,\"samples\":5}}", raw_ops[i]);
        compile_ok(&f, spec);
        st = state_new(&f);
        push_value(&f, st, bv_f64(3.0), 1);
        push_value(&f, st, bv_f64(2.5), 2);
        push_value(&f, st, bv_i64(4), 3);
        push_value(&f, st, bv_f64(-0.0), 4);
        assert_read(&f, st, 9, "[3,2.5,4,0]");
        state_free(&f, st);
        feature_release(&f);
    }
    compile_ok(&f, "{\"op\":\"lag\",\"params\":{\"field\":\"qty\",\"n\":2}}");
    st = state_new(&f);
    push_value(&f, st, bv_f64(3.0), 1);
    assert_read(&f, st, 9, "null");
    push_value(&f, st, bv_f64(2.5), 2);
    assert_read(&f, st, 9, "null");
    push_value(&f, st, bv_null(), 2);
    push_value(&f, st, bv_i64(4), 3);
    assert_read(&f, st, 9, "3");
    push_value(&f, st, bv_i64(5), 3);
    assert_read(&f, st, 9, "2.5");
    state_free(&f, st);
    feature_release(&f);

    /* numeric kinds ignore non-numbers */
    compile_ok(&f, "{\"op\":\"histogram\",\"params\":{\"field\":\"any\",\"buckets\":[0]}}");
    st = state_new(&f);
    push_value(&f, st, bv_str("-1", 2), 1);
    push_value(&f, st, bv_bool(true), 1);
    push_value(&f, st, bv_from_json(list), 1);
    push_value(&f, st, bv_i64(-1), 1);
    push_value(&f, st, bv_f64(0.0), 1);
    push_value(&f, st, bv_f64(NAN), 1);    /* NaN compares false: the last cell */
    assert_read(&f, st, 1, "{\"<0\":1,\">=0\":2}");
    state_free(&f, st);
    feature_release(&f);

    compile_ok(&f, "{\"op\":\"seasonal_deviation\",\"params\":{\"field\":\"any\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(1), 0);
    push_value(&f, st, bv_i64(3), 1);
    assert_read(&f, st, 1, "0.7071067811865475");
    push_value(&f, st, bv_str("9", 1), 2);
    push_value(&f, st, bv_bool(true), 3);
    assert_read(&f, st, 1, "0.7071067811865475");
    push_value(&f, st, bv_i64(5), 3600000);       /* a new hour: one value there */
    assert_read(&f, st, 1, "null");
    push_value(&f, st, bv_i64(5), 3600001);       /* two equal values: var 0 */
    assert_read(&f, st, 1, "null");
    state_free(&f, st);
    feature_release(&f);

    /* event_type_mix: Str/I64/Bool categories share text; F64 and lists ignored */
    compile_ok(&f, "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(5), 1);
    push_value(&f, st, bv_str("5", 1), 1);
    push_value(&f, st, bv_bool(true), 1);
    push_value(&f, st, bv_str("true", 4), 1);
    push_value(&f, st, bv_f64(5.0), 1);
    push_value(&f, st, bv_from_json(list), 1);
    push_value(&f, st, bv_str("\xc3\xa9\"", 3), 1);
    push_value(&f, st, bv_str("", 0), 1);
    push_value(&f, st, bv_str("", 0), 1);
    push_value(&f, st, bv_str("", 0), 1);
    assert_read(&f, st, 1, "{\"\":0.375,\"5\":0.25,\"true\":0.25,\"\xc3\xa9\\\"\":0.125}");
    state_free(&f, st);
    feature_release(&f);

    /* allowlist: others still count in the total; max_categories is then not applied */
    compile_ok(&f, "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\",\"categories\":[\"x\",\"y\"],\"max_categories\":1}}");
    st = state_new(&f);
    push_value(&f, st, bv_str("x", 1), 1);
    push_value(&f, st, bv_str("y", 1), 1);
    push_value(&f, st, bv_str("z", 1), 1);
    push_value(&f, st, bv_str("y", 1), 1);
    assert_read(&f, st, 1, "{\"x\":0.25,\"y\":0.5}");
    state_free(&f, st);
    feature_release(&f);
    /* an empty allowlist admits nothing; max_categories 0 keeps nothing */
    compile_ok(&f, "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\",\"categories\":[]}}");
    st = state_new(&f);
    push_value(&f, st, bv_str("x", 1), 1);
    assert_read(&f, st, 1, "{}");
    state_free(&f, st);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\",\"max_categories\":0}}");
    st = state_new(&f);
    push_value(&f, st, bv_str("x", 1), 1);
    assert_read(&f, st, 1, "{}");
    state_free(&f, st);
    feature_release(&f);

    /* query-time kinds clamp at 0 for a query before the event */
    compile_ok(&f, "{\"op\":\"age\"}");
    st = state_new(&f);
    push_value(&f, st, bv_null(), 1000);
    push_value(&f, st, bv_null(), 2000);
    assert_read(&f, st, 500, "0");
    assert_read(&f, st, 1000, "0");
    assert_read(&f, st, 2500, "1500");
    assert_read(&f, st, INT64_MAX, "9223372036854774807");
    state_free(&f, st);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"time_since\"}");
    st = state_new(&f);
    push_value(&f, st, bv_null(), -1000);
    assert_read(&f, st, INT64_MAX, "9223372036854775807");   /* saturates */
    assert_read(&f, st, INT64_MIN, "0");
    state_free(&f, st);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"first_seen_in_window\",\"params\":{\"window\":\"10ms\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_null(), 100);
    assert_read(&f, st, 99, "false");
    assert_read(&f, st, 100, "true");
    assert_read(&f, st, 109, "true");
    assert_read(&f, st, 110, "false");
    assert_read(&f, st, INT64_MIN, "false");
    push_value(&f, st, bv_null(), 50);            /* the latest match counts, even if older */
    assert_read(&f, st, 105, "false");
    assert_read(&f, st, 55, "true");
    state_free(&f, st);
    feature_release(&f);

    json_decref(list);
}

/* ------------------------------------------------------------ register errors */

static void test_bad_params(void **state) {
    (void)state;
    static const struct { const char *spec, *code; } cases[] = {
        /* n for first_n / last_n / lag / time_since_last_n: integer in [1, 1024] */
        { "{\"op\":\"first_n\",\"params\":{\"field\":\"amount\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"first_n\",\"params\":{\"field\":\"amount\",\"n\":0}}", "aggregation_unknown_field" },
        { "{\"op\":\"first_n\",\"params\":{\"field\":\"amount\",\"n\":1025}}", "aggregation_unknown_field" },
        { "{\"op\":\"first_n\",\"params\":{\"field\":\"amount\",\"n\":-1}}", "aggregation_unknown_field" },
        { "{\"op\":\"first_n\",\"params\":{\"field\":\"amount\",\"n\":\"5\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"first_n\",\"params\":{\"field\":\"amount\",\"n\":2.0}}", "aggregation_unknown_field" },
        { "{\"op\":\"last_n\",\"params\":{\"field\":\"amount\",\"n\":0}}", "aggregation_unknown_field" },
        { "{\"op\":\"last_n\",\"params\":{\"field\":\"amount\",\"n\":1025}}", "aggregation_unknown_field" },
        { "{\"op\":\"lag\",\"params\":{\"field\":\"amount\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"lag\",\"params\":{\"field\":\"amount\",\"n\":1025}}", "aggregation_unknown_field" },
        { "{\"op\":\"time_since_last_n\"}", "aggregation_unknown_field" },
        { "{\"op\":\"time_since_last_n\",\"params\":{\"n\":0}}", "aggregation_unknown_field" },
        { "{\"op\":\"time_since_last_n\",\"params\":{\"n\":1025}}", "aggregation_unknown_field" },
        /* field required for first_n / last_n / lag, and must exist */
        { "{\"op\":\"first_n\",\"params\":{\"n\":3}}", "aggregation_unknown_field" },
        { "{\"op\":\"last_n\",\"params\":{\"field\":\"nope\",\"n\":3}}", "aggregation_unknown_field" },
        { "{\"op\":\"lag\",\"params\":{\"field\":{\"expr\":\"amount\"},\"n\":1}}", "aggregation_unknown_field" },
        /* field is checked before n */
        { "{\"op\":\"lag\",\"params\":{\"field\":\"nope\",\"n\":0}}", "aggregation_unknown_field" },
        /* lifetime-only kinds reject any window, even forever */
        { "{\"op\":\"first_n\",\"params\":{\"field\":\"amount\",\"n\":3,\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"last_n\",\"params\":{\"field\":\"amount\",\"n\":3,\"window\":\"forever\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"lag\",\"params\":{\"field\":\"amount\",\"n\":3,\"window\":\"5m\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"first_seen\",\"params\":{\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"last_seen\",\"params\":{\"window\":\"forever\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"age\",\"params\":{\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"has_seen\",\"params\":{\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"time_since\",\"params\":{\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"time_since_last_n\",\"params\":{\"n\":2,\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"streak\",\"params\":{\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"max_streak\",\"params\":{\"window\":\"forever\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"negative_streak\",\"params\":{\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"histogram\",\"params\":{\"field\":\"amount\",\"buckets\":[1],\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"hour_of_day_histogram\",\"params\":{\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"dow_hour_histogram\",\"params\":{\"window\":\"7d\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"seasonal_deviation\",\"params\":{\"field\":\"amount\",\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"name\",\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"most_recent_n\",\"params\":{\"field\":\"name\",\"n\":3,\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"name\",\"samples\":3,\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"streak\",\"params\":{\"window\":5}}", "aggregation_invalid_window" },
        /* first_seen_in_window needs a finite, valid window */
        { "{\"op\":\"first_seen_in_window\"}", "aggregation_invalid_window" },
        { "{\"op\":\"first_seen_in_window\",\"params\":{}}", "aggregation_invalid_window" },
        { "{\"op\":\"first_seen_in_window\",\"params\":{\"window\":\"forever\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"first_seen_in_window\",\"params\":{\"window\":\"1w\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"first_seen_in_window\",\"params\":{\"window\":\"0s\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"first_seen_in_window\",\"params\":{\"window\":3600}}", "aggregation_invalid_window" },
        /* bloom_member */
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"window\":\"1h\"}}", "window_not_supported" },
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"window\":\"forever\"}}", "window_not_supported" },
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"fpr\":0}}", "invalid_bloom_fpr" },
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"fpr\":1}}", "invalid_bloom_fpr" },
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"fpr\":-0.5}}", "invalid_bloom_fpr" },
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"target_fpr\":1.5}}", "invalid_bloom_fpr" },
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"target_fpr\":0.0}}", "invalid_bloom_fpr" },
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"fpr\":\"0.1\"}}", "invalid_bloom_fpr" },
        /* target_fpr wins over fpr */
        { "{\"op\":\"bloom_member\",\"params\":{\"target_fpr\":2,\"fpr\":0.1}}", "invalid_bloom_fpr" },
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"nope\"}}", "aggregation_unknown_field" },
        /* field error (step 6) before the window (step 10) and fpr */
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"nope\",\"window\":\"1h\",\"fpr\":7}}", "aggregation_unknown_field" },
        /* window (step 10) before fpr */
        { "{\"op\":\"bloom_member\",\"params\":{\"window\":\"1h\",\"fpr\":7}}", "window_not_supported" },
        /* where */
        { "{\"op\":\"streak\",\"params\":{\"where\":\"(nope > 1)\"}}", "aggregation_invalid_where" },
        { "{\"op\":\"first_seen\",\"params\":{\"where\":\"(((\"}}", "aggregation_invalid_where" },
        { "{\"op\":\"has_seen\",\"params\":{\"where\":7}}", "aggregation_invalid_where" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_code(cases[i].spec, cases[i].code);

    static const char *const ok[] = {
        "{\"op\":\"first_n\",\"params\":{\"field\":\"amount\",\"n\":1}}",
        "{\"op\":\"first_n\",\"params\":{\"field\":\"amount\",\"n\":1024}}",
        "{\"op\":\"lag\",\"params\":{\"field\":\"any\",\"n\":1024}}",
        "{\"op\":\"time_since_last_n\",\"params\":{\"n\":1024}}",
        "{\"op\":\"streak\",\"params\":{\"window\":null}}",
        /* not checked at register time (feature_compile step 6): an unknown field never matches */
        "{\"op\":\"histogram\",\"params\":{\"field\":\"nope\",\"buckets\":[1]}}",
        "{\"op\":\"seasonal_deviation\",\"params\":{\"field\":\"nope\"}}",
        "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"nope\"}}",
        "{\"op\":\"most_recent_n\",\"params\":{\"field\":\"nope\"}}",
        "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"nope\"}}",
        /* not validated by the reference */
        "{\"op\":\"most_recent_n\",\"params\":{\"field\":\"any\",\"n\":0}}",
        "{\"op\":\"most_recent_n\",\"params\":{\"field\":\"any\",\"n\":5000}}",
        "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"any\",\"samples\":-4}}",
        "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\",\"max_categories\":-1,\"categories\":5}}",
        "{\"op\":\"bloom_member\"}",
        "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"fpr\":0.5,\"expected_n\":0}}",
        "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"fpr\":1e-300,\"capacity\":100000000000}}",
        "{\"op\":\"first_seen_in_window\",\"params\":{\"window\":\"30d\"}}",
        "{\"op\":\"first_seen_in_window\",\"params\":{\"window\":\"1ms\",\"field\":\"nope\"}}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        feature f;
        compile_ok(&f, ok[i]);
        assert_int_equal(f.window_ms, 0);      /* all lifetime states */
        void *st = state_new(&f);
        push_value(&f, st, bv_str("v", 1), 1);
        push_value(&f, st, bv_str("v", 1), 2);
        char *got = read_json(&f, st, 3);
        assert_true(strlen(got) > 0);
        free(got);
        state_free(&f, st);
        feature_release(&f);
    }

    /* parsed params */
    feature f;
    compile_ok(&f, "{\"op\":\"most_recent_n\",\"params\":{\"field\":\"any\"}}");
    assert_int_equal(f.p.n, 10);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"most_recent_n\",\"params\":{\"field\":\"any\",\"n\":0}}");
    assert_int_equal(f.p.n, 1);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"any\",\"k\":3}}");
    assert_int_equal(f.p.samples, 3);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"first_seen_in_window\",\"params\":{\"window\":\"5m\"}}");
    assert_int_equal(f.p.param_window_ms, 300000);
    assert_int_equal(f.window_ms, 0);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"bloom_member\",\"params\":{\"capacity\":50,\"fpr\":0.2}}");
    assert_int_equal(f.p.expected_n, 50);
    assert_true(f.p.fpr == 0.2);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\",\"categories\":[\"a\",1,\"b\"]}}");
    assert_int_equal(f.p.ncategories, 2);
    assert_string_equal(f.p.categories[1], "b");
    assert_int_equal(f.p.max_categories, 256);
    feature_release(&f);
}

/* ------------------------------------------------------------ labels and keys */

static void hist_case(const char *buckets, const double *vals, size_t n, const char *want) {
    char spec[256];
    snprintf(spec, sizeof spec, "{\"op\":\"histogram\",\"params\":{\"field\":\"amount\",\"buckets\":%s}}", buckets);
    feature f;
    compile_ok(&f, spec);
    void *st = state_new(&f);
    for (size_t i = 0; i < n; i++) push_value(&f, st, bv_f64(vals[i]), 1);
    assert_read(&f, st, 1, want);
    state_free(&f, st);
    feature_release(&f);
}

static void test_histogram_labels(void **state) {
    (void)state;
    static const double v1[] = { 5, 9.99, 10, 15, 19.99, 20, 35, 49.99, 50, 100 };
    hist_case("[10,20,50]", v1, 10, "{\"10-20\":3,\"20-50\":3,\"<10\":2,\">=50\":2}");
    /* integral reals print as integers, others as plain shortest decimals, unsorted
     * edges are taken as given, huge integral edges in full */
    static const double v2[] = { 0.05, 1, -3, 2, 1e21, 1e-8 };
    hist_case("[0.1,1e-7,1.5,-2.25,1e20,3.0]", v2, 6,
              "{\"-2.25-100000000000000000000\":1,\"0.0000001-1.5\":1,\"0.1-0.0000001\":0,"
              "\"1.5--2.25\":0,\"100000000000000000000-3\":0,\"<0.1\":3,\">=3\":1}");
    /* -0.0 prints as 0; tiny and long fractions keep all their digits */
    static const double v3[] = { -1, 0 };
    hist_case("[-0.0,0.30000000000000004,1.5e-10,123456.789]", v3, 2,
              "{\"0-0.30000000000000004\":1,\"0.00000000015-123456.789\":0,"
              "\"0.30000000000000004-0.00000000015\":0,\"<0\":1,\">=123456.789\":0}");
    /* repeated edges: the later cell of a shared label wins (and never counts) */
    static const double v4[] = { 1.5, 1.5, 0.5, 7 };
    hist_case("[1,2,1,2]", v4, 4, "{\"1-2\":0,\"2-1\":0,\"<1\":1,\">=2\":1}");
    /* -9007199254740993 is not representable: the edge is -9007199254740992; 2^63 is
     * past the i64 range and prints as its shortest digits padded (as Rust would) */
    static const double v5[] = { -1e300, 9.3e18 };
    hist_case("[-9007199254740993, 9223372036854775807]", v5, 2,
              "{\"-9007199254740992-9223372036854776000\":0,\"<-9007199254740992\":1,\">=9223372036854776000\":1}");
}

static void test_time_buckets(void **state) {
    (void)state;
    feature fd, fh;
    compile_ok(&fd, "{\"op\":\"dow_hour_histogram\"}");
    compile_ok(&fh, "{\"op\":\"hour_of_day_histogram\"}");
    void *d = state_new(&fd), *h = state_new(&fh);
    /* 2024-01-01T00:00Z was a Monday; -1 ms is Wed 1969-12-31 23:59:59.999; 0 is Thu 00h;
     * 2024-03-03T13:30Z a Sunday; 1968-12-31T23:59:59.999Z a Tuesday */
    int64_t ts[] = { 1704067200000LL, -1, 0, 1709472600000LL, 1709472600000LL, -86400000LL * 365 - 1 };
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        push_value(&fd, d, bv_null(), ts[i]);
        push_value(&fh, h, bv_null(), ts[i]);
    }
    char *got = read_json(&fd, d, 0);
    json_t *j = json_loads(got, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 168);
    assert_int_equal(json_integer_value(json_object_get(j, "Mon-00")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "Wed-23")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "Tue-23")), 1);   /* 1968-12-31 */
    assert_int_equal(json_integer_value(json_object_get(j, "Thu-00")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "Sun-13")), 2);
    /* keys come out in ascending byte order */
    assert_true(strncmp(got, "{\"Fri-00\":0,\"Fri-01\":0", 22) == 0);
    const char *last = strstr(got, "\"Wed-23\":1}");
    assert_non_null(last);
    assert_string_equal(last, "\"Wed-23\":1}");
    json_decref(j);
    free(got);
    assert_read(&fh, h, 0, "[2,0,0,0,0,0,0,0,0,0,0,0,0,2,0,0,0,0,0,0,0,0,0,2]");
    state_free(&fd, d);
    state_free(&fh, h);
    feature_release(&fd);
    feature_release(&fh);
}

/* ------------------------------------------------------------ reservoir */

static void test_reservoir(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"qty\",\"samples\":3}}");
    void *st = state_new(&f);
    /* the first K values fill the slots in order */
    for (int i = 1; i <= 3; i++) push_value(&f, st, bv_i64(i), i);
    assert_read(&f, st, 9, "[1,2,3]");
    /* item 4: seed = 4 ^ A ^ B, one xorshift step, j = r mod 4 (computed by hand below) */
    uint64_t s = 4 ^ 0xA0B1C2D3E4F50617ull ^ 0x9E3779B97F4A7C15ull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    push_value(&f, st, bv_i64(4), 4);
    char want[32];
    int slots[3] = { 1, 2, 3 };
    if (s % 4 < 3) slots[s % 4] = 4;
    snprintf(want, sizeof want, "[%d,%d,%d]", slots[0], slots[1], slots[2]);
    assert_read(&f, st, 9, want);
    /* deterministic: the same sequence gives the same sample; roughly uniform over many
     * values (each of 10 deciles of 10,000 values holds some of 300 samples) */
    state_free(&f, st);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"qty\",\"samples\":300}}");
    void *a = state_new(&f), *b = state_new(&f);
    for (int i = 0; i < 10000; i++) {
        push_value(&f, a, bv_i64(i), i);
        push_value(&f, b, bv_i64(i), i);
    }
    char *ra = read_json(&f, a, 0), *rb = read_json(&f, b, 0);
    assert_string_equal(ra, rb);
    json_t *j = json_loads(ra, 0, NULL);
    assert_int_equal(json_array_size(j), 300);
    int dec[10] = { 0 };
    for (size_t i = 0; i < 300; i++) dec[json_integer_value(json_array_get(j, i)) / 1000]++;
    for (int i = 0; i < 10; i++) assert_true(dec[i] >= 10 && dec[i] <= 60);
    json_decref(j);
    free(ra);
    free(rb);
    state_free(&f, a);
    state_free(&f, b);
    feature_release(&f);
}

/* ------------------------------------------------------------ bloom */

static void test_bloom_semantics(void **state) {
    (void)state;
    feature f;
    compile_ok(&f, "{\"op\":\"bloom_member\",\"params\":{\"field\":\"any\"}}");
    void *st = state_new(&f);
    json_t *list = json_loads("[1]", 0, NULL);
    static const struct { int kind; const char *s; int64_t i; const char *want; } seq[] = {
        { 0, "a", 0, "false" }, { 0, "b", 0, "false" }, { 0, "a", 0, "true" },
        { 2, NULL, 0, "true" },                          /* null: unchanged */
        { 3, NULL, 0, "true" },                          /* list: ignored */
        { 0, "c", 0, "false" }, { 3, NULL, 0, "false" },
        { 1, NULL, 5, "false" }, { 0, "5", 0, "false" },  /* 5 and "5" differ */
        { 4, NULL, 5, "false" },                          /* 5.0 is another value here */
        { 1, NULL, 5, "true" }, { 0, "c", 0, "true" },
    };
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        bv_value v;
        switch (seq[i].kind) {
        case 0: v = bv_str(seq[i].s, strlen(seq[i].s)); break;
        case 1: v = bv_i64(seq[i].i); break;
        case 2: v = bv_null(); break;
        case 3: v = bv_from_json(list); break;
        default: v = bv_f64((double)seq[i].i); break;
        }
        push_value(&f, st, v, (int64_t)i);
        assert_read(&f, st, 99, seq[i].want);
    }
    state_free(&f, st);
    feature_release(&f);
    json_decref(list);

    /* an f64 field coerces: 5 and 5.0 are one value; i64 field: 3.0 and 3 */
    compile_ok(&f, "{\"op\":\"bloom_member\",\"params\":{\"field\":\"amount\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(5), 1);
    assert_read(&f, st, 1, "false");
    push_value(&f, st, bv_f64(5.0), 2);
    assert_read(&f, st, 2, "true");
    state_free(&f, st);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"bloom_member\",\"params\":{\"field\":\"qty\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_f64(3.0), 1);
    push_value(&f, st, bv_i64(3), 2);
    assert_read(&f, st, 2, "true");
    state_free(&f, st);
    feature_release(&f);

    /* no field: never updates */
    compile_ok(&f, "{\"op\":\"bloom_member\"}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(1), 1);
    push_value(&f, st, bv_i64(1), 2);
    assert_read(&f, st, 2, "false");
    state_free(&f, st);
    feature_release(&f);

    /* sizing: 1024 / 1% -> 9856 bits (154 words): the snapshot carries them */
    compile_ok(&f, "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\"}}");
    st = state_new(&f);
    bv_buf b;
    bv_buf_init(&b);
    feature_encode(&f, st, &b);
    assert_int_equal(b.len, 8 + 1 + 4);                /* no bits before a value */
    bv_buf_free(&b);
    push_value(&f, st, bv_str("x", 1), 1);
    feature_encode(&f, st, &b);
    assert_int_equal(b.len, 8 + 1 + 4 + 154 * 8);
    /* exactly k = 7 bits set by one value */
    int bits = 0;
    for (size_t i = 13; i < b.len; i++) bits += __builtin_popcount((unsigned char)b.data[i]);
    assert_int_equal(bits, 7);
    bv_buf_free(&b);
    state_free(&f, st);
    feature_release(&f);
    /* a huge expected_n is capped (1 MiB of bits) */
    compile_ok(&f, "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"expected_n\":1000000000000}}");
    st = state_new(&f);
    push_value(&f, st, bv_str("x", 1), 1);
    bv_buf_init(&b);
    feature_encode(&f, st, &b);
    assert_int_equal(b.len, 13 + (1u << 20));
    bv_buf_free(&b);
    state_free(&f, st);
    feature_release(&f);
}

/* Probe without inserting: copy the filter (snapshot), add the probe to the copy. */
static bool bloom_probe(const feature *f, const bv_buf *snap, const char *s) {
    void *st = state_new(f);
    const uint8_t *p = (const uint8_t *)snap->data;
    assert_int_equal(feature_decode(f, st, &p, p + snap->len), 0);
    push_value(f, st, bv_str(s, strlen(s)), 1);
    char *got = read_json(f, st, 1);
    bool hit = strcmp(got, "true") == 0;
    free(got);
    state_free(f, st);
    return hit;
}

static void fpr_case(int64_t n, double fpr, int probes) {
    char spec[160];
    snprintf(spec, sizeof spec, "{\"op\":\"bloom_member\",\"params\":{\"field\":\"name\",\"expected_n\":%lld,\"target_fpr\":%g}}",
             (long long)n, fpr);
    feature f;
    compile_ok(&f, spec);
    void *st = state_new(&f);
    uint64_t s = 0x1234567 + (uint64_t)n;
    char buf[48];
    int self_hits = 0;
    for (int64_t i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "in-%llx-%lld", (unsigned long long)rng_next(&s), (long long)i);
        push_value(&f, st, bv_str(buf, strlen(buf)), i);
        char *got = read_json(&f, st, i);
        self_hits += strcmp(got, "true") == 0;     /* distinct values: false positives */
        free(got);
    }
    bv_buf snap;
    bv_buf_init(&snap);
    feature_encode(&f, st, &snap);
    /* no false negatives */
    s = 0x1234567 + (uint64_t)n;
    for (int64_t i = 0; i < n; i += n / 50) {
        uint64_t x = 0;
        for (int64_t j = 0; j <= i; j++) x = rng_next(&s);
        snprintf(buf, sizeof buf, "in-%llx-%lld", (unsigned long long)x, (long long)i);
        assert_true(bloom_probe(&f, &snap, buf));
        s = 0x1234567 + (uint64_t)n;
    }
    int fp = 0;
    for (int i = 0; i < probes; i++) {
        snprintf(buf, sizeof buf, "out-%llx-%d", (unsigned long long)rng_next(&s), i);
        fp += bloom_probe(&f, &snap, buf);
    }
    double rate = (double)fp / probes;
    fprintf(stderr, "bloom n=%lld p=%g: fpr %.5f at capacity, %d self-hits while filling\n",
            (long long)n, fpr, rate, self_hits);
    assert_true(rate <= 2 * fpr);
    assert_true(self_hits <= 2 * fpr * (double)n);
    bv_buf_free(&snap);
    state_free(&f, st);
    feature_release(&f);
}

static void test_bloom_fpr(void **state) {
    (void)state;
    fpr_case(10000, 0.01, 100000);
    fpr_case(1024, 0.01, 50000);
    fpr_case(2000, 0.001, 100000);
}

/* ------------------------------------------------------------ snapshots */

static void roundtrip_one(const char *spec, size_t nevents, uint64_t seed) {
    feature f;
    compile_ok(&f, spec);
    void *st = state_new(&f);
    tev *ev = malloc((nevents + 20) * sizeof *ev);
    gen_stream(ev, nevents + 20, seed, 1700000000000LL);
    for (size_t i = 0; i < nevents; i++) push(&f, st, &ev[i]);
    int64_t q = nevents ? ev[nevents - 1].t + 1000 : 0;
    bv_buf enc, enc2;
    bv_buf_init(&enc);
    bv_buf_init(&enc2);
    feature_encode(&f, st, &enc);
    /* decode into a fresh state: same bytes again, same reads, and both keep working
     * identically */
    void *st2 = state_new(&f);
    const uint8_t *p = (const uint8_t *)enc.data, *end = p + enc.len;
    if (feature_decode(&f, st2, &p, end) != 0) fail_msg("%s: decode failed", spec);
    assert_ptr_equal(p, end);
    feature_encode(&f, st2, &enc2);
    assert_int_equal(enc.len, enc2.len);
    assert_memory_equal(enc.data, enc2.data, enc.len);
    for (size_t i = nevents; i < nevents + 20; i++) {
        char *r1 = read_json(&f, st, q), *r2 = read_json(&f, st2, q);
        if (strcmp(r1, r2) != 0) fail_msg("%s: %s != %s after decode", spec, r1, r2);
        free(r1);
        free(r2);
        push(&f, st, &ev[i]);
        push(&f, st2, &ev[i]);
        q = ev[i].t + 7;
    }
    state_free(&f, st2);
    bv_buf_free(&enc2);
    /* every strict prefix is rejected, leaves a destroyable state, never over-reads */
    for (size_t cut = 0; cut < enc.len; cut += enc.len > 3000 ? 97 : 1) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, enc.data, cut);
        void *st3 = state_new(&f);
        push(&f, st3, &ev[0]);                    /* a state holding data */
        const uint8_t *pp = copy;
        if (feature_decode(&f, st3, &pp, copy + cut) == 0) fail_msg("%s: prefix %zu/%zu accepted", spec, cut, enc.len);
        state_free(&f, st3);
        free(copy);
    }
    /* decoding over a state that already holds data replaces it without leaking */
    p = (const uint8_t *)enc.data;
    assert_int_equal(feature_decode(&f, st, &p, end), 0);
    bv_buf_free(&enc);
    free(ev);
    state_free(&f, st);
    feature_release(&f);
}

static const char *const RT_SPECS[] = {
    "{\"op\":\"bloom_member\",\"params\":{\"field\":\"any\",\"expected_n\":100}}",
    "{\"op\":\"first_n\",\"params\":{\"field\":\"any\",\"n\":5}}",
    "{\"op\":\"last_n\",\"params\":{\"field\":\"any\",\"n\":4}}",
    "{\"op\":\"last_n\",\"params\":{\"field\":\"amount\",\"n\":1024}}",
    "{\"op\":\"lag\",\"params\":{\"field\":\"any\",\"n\":2}}",
    "{\"op\":\"first_seen\"}",
    "{\"op\":\"last_seen\",\"params\":{\"where\":\"(k > 3)\"}}",
    "{\"op\":\"age\"}",
    "{\"op\":\"has_seen\"}",
    "{\"op\":\"time_since\"}",
    "{\"op\":\"time_since_last_n\",\"params\":{\"n\":3}}",
    "{\"op\":\"streak\",\"params\":{\"where\":\"(k > 3)\"}}",
    "{\"op\":\"max_streak\",\"params\":{\"where\":\"(k > 3)\"}}",
    "{\"op\":\"negative_streak\",\"params\":{\"where\":\"(k > 3)\"}}",
    "{\"op\":\"first_seen_in_window\",\"params\":{\"window\":\"1h\"}}",
    "{\"op\":\"histogram\",\"params\":{\"field\":\"any\",\"buckets\":[-5,0,2.5,10]}}",
    "{\"op\":\"hour_of_day_histogram\"}",
    "{\"op\":\"dow_hour_histogram\"}",
    "{\"op\":\"seasonal_deviation\",\"params\":{\"field\":\"any\"}}",
    "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\"}}",
    "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\",\"categories\":[\"a\",\"5\",\"zz\"]}}",
    "{\"op\":\"most_recent_n\",\"params\":{\"field\":\"any\",\"n\":3}}",
    "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"any\",\"samples\":4}}",
};

static void test_roundtrip(void **state) {
    (void)state;
    static const size_t counts[] = { 0, 1, 2, 7, 200 };
    for (size_t i = 0; i < sizeof RT_SPECS / sizeof RT_SPECS[0]; i++)
        for (size_t j = 0; j < sizeof counts / sizeof counts[0]; j++) roundtrip_one(RT_SPECS[i], counts[j], 31 * i + j);
}

static void test_decode_garbage(void **state) {
    (void)state;
    static const struct { const char *spec, *hex; } bad[] = {
        { "{\"op\":\"streak\"}", "ffffffffffffffff" },                        /* negative */
        { "{\"op\":\"negative_streak\"}", "00000000000000" },                 /* short */
        { "{\"op\":\"max_streak\"}", "0500000000000000" "0300000000000000" }, /* cur > best */
        { "{\"op\":\"first_seen\"}", "02" "0000000000000000" },               /* has = 2 */
        { "{\"op\":\"age\"}", "00" "0100000000000000" },                      /* time without has */
        { "{\"op\":\"first_n\",\"params\":{\"field\":\"any\",\"n\":1}}", "02000000" "0201" "0200" }, /* > n */
        { "{\"op\":\"last_n\",\"params\":{\"field\":\"any\",\"n\":2}}", "01000000" "00" },  /* null value */
        { "{\"op\":\"last_n\",\"params\":{\"field\":\"any\",\"n\":2}}", "01000000" "09" },  /* bad kind */
        { "{\"op\":\"lag\",\"params\":{\"field\":\"any\",\"n\":1}}", "03000000" "0201" "0201" "0201" }, /* > n+1 */
        { "{\"op\":\"most_recent_n\",\"params\":{\"field\":\"any\",\"n\":2}}", "ffffffff" },
        { "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"any\",\"samples\":2}}",
          "0300000000000000" "01000000" "0201" },                             /* kept != min(seen, K) */
        { "{\"op\":\"reservoir_sample\",\"params\":{\"field\":\"any\",\"samples\":2}}",
          "0000000000000000" "01000000" "0201" },
        { "{\"op\":\"time_since_last_n\",\"params\":{\"n\":1}}", "02000000" "0000000000000000" "0000000000000000" },
        { "{\"op\":\"histogram\",\"params\":{\"field\":\"any\",\"buckets\":[1]}}", "03000000" "000000000000000000000000000000000000000000000000" },
        { "{\"op\":\"dow_hour_histogram\"}", "02" },
        { "{\"op\":\"dow_hour_histogram\"}", "01" "00000000" },
        { "{\"op\":\"seasonal_deviation\",\"params\":{\"field\":\"any\"}}", "01" "0000000000000000" "18" },  /* hour 24 */
        { "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\"}}",
          "0200000000000000" "02000000" "01000000" "61" "0100000000000000" "01000000" "61" "0100000000000000" }, /* dup */
        { "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\"}}",
          "0100000000000000" "01000000" "01000000" "61" "0200000000000000" },  /* counts > total */
        { "{\"op\":\"event_type_mix\",\"params\":{\"field\":\"any\",\"categories\":[\"b\"]}}",
          "0100000000000000" "01000000" "01000000" "61" "0100000000000000" },  /* not allowed */
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"any\"}}", "0000000000000000" "01" "00000000" },  /* seen, no inserts */
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"any\"}}", "0100000000000000" "00" "01000000" "0000000000000000" }, /* wrong size */
        { "{\"op\":\"bloom_member\",\"params\":{\"field\":\"any\"}}", "0100000000000000" "00" "00000000" },  /* inserts without bits */
        { "{\"op\":\"hour_of_day_histogram\"}", "00" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        feature f;
        compile_ok(&f, bad[i].spec);
        size_t n = strlen(bad[i].hex) / 2;
        uint8_t *b = malloc(n + 1);
        for (size_t j = 0; j < n; j++) {
            unsigned x;
            sscanf(bad[i].hex + 2 * j, "%2x", &x);
            b[j] = (uint8_t)x;
        }
        void *st = state_new(&f);
        const uint8_t *p = b;
        if (feature_decode(&f, st, &p, b + n) == 0) fail_msg("garbage %zu (%s) accepted", i, bad[i].spec);
        state_free(&f, st);
        free(b);
        feature_release(&f);
    }
}

static int setup(void **state) {
    (void)state;
    g_list = json_loads("[1,\"x\",2.5]", 0, NULL);
    g_map = json_loads("{\"z\":1,\"a\":[true]}", 0, NULL);
    return g_list && g_map ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    json_decref(g_list);
    json_decref(g_map);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_empty_values),
        cmocka_unit_test(test_where_streaks),
        cmocka_unit_test(test_values_and_coercion),
        cmocka_unit_test(test_histogram_labels),
        cmocka_unit_test(test_time_buckets),
        cmocka_unit_test(test_reservoir),
        cmocka_unit_test(test_bloom_semantics),
        cmocka_unit_test(test_bruteforce),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_decode_garbage),
        cmocka_unit_test(test_bloom_fpr),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
