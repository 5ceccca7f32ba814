/*
 * op_hour_of_day_histogram.c - `hour_of_day_histogram`: matched events per UTC hour of
 * arrival, index floor(now / 3,600,000) mod 24 (floor also before 1970), output as a
 * JSON array of 24 integers (reference-pipelines.md §2.4). Lifetime only.
 * State: pointer to 24 u64 counters allocated on the first event (8 bytes).
 * Empty: 24 zeros.
 */
#include <stdlib.h>
#include "op.h"
#include "../sketch/codec.h"

#define HOD_N 24

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static void hod_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    uint64_t **c = st;
    if (!*c && !(*c = calloc(HOD_N, sizeof **c))) abort();
    int64_t h = floor_div(in->now_ms, 3600000) % HOD_N;
    (*c)[h < 0 ? h + HOD_N : h]++;
}

static void hod_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const uint64_t *c = *(uint64_t *const *)st;
    jsonw_arr_begin(w);
    for (int i = 0; i < HOD_N; i++) jsonw_u64(w, c ? c[i] : 0);
    jsonw_arr_end(w);
}

static void hod_destroy(const feature *f, void *st) {
    (void)f;
    uint64_t **c = st;
    free(*c);
    *c = NULL;
}

static void hod_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const uint64_t *c = *(uint64_t *const *)st;
    cod_put_u8(out, c != NULL);
    if (c)
        for (int i = 0; i < HOD_N; i++) cod_put_u64(out, c[i]);
}

static int hod_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    uint8_t has;
    hod_destroy(f, st);
    if (cod_get_u8(p, end, &has) < 0 || has > 1) return -1;
    if (!has) return 0;
    if ((size_t)(end - *p) < HOD_N * 8) return -1;
    uint64_t *c = malloc(HOD_N * sizeof *c);
    if (!c) abort();
    for (int i = 0; i < HOD_N; i++) cod_get_u64(p, end, &c[i]);
    *(uint64_t **)st = c;
    return 0;
}

const struct op_vtable op_hour_of_day_histogram = {
    .name = "hour_of_day_histogram",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(uint64_t *),
    .update = hod_update,
    .read = hod_read,
    .destroy = hod_destroy,
    .encode = hod_encode,
    .decode = hod_decode,
};
