/*
 * op_hour_of_day_histogram.c - `hour_of_day_histogram`: matched events per UTC hour of
 * arrival, hour = floor(now_ms / 3,600,000) mod 24 (floor division, so times before
 * 1970 map to valid hours), as a JSON array of 24 counts (reference-pipelines.md §2.3
 * row 45, §2.4). Lifetime only; no field. State: 24 u64 counts inline (192 bytes).
 * Snapshot form: the 24 counts. Empty: 24 zeros.
 */
#include "op.h"
#include "codec.h"

typedef struct hod_st { uint64_t c[24]; } hod_st;

static unsigned hod_index(int64_t now_ms) {
    int64_t h = now_ms / 3600000;
    if (now_ms % 3600000 < 0) h--;
    h %= 24;
    return (unsigned)(h < 0 ? h + 24 : h);
}

static void hod_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    uint64_t *c = &((hod_st *)st)->c[hod_index(in->now_ms)];
    if (*c < UINT64_MAX) (*c)++;
}

static void hod_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const hod_st *s = st;
    jsonw_arr_begin(w);
    for (int i = 0; i < 24; i++) jsonw_u64(w, s->c[i]);
    jsonw_arr_end(w);
}

static void hod_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const hod_st *s = st;
    for (int i = 0; i < 24; i++) cod_put_u64(out, s->c[i]);
}

static int hod_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    (void)f;
    hod_st t;
    const uint8_t *q = *p;
    for (int i = 0; i < 24; i++)
        if (cod_get_u64(&q, end, &t.c[i]) < 0) return -1;
    *(hod_st *)st = t;
    *p = q;
    return 0;
}

const struct op_vtable op_hour_of_day_histogram = {
    .name = "hour_of_day_histogram",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(hod_st),
    .update = hod_update,
    .read = hod_read,
    .encode = hod_encode,
    .decode = hod_decode,
};
