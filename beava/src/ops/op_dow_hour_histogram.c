/*
 * op_dow_hour_histogram.c - `dow_hour_histogram`: matched events per (UTC weekday,
 * hour): day = floor(now / 86,400,000), dow = (day + 3) mod 7 with Mon = 0; output an
 * object of all 168 keys "<Mon..Sun>-<HH>" in ascending byte order
 * (reference-pipelines.md §2.4). Lifetime only. State: pointer to 168 u64 counters
 * allocated on the first event (8 bytes). Empty: all 168 keys with 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include "op.h"
#include "../sketch/codec.h"

#define DOW_N 168

static const char *const DAYS[7] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
/* The day indices in ascending byte order of their names: Fri Mon Sat Sun Thu Tue Wed. */
static const int DAY_ORDER[7] = { 4, 0, 5, 6, 3, 1, 2 };

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static int64_t floor_mod(int64_t a, int64_t b) {
    int64_t r = a % b;
    return r < 0 ? r + b : r;
}

static void dow_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    uint64_t **c = st;
    if (!*c && !(*c = calloc(DOW_N, sizeof **c))) abort();
    int64_t dow = floor_mod(floor_div(in->now_ms, 86400000) + 3, 7);
    int64_t hour = floor_mod(floor_div(in->now_ms, 3600000), 24);
    (*c)[dow * 24 + hour]++;
}

static void dow_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const uint64_t *c = *(uint64_t *const *)st;
    char key[8];
    jsonw_obj_begin(w);
    for (int i = 0; i < 7; i++) {
        int d = DAY_ORDER[i];
        for (int h = 0; h < 24; h++) {
            snprintf(key, sizeof key, "%s-%02d", DAYS[d], h);
            jsonw_key(w, key);
            jsonw_u64(w, c ? c[d * 24 + h] : 0);
        }
    }
    jsonw_obj_end(w);
}

static void dow_destroy(const feature *f, void *st) {
    (void)f;
    uint64_t **c = st;
    free(*c);
    *c = NULL;
}

static void dow_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const uint64_t *c = *(uint64_t *const *)st;
    cod_put_u8(out, c != NULL);
    if (c)
        for (int i = 0; i < DOW_N; i++) cod_put_u64(out, c[i]);
}

static int dow_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    uint8_t has;
    dow_destroy(f, st);
    if (cod_get_u8(p, end, &has) < 0 || has > 1) return -1;
    if (!has) return 0;
    if ((size_t)(end - *p) < DOW_N * 8) return -1;
    uint64_t *c = malloc(DOW_N * sizeof *c);
    if (!c) abort();
    for (int i = 0; i < DOW_N; i++) cod_get_u64(p, end, &c[i]);
    *(uint64_t **)st = c;
    return 0;
}

const struct op_vtable op_dow_hour_histogram = {
    .name = "dow_hour_histogram",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(uint64_t *),
    .update = dow_update,
    .read = dow_read,
    .destroy = dow_destroy,
    .encode = dow_encode,
    .decode = dow_decode,
};
