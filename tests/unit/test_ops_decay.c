/*
 * test_ops_decay.c - the decay, velocity/statistics and geo operator kinds
 * (ops/op_<kind>.c):
 * ewma/ema, ewvar, ew_zscore, decayed_sum, decayed_count, twa, rate_of_change,
 * inter_arrival_stats, burst_count, delta_from_prev, trend, trend_residual,
 * outlier_count, value_change_count, z_score, geo_velocity, geo_distance, geo_spread,
 * distance_from_home.
 *
 * Everything goes through the public feature API (feature_compile, feature_state_init,
 * feature_update, feature_read, feature_encode/decode). Each kind is checked against a
 * brute-force reference computed from the raw event list: closed forms where one exists
 * (decayed sums as sum of x*e^(-lambda(q-t)), OLS by two passes in long double, z-scores
 * and spreads by two passes), a replay of the spec's recurrence otherwise (EW mean and
 * variance), lifetime and windowed (queries inside buckets and exactly at bucket edges),
 * with and without `where`, streams holding nulls, missing fields and wrong-type values.
 * Plus hand-computed examples, register-time error codes, empty values, read-time decay
 * and snapshot round trips (every strict prefix rejected, garbage rejected).
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

#define PATH "nodes[1].T.ops[0].agg.feat"
#define T0 1700000000000LL

/* ------------------------------------------------------------------ helpers */

static void mk_schema(bv_schema *s) {
    bv_schema_init(s);
    bv_schema_set(s, "amount", WT_F64);
    bv_schema_set(s, "qty", WT_I64);
    bv_schema_set(s, "k", WT_I64);
    bv_schema_set(s, "name", WT_STR);
    bv_schema_set(s, "any", WT_JSON);
    bv_schema_set(s, "lat", WT_F64);
    bv_schema_set(s, "lon", WT_F64);
    bv_schema_set(s, "plat", WT_F64);
    bv_schema_set(s, "plon", WT_F64);
}

#include "feature_harness.h"

/* Reads a number (or null -> NAN); fails on anything else. */
static double read_num(const feature *f, const void *st, int64_t q) {
    char *got = read_json(f, st, q);
    double v = NAN;
    if (strcmp(got, "null") != 0) {
        char *e;
        v = strtod(got, &e);
        if (*e) fail_msg("op %s: not a number: %s", f->op_name, got);
    }
    free(got);
    return v;
}

/* Relative to want; absolute (rtol) when want is 0. */
static void assert_close(double got, double want, double rtol) {
    if (isnan(want) && isnan(got)) return;
    double tol = want == 0 ? rtol : rtol * fabs(want);
    if (!(fabs(got - want) <= tol)) fail_msg("got %.17g want %.17g", got, want);
}

/* One test event: `amount` (under the feature's field), k (for where), a point. */
typedef struct tev {
    int64_t t;
    bool has_amount;
    bv_value amount;
    int64_t k;
    bool has_geo;
    bv_value lat, lon;
} tev;

static void push_ev(const feature *f, void *st, const tev *e, op_stats *stats) {
    bv_field fields[5];
    size_t n = 0;
    const char *fname = f->field ? f->field : "amount";
    const char *latn = f->p.lat_field ? f->p.lat_field : "lat";
    const char *lonn = f->p.lon_field ? f->p.lon_field : "lon";
    if (e->has_amount) fields[n++] = (bv_field){ fname, strlen(fname), e->amount };
    fields[n++] = (bv_field){ "k", 1, bv_i64(e->k) };
    if (e->has_geo) {
        fields[n++] = (bv_field){ latn, strlen(latn), e->lat };
        fields[n++] = (bv_field){ lonn, strlen(lonn), e->lon };
    }
    bv_row row = { fields, n, 0 };
    expr_arena arena;
    expr_arena_reset(&arena);
    feature_update(f, st, &row, e->t, &arena, stats);
}

static void push_value(const feature *f, void *st, bv_value v, int64_t t) {
    tev e = { t, true, v, 9, false, bv_null(), bv_null() };
    push_ev(f, st, &e, NULL);
}

static void push_point(const feature *f, void *st, double lat, double lon, int64_t t) {
    tev e = { t, false, bv_null(), 9, true, bv_f64(lat), bv_f64(lon) };
    push_ev(f, st, &e, NULL);
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) / 9007199254740992.0; }

static const char *const WORDS[] = { "a", "b", "zz" };

/* A random stream: amounts are I64, F64 (multiples of 1/8), null, missing or a string;
 * points are F64/I64 pairs, sometimes missing or a string. Times are non-decreasing
 * with same-ms repeats (gap 0..max_gap). */
static void gen_stream(tev *ev, size_t n, uint64_t seed, int64_t max_gap) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    int64_t t = T0;
    for (size_t i = 0; i < n; i++) {
        tev *e = &ev[i];
        uint64_t g = rng_next(&s) % 10;
        t += g < 2 ? 0 : (int64_t)(rng_next(&s) % (uint64_t)(max_gap + 1));
        e->t = t;
        e->k = (int64_t)(rng_next(&s) % 10);
        unsigned r = (unsigned)(rng_next(&s) % 100);
        e->has_amount = true;
        if (r < 40) e->amount = bv_i64((int64_t)(rng_next(&s) % 41) - 20);
        else if (r < 80) e->amount = bv_f64((double)(int64_t)(rng_next(&s) % 161) / 8.0 - 10.0);
        else if (r < 86) e->amount = bv_null();
        else if (r < 93) e->has_amount = false;
        else {
            const char *w = WORDS[rng_next(&s) % 3];
            e->amount = bv_str(w, strlen(w));
        }
        unsigned gr = (unsigned)(rng_next(&s) % 100);
        e->has_geo = gr < 90;
        e->lat = bv_f64(48.0 + rng_unit(&s) * 2.0);
        e->lon = gr < 20 ? bv_i64((int64_t)(rng_next(&s) % 5)) : bv_f64(2.0 + rng_unit(&s) * 3.0);
        if (gr >= 85 && gr < 90) e->lat = bv_str("x", 1);
    }
}

/* ------------------------------------------------------------ brute force */

typedef struct bctx {
    const tev *ev;            /* the events the op should see (window-selected) */
    size_t n;
    const tev *all;           /* every event so far (burst/outlier windows) */
    size_t nall;
    bool use_where;           /* where = (k > 3) */
    int64_t q;
    int64_t W;                /* window (0 = lifetime) */
    int64_t half_life, sub_window, samples;
    double sigma;
} bctx;

static bool b_matched(const bctx *c, const tev *e) { return !c->use_where || e->k > 3; }

static bool b_num(const bctx *c, const tev *e, double *x) {
    return b_matched(c, e) && e->has_amount && bv_as_f64(&e->amount, x);
}

/* Numeric (x, t) of the selected events. Returns the count; arrays hold c->n. */
static size_t b_series(const bctx *c, double *x, int64_t *t) {
    size_t m = 0;
    for (size_t i = 0; i < c->n; i++)
        if (b_num(c, &c->ev[i], &x[m])) t[m++] = c->ev[i].t;
    return m;
}

#define SERIES(c)                                                                  \
    double *X = malloc(((c)->n + 1) * sizeof *X);                                  \
    int64_t *TT = malloc(((c)->n + 1) * sizeof *TT);                               \
    size_t M = b_series((c), X, TT)
#define SERIES_END() do { free(X); free(TT); } while (0)

static double lambda_of(const bctx *c) { return M_LN2 / (double)c->half_life; }

/* Replay of the EW mean recurrence (ops/op_ewma.c). */
static void b_ewma(const bctx *c, jsonw *w) {
    SERIES(c);
    double v = 0, lam = lambda_of(c);
    int64_t lt = 0;
    for (size_t i = 0; i < M; i++) {
        if (i == 0) { v = X[0]; lt = TT[0]; continue; }
        if (TT[i] > lt) {
            double a = 1.0 - exp(-lam * (double)(TT[i] - lt));
            v = a * X[i] + (1.0 - a) * v;
            lt = TT[i];
        } else {
            v = 0.5 * X[i] + 0.5 * v;
        }
    }
    if (M) jsonw_f64(w, v); else jsonw_null(w);
    SERIES_END();
}

static void ew_replay(const bctx *c, size_t *m, double *mean, double *m2, double *last) {
    SERIES(c);
    double lam = lambda_of(c);
    int64_t lt = 0;
    for (size_t i = 0; i < M; i++) {
        if (i == 0) { *mean = X[0]; *m2 = 0; lt = TT[0]; *last = X[0]; continue; }
        double a = TT[i] > lt ? 1.0 - exp(-lam * (double)(TT[i] - lt)) : 0.0;
        double d = X[i] - *mean;
        *mean += a * d;
        *m2 = (1 - a) * *m2 + a * d * (X[i] - *mean);
        if (a > 0) lt = TT[i];
        *last = X[i];
    }
    *m = M;
    SERIES_END();
}

static void b_ewvar(const bctx *c, jsonw *w) {
    size_t m;
    double mean = 0, m2 = 0, last = 0;
    ew_replay(c, &m, &mean, &m2, &last);
    if (m) jsonw_f64(w, m2 > 0 ? m2 : 0.0); else jsonw_null(w);
}

static void b_ew_zscore(const bctx *c, jsonw *w) {
    size_t m;
    double mean = 0, m2 = 0, last = 0;
    ew_replay(c, &m, &mean, &m2, &last);
    if (m && m2 > 0) jsonw_f64(w, (last - mean) / sqrt(m2)); else jsonw_null(w);
}

/* Closed form: sum of x_i * e^(-lambda (q - t_i)) (times are non-decreasing). */
static void b_decayed_sum(const bctx *c, jsonw *w) {
    SERIES(c);
    long double s = 0;
    for (size_t i = 0; i < M; i++) s += (long double)X[i] * expl(-(long double)lambda_of(c) * (long double)(c->q - TT[i]));
    if (M) jsonw_f64(w, (double)s); else jsonw_null(w);
    SERIES_END();
}

