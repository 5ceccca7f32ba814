/*
 * op_geo_spread.c - `geo_spread`: spatial spread of the entity's points in km. Lifetime
 * only; params and point reading in geo.h.
 *
 * Welford summaries of latitude and longitude separately; with population variances
 * m2/n: sqrt(var_lat*111.32^2 + var_lon*(111.32*cos(mean_lat))^2) (mean_lat in degrees,
 * converted to radians for the cosine). Null while n < 2.
 *
 * State: 48 bytes (two welford), all-zero = empty.
 */
#include "geo.h"
#include "welford.h"

typedef struct gs_st {
    welford lat, lon;
} gs_st;

static void gs_update(const feature *f, void *st, const op_input *in) {
    gs_st *s = st;
    double lat, lon;
    if (!geo_point(f, in, &lat, &lon)) return;
    welford_add(&s->lat, lat);
    welford_add(&s->lon, lon);
}

static void gs_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const gs_st *s = st;
    if (s->lat.n < 2) {
        jsonw_null(w);
        return;
    }
    double n = (double)s->lat.n;
    double vlat = s->lat.m2 / n, vlon = s->lon.m2 / n;
    double klon = 111.32 * cos(geo_rad(s->lat.mean));
    jsonw_f64(w, sqrt(vlat * 111.32 * 111.32 + vlon * klon * klon));
}

static void gs_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const gs_st *s = st;
    welford_encode(out, &s->lat);
    welford_encode(out, &s->lon);
}

static int gs_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    gs_st t;
    if (welford_decode(p, end, &t.lat) < 0 || welford_decode(p, end, &t.lon) < 0 || t.lat.n != t.lon.n)
        return -1;
    *(gs_st *)st = t;
    return 0;
}

const struct op_vtable op_geo_spread = {
    .name = "geo_spread",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(gs_st),
    .parse = geo_parse,
    .update = gs_update,
    .read = gs_read,
    .encode = gs_encode,
    .decode = gs_decode,
};
