/*
 * op_geo_velocity.c - `geo_velocity`: the highest speed in km/h between consecutive
 * matched points (lat/lon fields, geo.h): with a previous point and dt > 0,
 * kmh = d / (dt / 3,600,000); the previous point always moves (reference-pipelines.md
 * §2.4). Lifetime only. State: 40 bytes. Empty: null (0.0 after the first point).
 */
#include "geo.h"
#include "../sketch/codec.h"

typedef struct gvel {
    double lat, lon, max;
    int64_t t;
    int64_t has;
} gvel;

static void gvel_update(const feature *f, void *st, const op_input *in) {
    gvel *s = st;
    double lat, lon;
    if (!geo_point(f, in->row, &lat, &lon)) return;
    if (s->has) {
        int64_t dt;
        if (!__builtin_sub_overflow(in->now_ms, s->t, &dt) && dt > 0) {
            double kmh = geo_km(s->lat, s->lon, lat, lon) / ((double)dt / 3600000.0);
            if (kmh > s->max) s->max = kmh;
        }
    }
    s->lat = lat;
    s->lon = lon;
    s->t = in->now_ms;
    s->has = 1;
}

static void gvel_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const gvel *s = st;
    if (s->has) jsonw_f64(w, s->max); else jsonw_null(w);
}

static void gvel_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const gvel *s = st;
    cod_put_u8(out, (uint8_t)s->has);
    cod_put_f64(out, s->lat);
    cod_put_f64(out, s->lon);
    cod_put_f64(out, s->max);
    cod_put_i64(out, s->t);
}

static int gvel_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    gvel t;
    uint8_t has;
    if (cod_get_u8(p, end, &has) < 0 || has > 1 || cod_get_f64(p, end, &t.lat) < 0 ||
        cod_get_f64(p, end, &t.lon) < 0 || cod_get_f64(p, end, &t.max) < 0 || cod_get_i64(p, end, &t.t) < 0)
        return -1;
    t.has = has;
    *(gvel *)st = t;
    return 0;
}

const struct op_vtable op_geo_velocity = {
    .name = "geo_velocity",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(gvel),
    .parse = geo_parse,
    .update = gvel_update,
    .read = gvel_read,
    .encode = gvel_encode,
    .decode = gvel_decode,
};
