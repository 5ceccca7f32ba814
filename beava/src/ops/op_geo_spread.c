/*
 * op_geo_spread.c - `geo_spread`: spatial spread in km of the matched points: Welford
 * on lat and on lon, population variances m2/n, result
 * sqrt(var_lat * 111.32^2 + var_lon * (111.32 cos(mean_lat))^2) (reference-pipelines.md
 * §2.4). Lifetime only. State: 40 bytes. Empty: null (n < 2).
 */
#include "geo.h"
#include "../sketch/codec.h"

typedef struct gspread {
    int64_t n;
    double mlat, m2lat, mlon, m2lon;
} gspread;

static void gspread_update(const feature *f, void *st, const op_input *in) {
    gspread *s = st;
    double lat, lon;
    if (!geo_point(f, in->row, &lat, &lon)) return;
    s->n++;
    double d = lat - s->mlat;
    s->mlat += d / (double)s->n;
    s->m2lat += d * (lat - s->mlat);
    d = lon - s->mlon;
    s->mlon += d / (double)s->n;
    s->m2lon += d * (lon - s->mlon);
}

static void gspread_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const gspread *s = st;
    if (s->n < 2) { jsonw_null(w); return; }
    double vlat = s->m2lat / (double)s->n, vlon = s->m2lon / (double)s->n;
    double klon = 111.32 * cos(s->mlat * M_PI / 180.0);
    jsonw_f64(w, sqrt(vlat * 111.32 * 111.32 + vlon * klon * klon));
}

static void gspread_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const gspread *s = st;
    cod_put_i64(out, s->n);
    cod_put_f64(out, s->mlat);
    cod_put_f64(out, s->m2lat);
    cod_put_f64(out, s->mlon);
    cod_put_f64(out, s->m2lon);
}

static int gspread_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    gspread t;
    if (cod_get_i64(p, end, &t.n) < 0 || t.n < 0 || cod_get_f64(p, end, &t.mlat) < 0 ||
        cod_get_f64(p, end, &t.m2lat) < 0 || cod_get_f64(p, end, &t.mlon) < 0 ||
        cod_get_f64(p, end, &t.m2lon) < 0)
        return -1;
    *(gspread *)st = t;
    return 0;
}

const struct op_vtable op_geo_spread = {
    .name = "geo_spread",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(gspread),
    .parse = geo_parse,
    .update = gspread_update,
    .read = gspread_read,
    .encode = gspread_encode,
    .decode = gspread_decode,
};