static void b_decayed_count(const bctx *c, jsonw *w) {
    long double s = 0;
    size_t m = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!b_matched(c, &c->ev[i])) continue;
        s += expl(-(long double)lambda_of(c) * (long double)(c->q - c->ev[i].t));
        m++;
    }
    if (m) jsonw_f64(w, (double)s); else jsonw_null(w);
}

static void b_twa(const bctx *c, jsonw *w) {
    SERIES(c);
    double svdt = 0, sdt = 0;
    for (size_t i = 1; i < M; i++) {
        int64_t dt = TT[i] - TT[i - 1];
        if (dt > 0) { svdt += X[i - 1] * (double)dt; sdt += (double)dt; }
    }
    if (!M) jsonw_null(w);
    else if (sdt > 0) jsonw_f64(w, svdt / sdt);
    else jsonw_f64(w, X[M - 1]);
    SERIES_END();
}

/* The last consecutive pair with a positive time step. */
static void b_rate_of_change(const bctx *c, jsonw *w) {
    SERIES(c);
    size_t i = M;
    while (i >= 2 && TT[i - 1] == TT[i - 2]) i--;
    if (i >= 2) jsonw_f64(w, (X[i - 1] - X[i - 2]) / (double)(TT[i - 1] - TT[i - 2]));
    else jsonw_null(w);
    SERIES_END();
}

static void b_inter_arrival(const bctx *c, jsonw *w) {
    int64_t first = 0, last = 0;
    size_t m = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!b_matched(c, &c->ev[i])) continue;
        if (!m) first = c->ev[i].t;
        last = c->ev[i].t;
        m++;
    }
    if (m >= 2) jsonw_f64(w, (double)(last - first) / (double)(m - 1)); else jsonw_null(w);
}

static int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && a < 0); }

static int64_t slot64(int64_t e, int64_t S) { return ((e / S) % 64 + 64) % 64; }

/* Counts per sub-window; lifetime: the largest; windowed: the largest among the
 * sub-windows [e, e+S) overlapping (q-W, q] that the 64-slot ring still holds (no later
 * event fell in another sub-window of the same slot). */
static void b_burst(const bctx *c, jsonw *w) {
    int64_t best = 0, S = c->sub_window;
    for (size_t i = 0; i < c->nall; i++) {
        if (!b_matched(c, &c->all[i])) continue;
        int64_t e = floor_div(c->all[i].t, S) * S;
        if (c->W && !(e <= c->q && e + S > c->q - c->W)) continue;
        bool recycled = false;
        for (size_t j = i + 1; j < c->nall && c->W && !recycled; j++) {
            int64_t e2 = floor_div(c->all[j].t, S) * S;
            recycled = b_matched(c, &c->all[j]) && e2 != e && slot64(e2, S) == slot64(e, S);
        }
        if (recycled) continue;
        int64_t cnt = 0;
        for (size_t j = 0; j < c->nall; j++)
            cnt += b_matched(c, &c->all[j]) && floor_div(c->all[j].t, S) * S == e;
        if (cnt > best) best = cnt;
    }
    jsonw_i64(w, best);
}

static void b_delta(const bctx *c, jsonw *w) {
    SERIES(c);
    if (M >= 2) jsonw_f64(w, X[M - 1] - X[M - 2]); else jsonw_null(w);
    SERIES_END();
}

/* Two-pass OLS in long double. */
static bool ols(const double *x, const int64_t *t, size_t m, long double *slope, long double *mx, long double *my) {
    if (m < 2) return false;
    long double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t i = 0; i < m; i++) { sx += (long double)(t[i] - t[0]); sy += x[i]; }
    *mx = sx / m;
    *my = sy / m;
    for (size_t i = 0; i < m; i++) {
        long double dx = (long double)(t[i] - t[0]) - *mx;
        sxx += dx * dx;
        sxy += dx * ((long double)x[i] - *my);
    }
    if (sxx == 0) return false;
    *slope = sxy / sxx;
    return true;               /* *mx is relative to t[0] */
}

static void b_trend(const bctx *c, jsonw *w) {
    SERIES(c);
    long double s, mx, my;
    if (ols(X, TT, M, &s, &mx, &my)) jsonw_f64(w, (double)s); else jsonw_null(w);
    SERIES_END();
}

static void b_trend_residual(const bctx *c, jsonw *w) {
    SERIES(c);
    long double s, mx, my;
    if (ols(X, TT, M, &s, &mx, &my))
        jsonw_f64(w, (double)((long double)X[M - 1] - (my + s * ((long double)(TT[M - 1] - TT[0]) - mx))));
    else jsonw_null(w);
    SERIES_END();
}

static bool two_pass(const double *x, size_t m, double *mean, double *var) {
    if (m < 1) return false;
    long double s = 0, ss = 0;
    for (size_t i = 0; i < m; i++) s += x[i];
    *mean = (double)(s / m);
    for (size_t i = 0; i < m; i++) ss += ((long double)x[i] - s / m) * ((long double)x[i] - s / m);
    *var = m >= 2 ? (double)(ss / (m - 1)) : 0;
    return m >= 2;
}

static bool b_is_outlier(const bctx *c, const double *base, size_t nb, double x) {
    double mean, var;
    if (nb < 5 || !two_pass(base, nb, &mean, &var) || !(var > 0)) return false;
    return fabs(x - mean) > c->sigma * sqrt(var);
}

static bool b_active(int64_t q, int64_t t, int64_t W) {
    int64_t b = (W + 63) / 64, e = floor_div(t, b) * b;
    return q - e >= 0 && q - e < W;
}

/* Lifetime: each value against all values before it. Windowed: each value against the
 * earlier values whose bucket is active at its arrival; count those flagged whose
 * bucket is active at q. */
static void b_outlier(const bctx *c, jsonw *w) {
    double *x = malloc((c->nall + 1) * sizeof *x), *base = malloc((c->nall + 1) * sizeof *base);
    int64_t *t = malloc((c->nall + 1) * sizeof *t);
    size_t m = 0;
    int64_t count = 0;
    for (size_t i = 0; i < c->nall; i++)
        if (b_num(c, &c->all[i], &x[m])) t[m++] = c->all[i].t;
    for (size_t i = 0; i < m; i++) {
        size_t nb = 0;
        for (size_t j = 0; j < i; j++)
            if (!c->W || b_active(t[i], t[j], c->W)) base[nb++] = x[j];
        if (b_is_outlier(c, base, nb, x[i]) && (!c->W || b_active(c->q, t[i], c->W))) count++;
    }
    jsonw_i64(w, count);
    free(x);
    free(base);
    free(t);
}

/* Changes between consecutive non-null values (I64 coerced to F64: the field is f64). */
static void b_value_change(const bctx *c, jsonw *w) {
    int64_t changes = 0;
    bv_value prev = bv_null();
    for (size_t i = 0; i < c->n; i++) {
        const tev *e = &c->ev[i];
        if (!b_matched(c, e) || !e->has_amount || e->amount.kind == BV_NULL) continue;
        bv_value v = e->amount;
        if (v.kind == BV_I64) v = bv_f64((double)v.u.i);
        if (prev.kind != BV_NULL && !bv_equal(&prev, &v)) changes++;
        prev = v;
    }
    jsonw_i64(w, changes);
}

static void b_z_score(const bctx *c, jsonw *w) {
    SERIES(c);
    double mean, var;
    if (two_pass(X, M, &mean, &var) && var > 0) jsonw_f64(w, (X[M - 1] - mean) / sqrt(var));
    else jsonw_null(w);
    SERIES_END();
}

/* ---- geo ---- */

static double hav(double la1, double lo1, double la2, double lo2) {
    const double r = M_PI / 180.0;
    double dla = (la2 - la1) * r, dlo = (lo2 - lo1) * r;
    double a = sin(dla / 2) * sin(dla / 2) + cos(la1 * r) * cos(la2 * r) * sin(dlo / 2) * sin(dlo / 2);
    return 2 * 6371.0 * atan2(sqrt(a), sqrt(1 - a));
}

static size_t b_points(const bctx *c, double *la, double *lo, int64_t *t) {
    size_t m = 0;
    for (size_t i = 0; i < c->n; i++) {
        const tev *e = &c->ev[i];
        if (!b_matched(c, e) || !e->has_geo) continue;
        if (!bv_as_f64(&e->lat, &la[m]) || !bv_as_f64(&e->lon, &lo[m])) continue;
        t[m++] = e->t;
    }
    return m;
}

#define POINTS(c)                                                                  \
    double *LA = malloc(((c)->n + 1) * sizeof *LA), *LO = malloc(((c)->n + 1) * sizeof *LO); \
    int64_t *PT = malloc(((c)->n + 1) * sizeof *PT);                               \
    size_t P = b_points((c), LA, LO, PT)
#define POINTS_END() do { free(LA); free(LO); free(PT); } while (0)

static void b_geo_velocity(const bctx *c, jsonw *w) {
    POINTS(c);
    double mx = 0;
    for (size_t i = 1; i < P; i++) {
        int64_t dt = PT[i] - PT[i - 1];
        if (dt <= 0) continue;
        double v = hav(LA[i - 1], LO[i - 1], LA[i], LO[i]) * 3600000.0 / (double)dt;
        if (v > mx) mx = v;
    }
    if (P) jsonw_f64(w, mx); else jsonw_null(w);
    POINTS_END();
}

static void b_geo_distance(const bctx *c, jsonw *w) {
    POINTS(c);
    double d = 0;
    for (size_t i = 1; i < P; i++) d += hav(LA[i - 1], LO[i - 1], LA[i], LO[i]);
    jsonw_f64(w, d);
    POINTS_END();
}

static void b_geo_spread(const bctx *c, jsonw *w) {
    POINTS(c);
    double ma, va, mo, vo;
    if (P >= 2) {
        two_pass(LA, P, &ma, &va);
        two_pass(LO, P, &mo, &vo);
        double n = (double)P, k = 111.32 * cos(ma * M_PI / 180.0);
        /* population variances from the sample ones */
        va = va * (n - 1) / n;
        vo = vo * (n - 1) / n;
        jsonw_f64(w, sqrt(va * 111.32 * 111.32 + vo * k * k));
    } else {
        jsonw_null(w);
    }
    POINTS_END();
}

