/*
 * op_geo_distance.c - `geo_distance`: cumulative great-circle distance in km between
 * consecutive points of the entity. Lifetime
 * only; params and point reading in geo.h. Empty 0.0 (also after a single point). A NaN
 * step (non-finite or out-of-range coordinates) makes the total NaN, read as null, as
 * in the reference.
 *
 * State: 32 bytes, all-zero = empty.
 */
#include "geo.h"
#include "codec.h"

typedef struct gd_st {
    int64_t has_prev;         /* 0/1 */
    double prev_lat, prev_lon;
    double total;
} gd_st;

static void gd_update(const feature *f, void *st, const op_input *in) {
    gd_st *s = st;
    double lat, lon;
    if (!geo_point(f, in, &lat, &lon)) return;
    if (s->has_prev) s->total += geo_haversine_memo(in->memo, s->prev_lat, s->prev_lon, lat, lon);
    s->has_prev = 1;
    s->prev_lat = lat;
    s->prev_lon = lon;
}

static void gd_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    jsonw_f64(w, ((const gd_st *)st)->total);
}

static void gd_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const gd_st *s = st;
    cod_put_u8(out, (uint8_t)s->has_prev);
    cod_put_f64(out, s->prev_lat);
    cod_put_f64(out, s->prev_lon);
    cod_put_f64(out, s->total);
}

static int gd_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    gd_st t;
    uint8_t hp;
    if (cod_get_u8(p, end, &hp) < 0 || hp > 1 || cod_get_f64(p, end, &t.prev_lat) < 0 ||
        cod_get_f64(p, end, &t.prev_lon) < 0 || cod_get_f64(p, end, &t.total) < 0)
        return -1;
    t.has_prev = hp;
    *(gd_st *)st = t;
    return 0;
}

const struct op_vtable op_geo_distance = {
    .name = "geo_distance",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(gd_st),
    .parse = geo_parse,
    .update = gd_update,
    .read = gd_read,
    .encode = gd_encode,
    .decode = gd_decode,
};
