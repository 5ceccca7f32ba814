/*
 * op_geo_distance.c - `geo_distance`: cumulative haversine distance in km between
 * consecutive matched points (lat/lon fields, geo.h) (reference-pipelines.md §2.4).
 * Lifetime only. State: 32 bytes. Empty: 0.0.
 */
#include "geo.h"
#include "../sketch/codec.h"

typedef struct gdist {
    double lat, lon, total;
    int64_t has;
} gdist;

static void gdist_update(const feature *f, void *st, const op_input *in) {
    gdist *s = st;
    double lat, lon;
    if (!geo_point(f, in->row, &lat, &lon)) return;
    if (s->has) s->total += geo_km(s->lat, s->lon, lat, lon);
    s->lat = lat;
    s->lon = lon;
    s->has = 1;
}

static void gdist_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    jsonw_f64(w, ((const gdist *)st)->total);
}

static void gdist_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const gdist *s = st;
    cod_put_u8(out, (uint8_t)s->has);
    cod_put_f64(out, s->lat);
    cod_put_f64(out, s->lon);
    cod_put_f64(out, s->total);
}

static int gdist_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    gdist t;
    uint8_t has;
    if (cod_get_u8(p, end, &has) < 0 || has > 1 || cod_get_f64(p, end, &t.lat) < 0 ||
        cod_get_f64(p, end, &t.lon) < 0 || cod_get_f64(p, end, &t.total) < 0)
        return -1;
    t.has = has;
    *(gdist *)st = t;
    return 0;
}

const struct op_vtable op_geo_distance = {
    .name = "geo_distance",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(gdist),
    .parse = geo_parse,
    .update = gdist_update,
    .read = gdist_read,
    .encode = gdist_encode,
    .decode = gdist_decode,
};