static void b_distance_from_home(const bctx *c, jsonw *w) {
    POINTS(c);
    if (P) {
        size_t from = P > (size_t)c->samples ? P - (size_t)c->samples : 0;
        double sa = 0, so = 0;
        for (size_t i = from; i < P; i++) { sa += LA[i]; so += LO[i]; }
        double n = (double)(P - from);
        jsonw_f64(w, hav(LA[P - 1], LO[P - 1], sa / n, so / n));
    } else {
        jsonw_null(w);
    }
    POINTS_END();
}

/* ------------------------------------------------------------ brute-force runs */

enum wmode { W_NONE = 0, W_BUCKETS, W_OWN };

typedef struct opcase {
    const char *op;
    void (*brute)(const bctx *, jsonw *);
    double rtol;              /* 0 = exact text */
    enum wmode win;           /* how `window` is honoured */
    const char *params;       /* params besides field/where/window */
    bool field;               /* sends field "amount" */
} opcase;

static const opcase CASES[] = {
    { "ewma", b_ewma, 1e-12, W_NONE, "\"half_life\":\"2s\"", true },
    { "ema", b_ewma, 1e-12, W_NONE, "\"half_life\":\"300ms\"", true },
    { "ewvar", b_ewvar, 1e-12, W_NONE, "\"half_life\":\"2s\"", true },
    { "ew_zscore", b_ew_zscore, 1e-12, W_NONE, "\"half_life\":\"1s\"", true },
    { "decayed_sum", b_decayed_sum, 1e-9, W_NONE, "\"half_life\":\"2s\"", true },
    { "decayed_sum", b_decayed_sum, 1e-9, W_NONE, "\"half_life\":\"150ms\"", true },
    { "decayed_count", b_decayed_count, 1e-9, W_NONE, "\"half_life\":\"1s\"", false },
    { "twa", b_twa, 1e-12, W_BUCKETS, "", true },
    { "rate_of_change", b_rate_of_change, 1e-12, W_BUCKETS, "", true },
    { "inter_arrival_stats", b_inter_arrival, 1e-9, W_BUCKETS, "", false },
    { "burst_count", b_burst, 0, W_OWN, "\"sub_window\":\"500ms\"", false },
    { "burst_count", b_burst, 0, W_OWN, "\"sub_window\":\"37ms\"", false },
    { "delta_from_prev", b_delta, 0, W_BUCKETS, "", true },
    { "trend", b_trend, 1e-9, W_BUCKETS, "", true },
    { "trend_residual", b_trend_residual, 1e-9, W_BUCKETS, "", true },
    { "outlier_count", b_outlier, 0, W_OWN, "", true },
    { "outlier_count", b_outlier, 0, W_OWN, "\"sigma\":1.5", true },
    { "value_change_count", b_value_change, 0, W_BUCKETS, "", true },
    { "z_score", b_z_score, 1e-9, W_BUCKETS, "", true },
    { "geo_velocity", b_geo_velocity, 1e-12, W_NONE, "", false },
    { "geo_distance", b_geo_distance, 1e-12, W_NONE, "", false },
    { "geo_spread", b_geo_spread, 1e-9, W_NONE, "", false },
    { "distance_from_home", b_distance_from_home, 1e-9, W_NONE, "", false },
    { "distance_from_home", b_distance_from_home, 1e-9, W_NONE, "\"samples\":7", false },
};

/* got vs want: identical text when rtol == 0; else both null or both numbers within
 * rtol relative (absolute below `floor`). */
static void compare(const char *op, const char *got, const char *want, double rtol, double floor_) {
    if (rtol == 0 || !strcmp(want, "null") || !strcmp(got, "null")) {
        if (strcmp(got, want) != 0) fail_msg("op %s: got %s want %s", op, got, want);
        return;
    }
    double x = strtod(got, NULL), y = strtod(want, NULL);
    if (!(fabs(x - y) <= rtol * fmax(floor_, fmax(fabs(x), fabs(y)))))
        fail_msg("op %s: got %s want %s", op, got, want);
}

/* Magnitude below which errors are judged absolutely: the natural scale of the output
 * (slopes are ~20 units / 10 s; the rest are O(1..100)). */
static double floor_of(const char *op) {
    if (!strcmp(op, "trend")) return 1e-6;
    return 1.0;
}

static void run_case(const opcase *oc, bool windowed, bool use_where, uint64_t seed) {
    enum { N = 260 };
    const int64_t W = 10000;
    tev ev[N];
    gen_stream(ev, N, seed, windowed ? 300 : 40);
    char spec[384];
    snprintf(spec, sizeof spec, "{\"op\":\"%s\",\"params\":{%s%s%s%s%s}}", oc->op,
             oc->field ? "\"field\":\"amount\"," : "",
             use_where ? "\"where\":\"(k > 3)\"," : "",
             windowed ? "\"window\":\"10s\"," : "", oc->params, *oc->params ? "" : "\"x\":0");
    feature f;
    compile_ok(&f, spec);
    if (windowed && oc->win == W_BUCKETS) assert_int_equal(f.window_ms, W);
    else assert_int_equal(f.window_ms, 0);
    void *st = state_new(&f);
    op_stats stats = { 0, 0, 0 };
    bctx c;
    memset(&c, 0, sizeof c);
    c.use_where = use_where;
    c.W = windowed ? W : 0;
    c.half_life = f.p.half_life_ms;
    c.sub_window = f.p.sub_window_ms;
    c.samples = f.p.samples;
    c.sigma = f.p.sigma;
    tev *sel = malloc(N * sizeof *sel);
    int64_t b = (W + 63) / 64;
    for (size_t i = 0; i < N; i++) {
        push_ev(&f, st, &ev[i], &stats);
        if (i % 5 != 0 && i != N - 1) continue;
        /* at the event, later, and at the edge where an older bucket leaves the window */
        int64_t old = floor_div(ev[i >= 40 ? i - 40 : 0].t, b) * b;
        int64_t qs[6] = { ev[i].t, ev[i].t + 777, ev[i].t + W / 3, ev[i].t + W - 1, old + W - 1, old + W };
        int nq = windowed ? 6 : 2;
        for (int j = 0; j < nq; j++) {
            int64_t q = qs[j];
            if (q < ev[i].t) continue;
            size_t m = 0;
            for (size_t e = 0; e <= i; e++)
                if (!windowed || oc->win != W_BUCKETS || b_active(q, ev[e].t, W)) sel[m++] = ev[e];
            c.ev = sel;
            c.n = m;
            c.all = ev;
            c.nall = i + 1;
            c.q = q;
            bv_buf bb;
            jsonw w;
            bv_buf_init(&bb);
            jsonw_init(&w, &bb);
            oc->brute(&c, &w);
            char *got = read_json(&f, st, q);
            compare(oc->op, got, bb.data, oc->rtol, floor_of(oc->op));
            free(got);
            bv_buf_free(&bb);
        }
    }
    free(sel);
    state_free(&f, st);
    feature_release(&f);
}

static void test_bruteforce_lifetime(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        for (uint64_t seed = 1; seed <= 3; seed++) {
            run_case(&CASES[i], false, false, seed * 7919 + i);
            run_case(&CASES[i], false, true, seed * 104729 + i);
        }
}

static void test_bruteforce_windowed(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        if (CASES[i].win == W_NONE) continue;
        for (uint64_t seed = 1; seed <= 3; seed++) {
            run_case(&CASES[i], true, false, seed * 15485863 + i);
            run_case(&CASES[i], true, true, seed * 32452843 + i);
        }
    }
}

/* ------------------------------------------------------------ register time */

static void test_compile_errors(void **state) {
    (void)state;
    static const char *const decay[] = { "ewma", "ema", "ewvar", "ew_zscore", "decayed_sum", "decayed_count" };
    static const char *const bad_hl[] = { "", ",\"half_life\":\"forever\"", ",\"half_life\":\"0s\"",
                                          ",\"half_life\":\"0ms\"", ",\"half_life\":3600",
                                          ",\"half_life\":\"1w\"", ",\"half_life\":\"-1s\"" };
    char spec[256];
    for (size_t i = 0; i < 6; i++)
        for (size_t j = 0; j < sizeof bad_hl / sizeof bad_hl[0]; j++) {
            snprintf(spec, sizeof spec, "{\"op\":\"%s\",\"params\":{\"field\":\"amount\"%s}}", decay[i], bad_hl[j]);
            expect_code(spec, "invalid_registration");
        }
    static const struct { const char *spec, *code; } cases[] = {
        /* half_life comes before the field check */
        { "{\"op\":\"ewma\",\"params\":{\"field\":\"nope\"}}", "invalid_registration" },
        { "{\"op\":\"ewma\",\"params\":{\"field\":\"nope\",\"half_life\":\"1h\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"decayed_count\"}", "invalid_registration" },
        /* sub_window */
        { "{\"op\":\"burst_count\"}", "invalid_registration" },
        { "{\"op\":\"burst_count\",\"params\":{}}", "invalid_registration" },
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"forever\"}}", "invalid_registration" },
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"0s\"}}", "invalid_registration" },
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":60}}", "invalid_registration" },
        { "{\"op\":\"burst_count\",\"params\":{\"window\":\"1h\"}}", "invalid_registration" },
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1s\",\"window\":\"1x\"}}", "aggregation_invalid_window" },
        /* field-checked kinds */
        { "{\"op\":\"twa\",\"params\":{\"field\":\"nope\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"rate_of_change\",\"params\":{\"field\":\"nope\",\"window\":\"1h\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"delta_from_prev\",\"params\":{\"field\":\"nope\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"trend\",\"params\":{\"field\":\"nope\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"trend_residual\",\"params\":{\"field\":\"nope\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"outlier_count\",\"params\":{\"field\":\"nope\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"value_change_count\",\"params\":{\"field\":\"nope\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"z_score\",\"params\":{\"field\":\"nope\"}}", "aggregation_unknown_field" },
        { "{\"op\":\"ewvar\",\"params\":{\"field\":\"nope\",\"half_life\":\"1h\"}}", "aggregation_unknown_field" },
        /* window strings of the kinds that honour or ignore it */
        { "{\"op\":\"trend\",\"params\":{\"window\":\"1x\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"twa\",\"params\":{\"window\":\"0s\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"z_score\",\"params\":{\"window\":3600}}", "aggregation_invalid_window" },
        { "{\"op\":\"outlier_count\",\"params\":{\"window\":\"lifetime\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"inter_arrival_stats\",\"params\":{\"window\":\"1w\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"ewma\",\"params\":{\"half_life\":\"1h\",\"window\":\"1w\"}}", "aggregation_invalid_window" },
        /* geo kinds are lifetime-only: any window, even forever */
        { "{\"op\":\"geo_velocity\",\"params\":{\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"geo_velocity\",\"params\":{\"window\":\"forever\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"geo_distance\",\"params\":{\"window\":\"1h\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"geo_spread\",\"params\":{\"window\":\"forever\"}}", "aggregation_invalid_window" },
        { "{\"op\":\"distance_from_home\",\"params\":{\"window\":\"7d\",\"samples\":5}}", "aggregation_invalid_window" },
        /* where */
        { "{\"op\":\"trend\",\"params\":{\"where\":\"(nope > 1)\"}}", "aggregation_invalid_where" },
        { "{\"op\":\"geo_spread\",\"params\":{\"where\":\"(((\"}}", "aggregation_invalid_where" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_code(cases[i].spec, cases[i].code);
}

