/*
 * op_distance_from_home.c - `distance_from_home(samples=S)`: haversine distance in km
 * from the latest matched point to the mean (lat, lon) of the last S points, the latest
 * included (reference-pipelines.md §2.4). S defaults to 100, at least 1 (capped at
 * 2^24). Lifetime only. State: a ring of points allocated on the first point and grown
 * by doubling (16 bytes fixed). Empty: null.
 */
#include "geo.h"
#include "../sketch/codec.h"

#define DFH_MAX (1 << 24)

typedef struct pring {
    double *pt;               /* lat, lon pairs */
    uint32_t n, head;         /* held; index of the oldest when full */
} pring;

static int dfh_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    int64_t s;
    if (param_int(params, "samples", &s) != 1) s = 100;
    if (s < 1) s = 1;
    if (s > DFH_MAX) s = DFH_MAX;
    f->p.samples = s;
    return geo_parse(f, params, path, err);
}

static uint32_t pring_cap(const pring *r) {
    uint32_t c = 0;
    if (r->pt) { c = 2; while (c < r->n) c *= 2; }
    return c;
}

static void pring_push(pring *r, double lat, double lon, uint32_t limit) {
    uint32_t i;
    if (r->n < limit) {
        uint32_t cap = pring_cap(r);
        if (r->n == cap) {
            r->pt = realloc(r->pt, (size_t)(cap ? cap * 2 : 2) * 2 * sizeof(double));
            if (!r->pt) abort();
        }
        i = r->n++;
    } else {
        i = r->head;
        r->head = (r->head + 1) % r->n;
    }
    r->pt[2 * i] = lat;
    r->pt[2 * i + 1] = lon;
}

static void dfh_update(const feature *f, void *st, const op_input *in) {
    double lat, lon;
    if (geo_point(f, in->row, &lat, &lon)) pring_push(st, lat, lon, (uint32_t)f->p.samples);
}

static void dfh_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const pring *r = st;
    if (r->n == 0) { jsonw_null(w); return; }
    double slat = 0, slon = 0;
    for (uint32_t i = 0; i < r->n; i++) {          /* oldest first, as the reference sums */
        uint32_t j = (r->head + i) % r->n;
        slat += r->pt[2 * j];
        slon += r->pt[2 * j + 1];
    }
    uint32_t last = (r->head + r->n - 1) % r->n;
    jsonw_f64(w, geo_km(r->pt[2 * last], r->pt[2 * last + 1], slat / r->n, slon / r->n));
}

static void dfh_destroy(const feature *f, void *st) {
    (void)f;
    pring *r = st;
    free(r->pt);
    memset(r, 0, sizeof *r);
}

static void dfh_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const pring *r = st;
    cod_put_u32(out, r->n);
    cod_put_u32(out, r->head);
    for (uint32_t i = 0; i < 2 * r->n; i++) cod_put_f64(out, r->pt[i]);
}

static int dfh_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    pring *r = st;
    uint32_t n, head, limit = (uint32_t)f->p.samples;
    dfh_destroy(f, st);
    if (cod_get_u32(p, end, &n) < 0 || cod_get_u32(p, end, &head) < 0) return -1;
    if (n > limit || (head && (head >= n || n != limit))) return -1;
    if ((size_t)(end - *p) / 16 < n) return -1;
    for (uint32_t i = 0; i < n; i++) {
        double lat, lon;
        cod_get_f64(p, end, &lat);
        cod_get_f64(p, end, &lon);
        pring_push(r, lat, lon, limit);
    }
    r->head = head;
    return 0;
}

const struct op_vtable op_distance_from_home = {
    .name = "distance_from_home",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(pring),
    .parse = dfh_parse,
    .update = dfh_update,
    .read = dfh_read,
    .destroy = dfh_destroy,
    .encode = dfh_encode,
    .decode = dfh_decode,
};
