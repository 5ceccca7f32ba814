/*
 * geo.h - what the four geo kinds (geo_velocity, geo_distance, geo_spread,
 * distance_from_home) share: the
 * `lat_field`/`lon_field` params, reading a point from the row, and the haversine
 * distance.
 *
 * Params: `lat_field` (alias `lat`) and `lon_field` (alias `lon`), defaults "lat" and
 * "lon"; the long name wins when both are given; a non-string is ignored (the
 * reference does not validate geo field names). A point is read when both fields hold
 * an I64 or F64; otherwise the event is ignored by the kind.
 *
 * Haversine with Earth radius 6371.0 km: a = sin^2(dphi/2) + cos(phi1)cos(phi2)
 * sin^2(dlambda/2), d = 2R atan2(sqrt(a), sqrt(1-a)). Out-of-range coordinates can make
 * a > 1 and d NaN, which reads as JSON null (jsonw).
 */
#ifndef BEAVA_OPS_GEO_H
#define BEAVA_OPS_GEO_H

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "param.h"

#define GEO_EARTH_R_KM 6371.0

static inline char *geo_field_param(const json_t *params, const char *key, const char *alias,
                                    const char *dflt) {
    const char *s = NULL;
    if (param_str(params, key, &s) != 1 && param_str(params, alias, &s) != 1) s = dflt;
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

/* The parse hook of every geo kind (p.lat_field / p.lon_field, freed by feature_release). */
static inline int geo_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    f->p.lat_field = geo_field_param(params, "lat_field", "lat", "lat");
    f->p.lon_field = geo_field_param(params, "lon_field", "lon", "lon");
    return 0;
}

/* The event's point; false when either coordinate is missing or not numeric. */
static inline bool geo_point(const feature *f, const op_input *in, double *lat, double *lon) {
    const bv_value *a = bv_row_field_at(in->row, f->p.lat_field, f->p.lat_len, f->p.lat_pos);
    const bv_value *b = bv_row_field_at(in->row, f->p.lon_field, f->p.lon_len, f->p.lon_pos);
    return a && b && bv_as_f64(a, lat) && bv_as_f64(b, lon);
}

static inline double geo_rad(double deg) { return deg * (M_PI / 180.0); }

/* Great-circle distance in km. */
static inline double geo_haversine(double lat1, double lon1, double lat2, double lon2) {
    double p1 = geo_rad(lat1), p2 = geo_rad(lat2);
    double sdp = sin(geo_rad(lat2 - lat1) / 2), sdl = sin(geo_rad(lon2 - lon1) / 2);
    double a = sdp * sdp + cos(p1) * cos(p2) * sdl * sdl;
    return 2 * GEO_EARTH_R_KM * atan2(sqrt(a), sqrt(1 - a));
}

/* geo_haversine through the row's memo (op.h): geo_distance and geo_velocity of one
 * entity usually measure the same step. Inputs compared bit for bit, so the result is
 * the one geo_haversine gives. */
static inline double geo_haversine_memo(op_memo *m, double lat1, double lon1, double lat2, double lon2) {
    double in[4] = { lat1, lon1, lat2, lon2 };
    if (m->hav_valid && memcmp(m->hav_in, in, sizeof in) == 0) return m->hav_out;
    memcpy(m->hav_in, in, sizeof in);
    m->hav_out = geo_haversine(lat1, lon1, lat2, lon2);
    m->hav_valid = true;
    return m->hav_out;
}

#endif