static void test_compile_ok(void **state) {
    (void)state;
    feature f;
    /* decay kinds accept and ignore window */
    compile_ok(&f, "{\"op\":\"ema\",\"params\":{\"field\":\"amount\",\"half_life\":\"30m\",\"window\":\"1h\"}}");
    assert_string_equal(f.op_name, "ema");
    assert_int_equal(f.p.half_life_ms, 1800000);
    assert_int_equal(f.window_ms, 0);
    assert_int_equal(f.state_size, 24);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"decayed_count\",\"params\":{\"half_life\":\"1ms\",\"field\":\"nope\"}}");
    assert_int_equal(f.p.half_life_ms, 1);
    feature_release(&f);
    /* the window.c kinds: real windows; forever = lifetime */
    static const char *const wk[] = { "twa", "rate_of_change", "inter_arrival_stats", "delta_from_prev",
                                      "trend", "trend_residual", "value_change_count", "z_score" };
    for (size_t i = 0; i < sizeof wk / sizeof wk[0]; i++) {
        char spec[160];
        const struct op_vtable *vt = op_lookup(wk[i]);
        assert_non_null(vt);
        assert_true(vt->flags & OPF_WINDOWABLE);
        assert_non_null(vt->merge);
        assert_true(vt->state_size <= OP_MAX_STATE);
        snprintf(spec, sizeof spec, "{\"op\":\"%s\",\"params\":{\"field\":\"amount\",\"window\":\"5m\"}}", wk[i]);
        compile_ok(&f, spec);
        assert_int_equal(f.window_ms, 300000);
        assert_int_equal(f.bucket_ms, 4688);
        assert_int_equal(f.state_size, window_state_size(f.vt));   /* bucket 0 inline */
        feature_release(&f);
        snprintf(spec, sizeof spec, "{\"op\":\"%s\",\"params\":{\"field\":\"amount\",\"window\":\"forever\"}}", wk[i]);
        compile_ok(&f, spec);
        assert_int_equal(f.window_ms, 0);
        assert_int_equal(f.state_size, vt->state_size);
        feature_release(&f);
    }
    /* own windows keep the length in param_window_ms */
    compile_ok(&f, "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1m\",\"window\":\"1h\"}}");
    assert_int_equal(f.p.sub_window_ms, 60000);
    assert_int_equal(f.p.param_window_ms, 3600000);
    assert_int_equal(f.window_ms, 0);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"outlier_count\",\"params\":{\"field\":\"amount\",\"window\":\"forever\"}}");
    assert_int_equal(f.p.param_window_ms, 0);
    assert_true(f.p.sigma == 3.0);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"outlier_count\",\"params\":{\"sigma\":2,\"window\":\"10s\"}}");
    assert_true(f.p.sigma == 2.0);
    assert_int_equal(f.p.param_window_ms, 10000);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"outlier_count\",\"params\":{\"sigma\":\"big\"}}");   /* not validated */
    assert_true(f.p.sigma == 3.0);
    feature_release(&f);
    /* geo params: defaults, aliases, long name wins, non-strings ignored */
    compile_ok(&f, "{\"op\":\"geo_velocity\"}");
    assert_string_equal(f.p.lat_field, "lat");
    assert_string_equal(f.p.lon_field, "lon");
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"geo_distance\",\"params\":{\"lat\":\"plat\",\"lon\":\"plon\"}}");
    assert_string_equal(f.p.lat_field, "plat");
    assert_string_equal(f.p.lon_field, "plon");
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"geo_spread\",\"params\":{\"lat_field\":\"a\",\"lat\":\"b\",\"lon_field\":7}}");
    assert_string_equal(f.p.lat_field, "a");
    assert_string_equal(f.p.lon_field, "lon");
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"distance_from_home\"}");
    assert_int_equal(f.p.samples, 100);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"distance_from_home\",\"params\":{\"samples\":0}}");
    assert_int_equal(f.p.samples, 1);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"distance_from_home\",\"params\":{\"samples\":\"5\"}}");
    assert_int_equal(f.p.samples, 100);
    feature_release(&f);
    /* flags of every kind of this file */
    static const struct { const char *op; unsigned must, mustnot; } fl[] = {
        { "ewma", OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD, OPF_WINDOWABLE | OPF_LIFETIME_ONLY },
        { "ewvar", OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD, OPF_WINDOWABLE },
        { "ew_zscore", OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD, OPF_WINDOWABLE },
        { "decayed_sum", OPF_HALF_LIFE | OPF_FIELD_CHECKED | OPF_READS_FIELD, OPF_WINDOWABLE },
        { "decayed_count", OPF_HALF_LIFE, OPF_READS_FIELD | OPF_FIELD_CHECKED | OPF_WINDOWABLE },
        { "burst_count", OPF_SUB_WINDOW, OPF_READS_FIELD | OPF_HALF_LIFE | OPF_LIFETIME_ONLY },
        { "inter_arrival_stats", OPF_WINDOWABLE, OPF_READS_FIELD },
        { "outlier_count", OPF_FIELD_CHECKED | OPF_READS_FIELD, OPF_LIFETIME_ONLY },
        { "value_change_count", OPF_COERCE | OPF_READS_FIELD, OPF_LIFETIME_ONLY },
        { "geo_velocity", OPF_LIFETIME_ONLY, OPF_READS_FIELD },
        { "geo_distance", OPF_LIFETIME_ONLY, OPF_READS_FIELD },
        { "geo_spread", OPF_LIFETIME_ONLY, OPF_READS_FIELD },
        { "distance_from_home", OPF_LIFETIME_ONLY, OPF_READS_FIELD },
    };
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
        const struct op_vtable *vt = op_lookup(fl[i].op);
        if ((vt->flags & fl[i].must) != fl[i].must || (vt->flags & fl[i].mustnot))
            fail_msg("%s: flags %#x", fl[i].op, vt->flags);
        assert_true(op_implemented(vt));
        assert_int_equal(vt->state_size % 8, 0);
    }
}

/* ------------------------------------------------------------ empty values */

static void test_empty_values(void **state) {
    (void)state;
    static const struct { const char *spec, *empty; } ex[] = {
        { "{\"op\":\"ewma\",\"params\":{\"field\":\"amount\",\"half_life\":\"1h\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"ewvar\",\"params\":{\"field\":\"amount\",\"half_life\":\"1h\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"ew_zscore\",\"params\":{\"field\":\"amount\",\"half_life\":\"1h\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"decayed_sum\",\"params\":{\"field\":\"amount\",\"half_life\":\"1h\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"decayed_count\",\"params\":{\"half_life\":\"1h\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"twa\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"twa\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\",\"window\":\"1h\"}}", "null" },
        { "{\"op\":\"rate_of_change\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"inter_arrival_stats\",\"params\":{\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"inter_arrival_stats\",\"params\":{\"where\":\"(k > 100)\",\"window\":\"1m\"}}", "null" },
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1s\",\"where\":\"(k > 100)\"}}", "0" },
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1s\",\"where\":\"(k > 100)\",\"window\":\"1h\"}}", "0" },
        { "{\"op\":\"delta_from_prev\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"trend\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"trend_residual\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"outlier_count\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\"}}", "0" },
        { "{\"op\":\"outlier_count\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\",\"window\":\"1h\"}}", "0" },
        { "{\"op\":\"value_change_count\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\"}}", "0" },
        { "{\"op\":\"value_change_count\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\",\"window\":\"1h\"}}", "0" },
        { "{\"op\":\"z_score\",\"params\":{\"field\":\"amount\",\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"geo_velocity\",\"params\":{\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"geo_distance\",\"params\":{\"where\":\"(k > 100)\"}}", "0.0" },
        { "{\"op\":\"geo_spread\",\"params\":{\"where\":\"(k > 100)\"}}", "null" },
        { "{\"op\":\"distance_from_home\",\"params\":{\"where\":\"(k > 100)\"}}", "null" },
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        feature f;
        compile_ok(&f, ex[i].spec);
        void *st = state_new(&f);
        assert_read(&f, st, T0, ex[i].empty);
        /* where never matches: still empty */
        for (int j = 0; j < 5; j++) {
            tev e = { T0 + j * 10, true, bv_f64(j), 1, true, bv_f64(1.0 + j), bv_f64(2.0) };
            push_ev(&f, st, &e, NULL);
        }
        assert_read(&f, st, T0 + 100, ex[i].empty);
        state_free(&f, st);
        feature_release(&f);
    }
}

/* ------------------------------------------------------------ wrong types / nulls */

