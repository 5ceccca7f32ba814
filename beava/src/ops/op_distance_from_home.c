/*
 * op_distance_from_home.c - `distance_from_home(samples=S)`: great-circle distance in km
 * from the entity's latest point to the centroid (mean latitude, mean longitude) of its
 * last S points, the latest included.
 * Lifetime only; `samples` default 100, at least 1 (not validated: smaller values are
 * raised to 1, a non-integer means the default); params and point reading in geo.h.
 * Null before the first point.
 *
 * The points live in a ring allocated on the first point and grown by doubling up to
 * S, so a large `samples` costs memory only as points arrive. While fewer than S are
 * held they sit in order at [0, count); once full, the oldest is at `head`. The centroid
 * is recomputed at read time (O(S), S = 100 by default) rather than kept as running
 * sums, which would drift as points leave the ring.
 *
 * State: 32 bytes {points pointer, cap, count, head}.
 */
#include "geo.h"
#include "codec.h"

typedef struct dfh_st {
    double *pts;              /* cap pairs (lat, lon) */
    int64_t cap, count, head;
} dfh_st;

static int dfh_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    int64_t n;
    int r = param_int(params, "samples", &n);
    f->p.samples = r == 1 ? (n < 1 ? 1 : n) : 100;
    return geo_parse(f, params, path, err);
}

static void dfh_grow(dfh_st *s, int64_t S) {
    int64_t cap = s->cap ? s->cap * 2 : 8;
    if (cap > S) cap = S;
    double *p = realloc(s->pts, (size_t)cap * 2 * sizeof(double));
    if (!p) abort();
    s->pts = p;
    s->cap = cap;
}

static void dfh_push(dfh_st *s, int64_t S, double lat, double lon) {
    int64_t i;
    if (s->count < S) {
        if (s->count == s->cap) dfh_grow(s, S);
        i = s->count++;
    } else {
        i = s->head;
        s->head = (s->head + 1) % S;
    }
    s->pts[2 * i] = lat;
    s->pts[2 * i + 1] = lon;
}

static void dfh_update(const feature *f, void *st, const op_input *in) {
    double lat, lon;
    if (geo_point(f, in, &lat, &lon)) dfh_push(st, f->p.samples, lat, lon);
}

static void dfh_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const dfh_st *s = st;
    if (!s->count) {
        jsonw_null(w);
        return;
    }
    /* oldest first, so a decoded (re-linearised) ring sums in the same order */
    double slat = 0, slon = 0;
    for (int64_t k = 0; k < s->count; k++) {
        int64_t i = (s->head + k) % s->count;
        slat += s->pts[2 * i];
        slon += s->pts[2 * i + 1];
    }
    int64_t last = (s->head + s->count - 1) % s->count;
    double n = (double)s->count;
    jsonw_f64(w, geo_haversine(s->pts[2 * last], s->pts[2 * last + 1], slat / n, slon / n));
}

static void dfh_destroy(const feature *f, void *st) {
    (void)f;
    dfh_st *s = st;
    free(s->pts);
    s->pts = NULL;
    s->cap = s->count = s->head = 0;
}

/* i64 count, then count (lat, lon) pairs oldest first */
static void dfh_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const dfh_st *s = st;
    cod_put_i64(out, s->count);
    for (int64_t k = 0; k < s->count; k++) {
        int64_t i = (s->head + k) % s->count;
        cod_put_f64(out, s->pts[2 * i]);
        cod_put_f64(out, s->pts[2 * i + 1]);
    }
}

static int dfh_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    dfh_st t = { NULL, 0, 0, 0 };
    int64_t n;
    if (cod_get_i64(p, end, &n) < 0 || n < 0 || n > f->p.samples || (uint64_t)n > (uint64_t)(end - *p) / 16)
        return -1;
    for (int64_t k = 0; k < n; k++) {
        double lat, lon;
        if (cod_get_f64(p, end, &lat) < 0 || cod_get_f64(p, end, &lon) < 0) {
            free(t.pts);
            return -1;
        }
        dfh_push(&t, f->p.samples, lat, lon);
    }
    dfh_destroy(f, st);
    *(dfh_st *)st = t;
    return 0;
}

/* The pair dfh_push writes (when it does not grow the array). */
static void dfh_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)v;
    const dfh_st *s = st;
    if (!s->pts) return;
    if (s->count < f->p.samples) { if (s->count < s->cap) __builtin_prefetch(&s->pts[2 * s->count]); }
    else __builtin_prefetch(&s->pts[2 * s->head]);
}

const struct op_vtable op_distance_from_home = {
    .name = "distance_from_home",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(dfh_st),
    .parse = dfh_parse,
    .update = dfh_update,
    .prefetch = dfh_prefetch,
    .read = dfh_read,
    .destroy = dfh_destroy,
    .encode = dfh_encode,
    .decode = dfh_decode,
};
