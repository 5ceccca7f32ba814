/*
 * op_hour_of_day_histogram.c - `hour_of_day_histogram`: matched events per UTC hour of
 * arrival, hour = floor(now_ms / 3,600,000) mod 24 (floor division, so times before
 * 1970 map to valid hours), as a JSON array of 24 counts.
 * Lifetime only; no field. State: one pointer (8 bytes) to the 24 u64 counts as a slots
 * array (slots.h: the hours seen, 16 bytes each, until the dense 192 bytes are smaller),
 * NULL = all zero. Snapshot form (either representation): the 24 counts. Empty: 24
 * zeros.
 */
#include "op.h"
#include "codec.h"
#include "slots.h"

#define HOD_HOURS 24

typedef struct hod_st { slots *c; } hod_st;

static const slots_shape HOD_SHAPE = { HOD_HOURS, sizeof(uint64_t) };

static unsigned hod_index(int64_t now_ms) {
    int64_t h = now_ms / 3600000;
    if (now_ms % 3600000 < 0) h--;
    h %= 24;
    return (unsigned)(h < 0 ? h + 24 : h);
}

static uint64_t hod_count(const hod_st *s, unsigned i) {
    const uint64_t *c = slots_get(s->c, &HOD_SHAPE, i);
    return c ? *c : 0;
}

static void hod_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    uint64_t *c = slots_put(&((hod_st *)st)->c, &HOD_SHAPE, hod_index(in->now_ms));
    if (*c < UINT64_MAX) (*c)++;
}

static void hod_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const hod_st *s = st;
    jsonw_arr_begin(w);
    for (unsigned i = 0; i < HOD_HOURS; i++) jsonw_u64(w, hod_count(s, i));
    jsonw_arr_end(w);
}

static void hod_destroy(const feature *f, void *st) {
    (void)f;
    slots_free(&((hod_st *)st)->c);
}

static void hod_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const hod_st *s = st;
    for (unsigned i = 0; i < HOD_HOURS; i++) cod_put_u64(out, hod_count(s, i));
}

static int hod_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    hod_st t = { NULL };
    const uint8_t *q = *p;
    for (unsigned i = 0; i < HOD_HOURS; i++) {
        uint64_t v;
        if (cod_get_u64(&q, end, &v) < 0) {
            slots_free(&t.c);
            return -1;
        }
        if (v) *(uint64_t *)slots_put(&t.c, &HOD_SHAPE, i) = v;
    }
    hod_destroy(f, st);
    *(hod_st *)st = t;
    *p = q;
    return 0;
}

static void hod_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)f; (void)v;
    op_prefetch_ptr(((const hod_st *)st)->c);
}

const struct op_vtable op_hour_of_day_histogram = {
    .name = "hour_of_day_histogram",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(hod_st),
    .update = hod_update,
    .prefetch = hod_prefetch,
    .read = hod_read,
    .destroy = hod_destroy,
    .encode = hod_encode,
    .decode = hod_decode,
};