static void test_wrong_types_ignored(void **state) {
    (void)state;
    json_t *list = json_loads("[1,2]", 0, NULL);
    bv_value junk[] = { bv_null(), bv_str("12", 2), bv_bool(true), bv_from_json(list) };
    static const char *const numeric[] = {
        "{\"op\":\"ewma\",\"params\":{\"field\":\"any\",\"half_life\":\"1s\"}}",
        "{\"op\":\"ewvar\",\"params\":{\"field\":\"any\",\"half_life\":\"1s\"}}",
        "{\"op\":\"ew_zscore\",\"params\":{\"field\":\"any\",\"half_life\":\"1s\"}}",
        "{\"op\":\"decayed_sum\",\"params\":{\"field\":\"any\",\"half_life\":\"1s\"}}",
        "{\"op\":\"twa\",\"params\":{\"field\":\"any\"}}",
        "{\"op\":\"twa\",\"params\":{\"field\":\"any\",\"window\":\"1m\"}}",
        "{\"op\":\"rate_of_change\",\"params\":{\"field\":\"any\"}}",
        "{\"op\":\"delta_from_prev\",\"params\":{\"field\":\"any\"}}",
        "{\"op\":\"trend\",\"params\":{\"field\":\"any\"}}",
        "{\"op\":\"trend_residual\",\"params\":{\"field\":\"any\"}}",
        "{\"op\":\"outlier_count\",\"params\":{\"field\":\"any\"}}",
        "{\"op\":\"z_score\",\"params\":{\"field\":\"any\"}}",
        "{\"op\":\"z_score\",\"params\":{\"field\":\"any\",\"window\":\"1m\"}}",
    };
    for (size_t i = 0; i < sizeof numeric / sizeof numeric[0]; i++) {
        /* the same numeric stream with and without junk interleaved reads the same */
        feature f;
        compile_ok(&f, numeric[i]);
        void *a = state_new(&f), *b = state_new(&f);
        int64_t t = T0;
        for (int j = 0; j < 12; j++) {
            bv_value v = (j % 3) ? bv_f64((double)(j * j % 7) - 2.5) : bv_i64(j % 5);
            t += 10 * (j % 4);
            push_value(&f, a, v, t);
            push_value(&f, b, junk[j % 4], t);
            push_value(&f, b, v, t);
            tev missing = { t, false, bv_null(), 9, false, bv_null(), bv_null() };
            push_ev(&f, b, &missing, NULL);
        }
        char *ra = read_json(&f, a, t + 5), *rb = read_json(&f, b, t + 5);
        if (strcmp(ra, rb) != 0) fail_msg("%s: %s vs %s", numeric[i], ra, rb);
        assert_string_not_equal(ra, "null");
        free(ra);
        free(rb);
        state_free(&f, a);
        state_free(&f, b);
        feature_release(&f);
    }
    /* decayed_count and inter_arrival_stats count events, whatever their fields hold */
    feature f;
    compile_ok(&f, "{\"op\":\"inter_arrival_stats\"}");
    void *st = state_new(&f);
    push_value(&f, st, junk[1], T0);
    tev missing = { T0 + 30, false, bv_null(), 9, false, bv_null(), bv_null() };
    push_ev(&f, st, &missing, NULL);
    assert_read(&f, st, T0 + 30, "30.0");
    state_free(&f, st);
    feature_release(&f);
    /* value_change_count takes any non-null value; null and missing are skipped */
    compile_ok(&f, "{\"op\":\"value_change_count\",\"params\":{\"field\":\"any\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_str("a", 1), 1);
    push_value(&f, st, bv_null(), 2);
    push_value(&f, st, bv_str("a", 1), 3);       /* same */
    push_value(&f, st, bv_from_json(list), 4);   /* change */
    push_value(&f, st, bv_from_json(list), 5);   /* same list */
    push_value(&f, st, bv_bool(true), 6);        /* change */
    push_value(&f, st, bv_bool(true), 7);
    push_value(&f, st, bv_i64(1), 8);            /* change: bool -> int */
    push_value(&f, st, bv_f64(1.0), 9);          /* change: `any` is json, no coercion */
    push_value(&f, st, bv_f64(NAN), 10);         /* change */
    push_value(&f, st, bv_f64(NAN), 11);         /* NaN never equal: change */
    push_value(&f, st, bv_str("ab", 2), 12);     /* change */
    push_value(&f, st, bv_str("a", 1), 13);      /* change: prefix is not equal */
    assert_read(&f, st, 13, "8");
    state_free(&f, st);
    feature_release(&f);
    /* coercion to the declared type: f64 field, 10 then 10.0 is no change */
    compile_ok(&f, "{\"op\":\"value_change_count\",\"params\":{\"field\":\"amount\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(10), 1);
    push_value(&f, st, bv_f64(10.0), 2);
    push_value(&f, st, bv_i64(10), 3);
    assert_read(&f, st, 3, "0");
    push_value(&f, st, bv_f64(10.5), 4);
    assert_read(&f, st, 4, "1");
    state_free(&f, st);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"value_change_count\",\"params\":{\"field\":\"qty\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_f64(3.0), 1);
    push_value(&f, st, bv_i64(3), 2);
    assert_read(&f, st, 2, "0");
    state_free(&f, st);
    feature_release(&f);
    /* geo: a point needs both coordinates numeric */
    compile_ok(&f, "{\"op\":\"geo_distance\"}");
    st = state_new(&f);
    push_point(&f, st, 0, 0, 1);
    tev bad[] = {
        { 2, false, bv_null(), 9, true, bv_str("1", 1), bv_f64(1) },
        { 3, false, bv_null(), 9, true, bv_f64(1), bv_null() },
        { 4, false, bv_null(), 9, true, bv_bool(true), bv_f64(1) },
        { 5, false, bv_null(), 9, false, bv_null(), bv_null() },
    };
    for (int i = 0; i < 4; i++) push_ev(&f, st, &bad[i], NULL);
    assert_read(&f, st, 5, "0.0");
    tev ipt = { 6, false, bv_null(), 9, true, bv_i64(0), bv_i64(1) };   /* I64 coordinates count */
    push_ev(&f, st, &ipt, NULL);
    assert_close(read_num(&f, st, 6), 6371.0 * M_PI / 180.0, 1e-12);
    state_free(&f, st);
    feature_release(&f);
    json_decref(list);
}

/* ------------------------------------------------------------ hand-computed examples */

static void test_decay_examples(void **state) {
    (void)state;
    feature f;
    void *st;
    /* ewma: seed, one half-life (alpha = 1/2), same-ms rule, read does not decay */
    compile_ok(&f, "{\"op\":\"ewma\",\"params\":{\"field\":\"amount\",\"half_life\":\"10s\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(10), T0);
    assert_read(&f, st, T0, "10.0");
    push_value(&f, st, bv_i64(20), T0 + 10000);
    assert_close(read_num(&f, st, T0 + 10000), 15.0, 1e-15);
    push_value(&f, st, bv_i64(25), T0 + 10000);          /* same ms: 0.5*25 + 0.5*15 */
    assert_close(read_num(&f, st, T0 + 10000), 20.0, 1e-15);
    push_value(&f, st, bv_i64(0), T0 + 5000);            /* regression: same rule, last_t kept */
    assert_close(read_num(&f, st, T0 + 10000), 10.0, 1e-15);
    push_value(&f, st, bv_i64(30), T0 + 20000);          /* dt from T0+10000: alpha 1/2 */
    assert_close(read_num(&f, st, T0 + 20000), 20.0, 1e-15);
    assert_close(read_num(&f, st, T0 + 86400000), 20.0, 1e-15);   /* an average does not fade */
    state_free(&f, st);
    feature_release(&f);

    /* decayed_sum: halves per half-life, at update and at read time */
    compile_ok(&f, "{\"op\":\"decayed_sum\",\"params\":{\"field\":\"amount\",\"half_life\":\"1m\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_f64(8), T0);
    assert_read(&f, st, T0, "8.0");
    assert_close(read_num(&f, st, T0 + 60000), 4.0, 1e-14);
    assert_close(read_num(&f, st, T0 + 180000), 1.0, 1e-14);
    assert_read(&f, st, T0 - 5, "8.0");                    /* no growth before last_t */
    push_value(&f, st, bv_f64(4), T0 + 60000);            /* 8/2 + 4 */
    assert_close(read_num(&f, st, T0 + 60000), 8.0, 1e-14);
    assert_close(read_num(&f, st, T0 + 120000), 4.0, 1e-14);
    push_value(&f, st, bv_f64(2), T0 + 30000);            /* regression: added undecayed */
    assert_close(read_num(&f, st, T0 + 60000), 10.0, 1e-14);
    state_free(&f, st);
    feature_release(&f);

    /* decayed_count: first event 1.0 */
    compile_ok(&f, "{\"op\":\"decayed_count\",\"params\":{\"half_life\":\"1s\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_null(), T0);
    assert_read(&f, st, T0, "1.0");
    push_value(&f, st, bv_null(), T0);
    assert_read(&f, st, T0, "2.0");
    assert_close(read_num(&f, st, T0 + 2000), 0.5, 1e-14);
    state_free(&f, st);
    feature_release(&f);

    /* ewvar / ew_zscore: seed gives 0 variance (z null), then alpha = 1/2 */
    feature fv, fz;
    compile_ok(&fv, "{\"op\":\"ewvar\",\"params\":{\"field\":\"amount\",\"half_life\":\"1s\"}}");
    compile_ok(&fz, "{\"op\":\"ew_zscore\",\"params\":{\"field\":\"amount\",\"half_life\":\"1s\"}}");
    void *sv = state_new(&fv), *sz = state_new(&fz);
    push_value(&fv, sv, bv_i64(0), T0);
    push_value(&fz, sz, bv_i64(0), T0);
    assert_read(&fv, sv, T0, "0.0");
    assert_read(&fz, sz, T0, "null");
    push_value(&fv, sv, bv_i64(4), T0 + 1000);   /* d=4, mean=2, m2 = 0.5*4*(4-2) = 4 */
    push_value(&fz, sz, bv_i64(4), T0 + 1000);
    assert_close(read_num(&fv, sv, T0 + 1000), 4.0, 1e-14);
    assert_close(read_num(&fz, sz, T0 + 1000), 1.0, 1e-14);   /* (4-2)/sqrt(4) */
    push_value(&fv, sv, bv_i64(100), T0 + 1000);  /* same ms: alpha 0, nothing moves */
    push_value(&fz, sz, bv_i64(100), T0 + 1000);
    assert_close(read_num(&fv, sv, T0 + 1000), 4.0, 1e-14);
    assert_close(read_num(&fz, sz, T0 + 1000), 49.0, 1e-14);  /* (100-2)/2: last value moved */
    assert_close(read_num(&fv, sv, T0 + 999999), 4.0, 1e-14); /* no read-time decay */
    push_value(&fv, sv, bv_i64(50), T0 + 500);    /* regression: alpha 0, last_t stays */
    push_value(&fz, sz, bv_i64(50), T0 + 500);
    push_value(&fv, sv, bv_i64(10), T0 + 2000);   /* alpha 1/2: d=8, mean 6, m2 = 2 + 0.5*8*4 */
    push_value(&fz, sz, bv_i64(10), T0 + 2000);
    assert_close(read_num(&fv, sv, T0 + 2000), 18.0, 1e-14);
    assert_close(read_num(&fz, sz, T0 + 2000), 4.0 / sqrt(18.0), 1e-14);
    state_free(&fv, sv);
    state_free(&fz, sz);
    feature_release(&fv);
    feature_release(&fz);
}

static void test_velocity_examples(void **state) {
    (void)state;
    feature f;
    void *st;
    /* twa: 10 for 1s, 20 for 3s -> 17.5; the latest value has no weight yet */
    compile_ok(&f, "{\"op\":\"twa\",\"params\":{\"field\":\"amount\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(10), T0);
    assert_read(&f, st, T0, "10.0");
    push_value(&f, st, bv_i64(20), T0 + 1000);
    assert_read(&f, st, T0 + 1000, "10.0");
    push_value(&f, st, bv_i64(99), T0 + 4000);
    assert_read(&f, st, T0 + 4000, "17.5");
    state_free(&f, st);
    feature_release(&f);

    /* rate_of_change per ms; a same-ms value moves the last point but not the rate */
    compile_ok(&f, "{\"op\":\"rate_of_change\",\"params\":{\"field\":\"amount\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(5), T0);
    assert_read(&f, st, T0, "null");
    push_value(&f, st, bv_i64(15), T0 + 500);
    assert_read(&f, st, T0 + 500, "0.02");
    push_value(&f, st, bv_i64(0), T0 + 500);
    assert_read(&f, st, T0 + 500, "0.02");
    push_value(&f, st, bv_i64(10), T0 + 1500);           /* (10 - 0) / 1000 */
    assert_read(&f, st, T0 + 1500, "0.01");
    state_free(&f, st);
    feature_release(&f);

    /* inter_arrival_stats: gaps 100, 0, 300 -> mean 133.33 */
    compile_ok(&f, "{\"op\":\"inter_arrival_stats\"}");
    st = state_new(&f);
    push_value(&f, st, bv_null(), T0);
    assert_read(&f, st, T0, "null");
    push_value(&f, st, bv_null(), T0 + 100);
    push_value(&f, st, bv_null(), T0 + 100);
    push_value(&f, st, bv_null(), T0 + 400);
    assert_close(read_num(&f, st, T0 + 400), 400.0 / 3.0, 1e-15);
    push_value(&f, st, bv_null(), T0 + 300);             /* regression: gap 0 */
    assert_close(read_num(&f, st, T0 + 400), 100.0, 1e-15);
    state_free(&f, st);
    feature_release(&f);

    /* burst_count: sub-windows of 1s; max survives the ring; negative times floor */
    compile_ok(&f, "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1s\"}}");
    st = state_new(&f);
    for (int i = 0; i < 3; i++) push_value(&f, st, bv_null(), T0 + i * 100);
    push_value(&f, st, bv_null(), T0 + 1000);
    assert_read(&f, st, T0 + 1000, "3");
    /* 64 sub-windows later the same slot is reused: its count restarts */
    for (int i = 0; i < 4; i++) push_value(&f, st, bv_null(), T0 + 64000 + i);
    assert_read(&f, st, T0 + 64000, "4");
    state_free(&f, st);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1s\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_null(), -1);
    push_value(&f, st, bv_null(), -1000);   /* same sub-window [-1000, 0) */
    push_value(&f, st, bv_null(), 0);       /* next one */
    push_value(&f, st, bv_null(), -1001);   /* [-2000, -1000) */
    assert_read(&f, st, 0, "2");
    state_free(&f, st);
    feature_release(&f);

    /* delta_from_prev: always f64 */
    compile_ok(&f, "{\"op\":\"delta_from_prev\",\"params\":{\"field\":\"qty\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_i64(7), T0);
    assert_read(&f, st, T0, "null");
    push_value(&f, st, bv_i64(3), T0);
    assert_read(&f, st, T0, "-4.0");
    state_free(&f, st);
    feature_release(&f);

    /* trend on raw epoch-ms abscissae: exact where the reference's raw sums are not */
    feature fr;
    compile_ok(&f, "{\"op\":\"trend\",\"params\":{\"field\":\"amount\"}}");
    compile_ok(&fr, "{\"op\":\"trend_residual\",\"params\":{\"field\":\"amount\"}}");
    st = state_new(&f);
    void *sr = state_new(&fr);
    push_value(&f, st, bv_f64(1), T0);
    push_value(&fr, sr, bv_f64(1), T0);
    assert_read(&f, st, T0, "null");
    assert_read(&fr, sr, T0, "null");
    push_value(&f, st, bv_f64(1.5), T0);                 /* all x equal: still null */
    push_value(&fr, sr, bv_f64(1.5), T0);
    assert_read(&f, st, T0, "null");
    assert_read(&fr, sr, T0, "null");
    for (int i = 1; i <= 4; i++) {
        push_value(&f, st, bv_f64(1.25 + 2.0 * i), T0 + 1000 * i);
        push_value(&fr, sr, bv_f64(1.25 + 2.0 * i), T0 + 1000 * i);
    }
    assert_close(read_num(&f, st, T0 + 4000), 0.002, 1e-12);
    assert_close(read_num(&fr, sr, T0 + 4000), 0.0, 1e-12);
    push_value(&f, st, bv_f64(100), T0 + 5000);
    push_value(&fr, sr, bv_f64(100), T0 + 5000);
    {
        /* x = 0,0,1,2,3,4,5 (s); y = 1,1.5,3.25,5.25,7.25,9.25,100 */
        double x[] = { 0, 0, 1, 2, 3, 4, 5 }, y[] = { 1, 1.5, 3.25, 5.25, 7.25, 9.25, 100 };
        double mx = 0, my = 0, sxx = 0, sxy = 0;
        for (int i = 0; i < 7; i++) { mx += x[i] / 7; my += y[i] / 7; }
        for (int i = 0; i < 7; i++) { sxx += (x[i] - mx) * (x[i] - mx); sxy += (x[i] - mx) * (y[i] - my); }
        double slope = sxy / sxx;
        assert_close(read_num(&f, st, T0 + 5000), slope / 1000.0, 1e-12);
        assert_close(read_num(&fr, sr, T0 + 5000), 100 - (my + slope * (5 - mx)), 1e-12);
    }
    state_free(&f, st);
    state_free(&fr, sr);
    feature_release(&f);
    feature_release(&fr);

    /* outlier_count: needs 5 prior values and a spread */
    compile_ok(&f, "{\"op\":\"outlier_count\",\"params\":{\"field\":\"amount\",\"sigma\":2}}");
    st = state_new(&f);
    for (int i = 0; i < 5; i++) push_value(&f, st, bv_f64(10), T0 + i);
    push_value(&f, st, bv_f64(1000), T0 + 5);            /* variance 0 before it: not counted */
    assert_read(&f, st, T0 + 5, "0");
    push_value(&f, st, bv_f64(1000), T0 + 6);            /* mean 175, std ~404: |825| > 808 */
    assert_read(&f, st, T0 + 6, "1");
    state_free(&f, st);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"outlier_count\",\"params\":{\"field\":\"amount\"}}");
    st = state_new(&f);
    double vals[] = { 1, 2, 3, 4, 100 };                 /* only 4 values before 100 */
    for (int i = 0; i < 5; i++) push_value(&f, st, bv_f64(vals[i]), T0 + i);
    assert_read(&f, st, T0 + 5, "0");
    push_value(&f, st, bv_f64(-1000), T0 + 6);
    assert_read(&f, st, T0 + 6, "1");
    state_free(&f, st);
    feature_release(&f);

    /* z_score: sample std */
    compile_ok(&f, "{\"op\":\"z_score\",\"params\":{\"field\":\"amount\"}}");
    st = state_new(&f);
    push_value(&f, st, bv_f64(2), T0);
    assert_read(&f, st, T0, "null");
    push_value(&f, st, bv_f64(2), T0);
    assert_read(&f, st, T0, "null");                     /* variance 0 */
    push_value(&f, st, bv_f64(5), T0);                   /* mean 3, var 3 */
    assert_close(read_num(&f, st, T0), 2.0 / sqrt(3.0), 1e-15);
    state_free(&f, st);
    feature_release(&f);
}

static void test_geo_examples(void **state) {
    (void)state;
    const double deg = 6371.0 * M_PI / 180.0;   /* one degree of a great circle */
    feature f;
    void *st;
    compile_ok(&f, "{\"op\":\"geo_velocity\",\"params\":{\"lat_field\":\"plat\",\"lon\":\"plon\"}}");
    st = state_new(&f);
    push_point(&f, st, 0, 0, T0);
    assert_read(&f, st, T0, "0.0");
    push_point(&f, st, 0, 1, T0 + 3600000);              /* one degree in one hour */
    assert_close(read_num(&f, st, T0 + 3600000), deg, 1e-12);
    push_point(&f, st, 0, 1.5, T0 + 3600000);            /* same ms: no speed, point moves */
    push_point(&f, st, 0, 2, T0 + 5400000);              /* half a degree in half an hour */
    assert_close(read_num(&f, st, T0 + 5400000), deg, 1e-12);
    push_point(&f, st, 0, 4, T0 + 7200000);              /* two degrees in half an hour */
    assert_close(read_num(&f, st, T0 + 7200000), 4 * deg, 1e-12);
    /* fields under the default names are not read */
    tev other = { T0 + 9000000, false, bv_null(), 9, false, bv_null(), bv_null() };
    bv_field fl[2] = { { "lat", 3, bv_f64(80) }, { "lon", 3, bv_f64(80) } };
    bv_row row = { fl, 2, 0 };
    expr_arena arena;
    expr_arena_reset(&arena);
    feature_update(&f, st, &row, other.t, &arena, NULL);
    assert_close(read_num(&f, st, T0 + 9000000), 4 * deg, 1e-12);
    state_free(&f, st);
    feature_release(&f);

    /* geo_distance; NaN coordinates make the total null (non-finite -> null) */
    compile_ok(&f, "{\"op\":\"geo_distance\"}");
    st = state_new(&f);
    push_point(&f, st, 10, 20, 1);
    assert_read(&f, st, 1, "0.0");
    push_point(&f, st, 11, 20, 2);
    push_point(&f, st, 11, 20, 3);
    assert_close(read_num(&f, st, 3), deg, 1e-12);
    push_point(&f, st, NAN, 20, 4);
    assert_read(&f, st, 4, "null");
    state_free(&f, st);
    feature_release(&f);

    /* antipodes: half the circumference */
    compile_ok(&f, "{\"op\":\"geo_distance\"}");
    st = state_new(&f);
    push_point(&f, st, 0, 0, 1);
    push_point(&f, st, 0, 180, 2);
    assert_close(read_num(&f, st, 2), 180 * deg, 1e-12);
    state_free(&f, st);
    feature_release(&f);

    /* geo_spread: two points on the equator, one degree of longitude apart:
     * var_lon = 0.25, cos(0) = 1 -> sqrt(0.25) * 111.32 */
    compile_ok(&f, "{\"op\":\"geo_spread\"}");
    st = state_new(&f);
    push_point(&f, st, 0, 0, 1);
    assert_read(&f, st, 1, "null");
    push_point(&f, st, 0, 1, 2);
    assert_close(read_num(&f, st, 2), 0.5 * 111.32, 1e-12);
    state_free(&f, st);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"geo_spread\"}");
    st = state_new(&f);
    push_point(&f, st, 60, 10, 1);
    push_point(&f, st, 60, 12, 2);                        /* cos(60 deg) = 1/2 */
    assert_close(read_num(&f, st, 2), 111.32 * 0.5, 1e-12);
    state_free(&f, st);
    feature_release(&f);

    /* distance_from_home: ring of the last 3 points including the latest */
    compile_ok(&f, "{\"op\":\"distance_from_home\",\"params\":{\"samples\":3}}");
    st = state_new(&f);
    push_point(&f, st, 0, 0, 1);
    assert_read(&f, st, 1, "0.0");
    push_point(&f, st, 0, 2, 2);                          /* centroid (0,1) */
    assert_close(read_num(&f, st, 2), deg, 1e-12);
    push_point(&f, st, 0, 4, 3);                          /* centroid (0,2) */
    assert_close(read_num(&f, st, 3), 2 * deg, 1e-12);
    push_point(&f, st, 0, 6, 4);                          /* (0,0) left: centroid (0,4) */
    assert_close(read_num(&f, st, 4), 2 * deg, 1e-12);
    push_point(&f, st, 0, 0, 5);                          /* ring 4,6,0: centroid (0, 10/3) */
    assert_close(read_num(&f, st, 5), 10.0 / 3.0 * deg, 1e-12);
    state_free(&f, st);
    feature_release(&f);
    compile_ok(&f, "{\"op\":\"distance_from_home\",\"params\":{\"samples\":1}}");
    st = state_new(&f);
    push_point(&f, st, 0, 0, 1);
    push_point(&f, st, 5, 5, 2);
    assert_read(&f, st, 2, "0.0");
    state_free(&f, st);
    feature_release(&f);
}

/* ------------------------------------------------------------ windows */

static void test_window_examples(void **state) {
    (void)state;
    feature f;
    void *st;
    /* window 64ms: bucket 1 ms, so the window slides exactly */
    compile_ok(&f, "{\"op\":\"z_score\",\"params\":{\"field\":\"amount\",\"window\":\"64ms\"}}");
    assert_int_equal(f.bucket_ms, 1);
    st = state_new(&f);
    push_value(&f, st, bv_f64(100), 0);
    push_value(&f, st, bv_f64(1), 10);
    push_value(&f, st, bv_f64(3), 20);
    assert_close(read_num(&f, st, 63), (3 - 104.0 / 3) / sqrt(((100 - 104.0 / 3) * (100 - 104.0 / 3) + (1 - 104.0 / 3) * (1 - 104.0 / 3) + (3 - 104.0 / 3) * (3 - 104.0 / 3)) / 2), 1e-12);
    assert_close(read_num(&f, st, 64), 1 / sqrt(2.0), 1e-12);   /* 100 left: mean 2, var 2 */
    assert_read(&f, st, 74, "null");                            /* only 3 left */
    assert_read(&f, st, 84, "null");                            /* nothing left */
    state_free(&f, st);
    feature_release(&f);

    /* rate_of_change / delta / twa / inter-arrival only see pairs inside the window */
    static const struct { const char *spec; const char *at63, *at64, *at84; } ex[] = {
        { "{\"op\":\"rate_of_change\",\"params\":{\"field\":\"amount\",\"window\":\"64ms\"}}", "0.2", "0.2", "null" },
        { "{\"op\":\"delta_from_prev\",\"params\":{\"field\":\"amount\",\"window\":\"64ms\"}}", "2.0", "2.0", "null" },
        { "{\"op\":\"twa\",\"params\":{\"field\":\"amount\",\"window\":\"64ms\"}}", "50.5", "1.0", "null" },
        { "{\"op\":\"inter_arrival_stats\",\"params\":{\"window\":\"64ms\"}}", "10.0", "10.0", "null" },
        { "{\"op\":\"value_change_count\",\"params\":{\"field\":\"amount\",\"window\":\"64ms\"}}", "2", "1", "0" },
        { "{\"op\":\"trend\",\"params\":{\"field\":\"amount\",\"window\":\"64ms\"}}", "-4.85", "0.2", "null" },
        { "{\"op\":\"trend_residual\",\"params\":{\"field\":\"amount\",\"window\":\"64ms\"}}", "16.833333333333333", "0.0", "null" },
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        compile_ok(&f, ex[i].spec);
        st = state_new(&f);
        push_value(&f, st, bv_f64(100), 0);
        push_value(&f, st, bv_f64(1), 10);
        push_value(&f, st, bv_f64(3), 20);
        char *a = read_json(&f, st, 63), *b = read_json(&f, st, 64), *c = read_json(&f, st, 84);
        compare(f.op_name, a, ex[i].at63, 1e-12, 1);
        compare(f.op_name, b, ex[i].at64, 1e-12, 1);
        compare(f.op_name, c, ex[i].at84, 1e-12, 1);
        free(a);
        free(b);
        free(c);
        /* window.c buckets are per event ms here */
        assert_true(window_nbuckets(st) == 3);
        state_free(&f, st);
        feature_release(&f);
    }

    /* burst_count over a window: sub-windows overlapping (q - W, q] */
    compile_ok(&f, "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"10s\",\"window\":\"1m\"}}");
    st = state_new(&f);
    for (int i = 0; i < 5; i++) push_value(&f, st, bv_null(), 1000 + i);      /* [0,10s): 5 */
    for (int i = 0; i < 2; i++) push_value(&f, st, bv_null(), 30000 + i);     /* [30s,40s): 2 */
    push_value(&f, st, bv_null(), 95000);                                    /* [90s,100s): 1 */
    assert_read(&f, st, 69999, "5");      /* [0,10s) overlaps (9999, 69999] */
    assert_read(&f, st, 70000, "2");      /* it no longer does */
    assert_read(&f, st, 99999, "2");
    assert_read(&f, st, 100000, "1");
    assert_read(&f, st, 200000, "0");
    state_free(&f, st);
    feature_release(&f);
    /* sub_window longer than the window: the open sub-window still counts */
    compile_ok(&f, "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1h\",\"window\":\"1m\"}}");
    st = state_new(&f);
    for (int i = 0; i < 3; i++) push_value(&f, st, bv_null(), 1000 + i);
    assert_read(&f, st, 3599999, "3");
    assert_read(&f, st, 3600000, "3");     /* [0,1h) overlaps (3540000, 3600000] */
    assert_read(&f, st, 3660000, "0");
    state_free(&f, st);
    feature_release(&f);

    /* outlier_count over a window: the baseline is the window at arrival */
    compile_ok(&f, "{\"op\":\"outlier_count\",\"params\":{\"field\":\"amount\",\"window\":\"64ms\"}}");
    st = state_new(&f);
    op_stats stats = { 0, 0, 0 };
    for (int i = 0; i < 6; i++) push_value(&f, st, bv_f64(i % 2 ? 1000 : -1000), i);  /* wide old baseline */
    for (int i = 0; i < 6; i++) push_value(&f, st, bv_f64(i % 2 ? 1 : -1), 100 + i);  /* narrow new one */
    tev e = { 110, true, bv_f64(50), 9, false, bv_null(), bv_null() };
    push_ev(&f, st, &e, &stats);           /* an outlier only against the narrow window */
    assert_read(&f, st, 110, "1");
    assert_read(&f, st, 110 + 63, "1");
    assert_read(&f, st, 110 + 64, "0");    /* its bucket left */
    /* more than 64 buckets recycle the oldest (counted when stats are passed) */
    for (int i = 0; i < 70; i++) push_value(&f, st, bv_f64(0), 1000 + i);
    assert_int_equal(stats.bucket_reclaim, 0);
    tev e2 = { 2000, true, bv_f64(0), 9, false, bv_null(), bv_null() };
    push_ev(&f, st, &e2, &stats);
    assert_int_equal(stats.bucket_reclaim, 1);
    state_free(&f, st);
    feature_release(&f);
    /* lifetime counterpart: the same stream flags against everything before */
    compile_ok(&f, "{\"op\":\"outlier_count\",\"params\":{\"field\":\"amount\"}}");
    st = state_new(&f);
    for (int i = 0; i < 6; i++) push_value(&f, st, bv_f64(i % 2 ? 1000 : -1000), i);
    for (int i = 0; i < 6; i++) push_value(&f, st, bv_f64(i % 2 ? 1 : -1), 100 + i);
    push_value(&f, st, bv_f64(50), 110);
    assert_read(&f, st, 110, "0");
    state_free(&f, st);
    feature_release(&f);
}

/* ------------------------------------------------------------ snapshots */

static void roundtrip_one(const char *spec, size_t nevents, uint64_t seed) {
    feature f;
    compile_ok(&f, spec);
    void *st = state_new(&f);
    tev *ev = malloc((nevents + 1) * sizeof *ev);
    gen_stream(ev, nevents, seed, 200);
    for (size_t i = 0; i < nevents; i++) push_ev(&f, st, &ev[i], NULL);
    int64_t q = nevents ? ev[nevents - 1].t + 10 : T0;
    free(ev);
    bv_buf enc;
    bv_buf_init(&enc);
    feature_encode(&f, st, &enc);
    void *st2 = state_new(&f);
    const uint8_t *p = (const uint8_t *)enc.data, *end = p + enc.len;
    if (feature_decode(&f, st2, &p, end) != 0) fail_msg("%s: decode failed", spec);
    assert_ptr_equal(p, end);
    bv_buf enc2;
    bv_buf_init(&enc2);
    feature_encode(&f, st2, &enc2);
    assert_int_equal(enc.len, enc2.len);
    if (enc.len) assert_memory_equal(enc.data, enc2.data, enc.len);
    char *r1 = read_json(&f, st, q), *r2 = read_json(&f, st2, q);
    assert_string_equal(r1, r2);
    free(r1);
    free(r2);
    /* both keep working identically */
    tev more = { q + 5, true, bv_f64(3.5), 9, true, bv_f64(1), bv_f64(2) };
    push_ev(&f, st, &more, NULL);
    push_ev(&f, st2, &more, NULL);
    r1 = read_json(&f, st, q + 5);
    r2 = read_json(&f, st2, q + 5);
    assert_string_equal(r1, r2);
    free(r1);
    free(r2);
    state_free(&f, st2);
    /* every strict prefix is rejected, leaves a destroyable state, never over-reads */
    for (size_t cut = 0; cut < enc.len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, enc.data, cut);
        void *st3 = state_new(&f);
        const uint8_t *pp = copy;
        if (feature_decode(&f, st3, &pp, copy + cut) == 0) fail_msg("%s: prefix %zu/%zu accepted", spec, cut, enc.len);
        state_free(&f, st3);
        free(copy);
    }
    /* decoding over a state that holds data replaces it without leaking */
    p = (const uint8_t *)enc.data;
    assert_int_equal(feature_decode(&f, st, &p, end), 0);
    bv_buf_free(&enc);
    bv_buf_free(&enc2);
    state_free(&f, st);
    feature_release(&f);
}

static void test_roundtrip(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const opcase *oc = &CASES[i];
        char spec[320];
        snprintf(spec, sizeof spec, "{\"op\":\"%s\",\"params\":{%s\"where\":\"(k > 2)\"%s%s}}", oc->op,
                 oc->field ? "\"field\":\"amount\"," : "", *oc->params ? "," : "", oc->params);
        roundtrip_one(spec, 0, 1);
        roundtrip_one(spec, 1, 2);
        roundtrip_one(spec, 150, 3 + i);
        if (oc->win == W_NONE) continue;
        snprintf(spec, sizeof spec, "{\"op\":\"%s\",\"params\":{%s\"window\":\"3s\"%s%s}}", oc->op,
                 oc->field ? "\"field\":\"amount\"," : "", *oc->params ? "," : "", oc->params);
        roundtrip_one(spec, 0, 1);
        roundtrip_one(spec, 150, 300 + i);
    }
    /* strings and lists in value_change_count */
    roundtrip_one("{\"op\":\"value_change_count\",\"params\":{\"field\":\"name\"}}", 50, 9);
    feature f;
    compile_ok(&f, "{\"op\":\"value_change_count\",\"params\":{\"field\":\"any\",\"window\":\"1m\"}}");
    void *st = state_new(&f), *st2 = state_new(&f);
    json_t *list = json_loads("{\"b\":[1],\"a\":2}", 0, NULL);
    push_value(&f, st, bv_str("hello", 5), 1);
    push_value(&f, st, bv_from_json(list), 2);
    push_value(&f, st, bv_str("", 0), 70000);
    json_decref(list);
    bv_buf enc;
    bv_buf_init(&enc);
    feature_encode(&f, st, &enc);
    const uint8_t *p = (const uint8_t *)enc.data;
    assert_int_equal(feature_decode(&f, st2, &p, p + enc.len), 0);
    assert_read(&f, st2, 2, "1");
    assert_read(&f, st2, 70000, "0");
    bv_buf_free(&enc);
    state_free(&f, st);
    state_free(&f, st2);
    feature_release(&f);
}

static void test_decode_garbage(void **state) {
    (void)state;
    static const struct { const char *spec, *hex; } bad[] = {
        /* negative counts */
        { "{\"op\":\"ewma\",\"params\":{\"half_life\":\"1s\"}}", "ffffffffffffffff" "0000000000000000" "0000000000000000" },
        { "{\"op\":\"decayed_count\",\"params\":{\"half_life\":\"1s\"}}", "ffffffffffffffff" "0000000000000000" "0000000000000000" },
        { "{\"op\":\"twa\"}", "ffffffffffffffff" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" },
        /* rate flag not 0/1; rate with fewer than two values */
        { "{\"op\":\"rate_of_change\"}", "0200000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "02" },
        { "{\"op\":\"rate_of_change\"}", "0100000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "01" },
        /* gap count must be events - 1 */
        { "{\"op\":\"inter_arrival_stats\"}", "0300000000000000" "0000000000000000" "0000000000000000" "0500000000000000" "0000000000000000" "0000000000000000" },
        /* burst: slot index beyond the ring; count above max; epoch in the wrong slot */
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1s\"}}", "0500000000000000" "01" "40" "0000000000000000" "0100000000000000" },
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1s\"}}", "0100000000000000" "01" "00" "0000000000000000" "0200000000000000" },
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1s\"}}", "0500000000000000" "01" "00" "e803000000000000" "0100000000000000" },
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1s\"}}", "0500000000000000" "01" "00" "0100000000000000" "0100000000000000" },
        { "{\"op\":\"burst_count\",\"params\":{\"sub_window\":\"1s\"}}", "0500000000000000" "41" },
        /* outliers above the values seen; 65 buckets; duplicate epochs */
        { "{\"op\":\"outlier_count\"}", "0100000000000000" "0000000000000000" "0000000000000000" "0200000000000000" "00" },
        { "{\"op\":\"outlier_count\",\"params\":{\"window\":\"1s\"}}", "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "41" },
        { "{\"op\":\"outlier_count\",\"params\":{\"window\":\"1s\"}}", "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "02"
          "0500000000000000" "0100000000000000" "0000000000000000" "0000000000000000" "0000000000000000"
          "0500000000000000" "0100000000000000" "0000000000000000" "0000000000000000" "0000000000000000" },
        /* value_change_count: changes >= n; n = 0 with a value; unknown value kind */
        { "{\"op\":\"value_change_count\",\"params\":{\"field\":\"any\"}}", "0200000000000000" "0200000000000000" "020100000000000000" "020100000000000000" },
        { "{\"op\":\"value_change_count\",\"params\":{\"field\":\"any\"}}", "0000000000000000" "0000000000000000" "020100000000000000" "00" },
        { "{\"op\":\"value_change_count\",\"params\":{\"field\":\"any\"}}", "0100000000000000" "0000000000000000" "09" },
        { "{\"op\":\"value_change_count\",\"params\":{\"field\":\"any\"}}", "0100000000000000" "0000000000000000" "04ffffff7f61" },
        /* geo: flag not 0/1; negative max speed; lat/lon counts differ; ring above samples */
        { "{\"op\":\"geo_velocity\"}", "02" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" },
        { "{\"op\":\"geo_velocity\"}", "01" "0000000000000000" "0000000000000000" "0000000000000000" "000000000000f0bf" },
        { "{\"op\":\"geo_distance\"}", "05" "0000000000000000" "0000000000000000" "0000000000000000" },
        { "{\"op\":\"geo_spread\"}", "0200000000000000" "0000000000000000" "0000000000000000" "0300000000000000" "0000000000000000" "0000000000000000" },
        { "{\"op\":\"distance_from_home\",\"params\":{\"samples\":1}}", "0200000000000000" "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000000" },
        { "{\"op\":\"distance_from_home\"}", "ffffffffffffff7f" "0000000000000000" },
        { "{\"op\":\"distance_from_home\"}", "ffffffffffffffff" },
        /* a windowed kind: the bucket list rejects more than 64 */
        { "{\"op\":\"trend\",\"params\":{\"window\":\"1h\"}}", "41" },
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compile_errors),
        cmocka_unit_test(test_compile_ok),
        cmocka_unit_test(test_empty_values),
        cmocka_unit_test(test_wrong_types_ignored),
        cmocka_unit_test(test_decay_examples),
        cmocka_unit_test(test_velocity_examples),
        cmocka_unit_test(test_geo_examples),
        cmocka_unit_test(test_window_examples),
        cmocka_unit_test(test_bruteforce_lifetime),
        cmocka_unit_test(test_bruteforce_windowed),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_decode_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
