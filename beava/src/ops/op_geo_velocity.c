/*
 * op_geo_velocity.c - `geo_velocity`: the highest speed in km/h between consecutive
 * points of the entity. Lifetime only;
 * params and point reading in geo.h.
 *
 * With a previous point and dt = now - prev_t > 0: kmh = d / (dt / 3,600,000); max
 * keeps the largest (a NaN speed never replaces it). The previous point always moves
 * to the current one. Output the max: null before the first point, 0.0 after it.
 *
 * State: 40 bytes, all-zero = empty.
 */
#include "geo.h"
#include "codec.h"

typedef struct gv_st {
    int64_t has_prev;         /* 0/1 */
    int64_t prev_t;
    double prev_lat, prev_lon;
    double max;
} gv_st;

static void gv_update(const feature *f, void *st, const op_input *in) {
    gv_st *s = st;
    double lat, lon;
    if (!geo_point(f, in, &lat, &lon)) return;
    if (s->has_prev) {
        double dt = (double)in->now_ms - (double)s->prev_t;
        if (dt > 0) {
            double kmh = geo_haversine_memo(in->memo, s->prev_lat, s->prev_lon, lat, lon) / (dt / 3600000.0);
            if (kmh > s->max) s->max = kmh;
        }
    }
    s->has_prev = 1;
    s->prev_t = in->now_ms;
    s->prev_lat = lat;
    s->prev_lon = lon;
}

static void gv_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const gv_st *s = st;
    if (s->has_prev) jsonw_f64(w, s->max);
    else jsonw_null(w);
}

static void gv_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const gv_st *s = st;
    cod_put_u8(out, (uint8_t)s->has_prev);
    cod_put_i64(out, s->prev_t);
    cod_put_f64(out, s->prev_lat);
    cod_put_f64(out, s->prev_lon);
    cod_put_f64(out, s->max);
}

static int gv_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    gv_st t;
    uint8_t hp;
    if (cod_get_u8(p, end, &hp) < 0 || hp > 1 || cod_get_i64(p, end, &t.prev_t) < 0 ||
        cod_get_f64(p, end, &t.prev_lat) < 0 || cod_get_f64(p, end, &t.prev_lon) < 0 ||
        cod_get_f64(p, end, &t.max) < 0 || !(t.max >= 0))
        return -1;
    t.has_prev = hp;
    *(gv_st *)st = t;
    return 0;
}

const struct op_vtable op_geo_velocity = {
    .name = "geo_velocity",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(gv_st),
    .parse = geo_parse,
    .update = gv_update,
    .read = gv_read,
    .encode = gv_encode,
    .decode = gv_decode,
};
