/*
 * op_dow_hour_histogram.c - `dow_hour_histogram`: matched events per (UTC day of week,
 * hour) of arrival, as an object of all 168 keys "Mon-00" .. "Sun-23". day = floor(now_ms
 * / 86,400,000), dow = (day + 3) mod 7 with Mon = 0 (1970-01-01 was a Thursday), hour =
 * floor(now_ms / 3,600,000) mod 24, floor division throughout. Keys are emitted in
 * ascending byte order (Fri, Mon, Sat, Sun, Thu, Tue, Wed; hours ascending). Lifetime
 * only; no field.
 *
 * State: one pointer (8 bytes) to the 168 u64 counts as a slots array (slots.h): sparse
 * (the few hours an entity was active, 16 bytes each) until that is as big as the dense
 * 1,344 bytes. NULL before the first event. Snapshot form (either representation):
 * u8 present, then 168 counts if present. Empty: all 168 keys with 0.
 */
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "codec.h"
#include "slots.h"

#define DOW_CELLS 168

typedef struct dow_st { slots *c; } dow_st;

static const slots_shape DOW_SHAPE = { DOW_CELLS, sizeof(uint64_t) };

static uint64_t dow_count(const dow_st *s, unsigned i) {
    const uint64_t *c = slots_get(s->c, &DOW_SHAPE, i);
    return c ? *c : 0;
}

static const char DAY[7][4] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
/* Day indexes in ascending byte order of their names. */
static const int DAY_SORTED[7] = { 4, 0, 5, 6, 3, 1, 2 };

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if (a % b < 0) q--;
    return q;
}

static unsigned dow_index(int64_t now_ms) {
    int64_t day = floor_div(now_ms, 86400000);
    int64_t dow = (day % 7 + 3 + 7) % 7;
    int64_t hour = floor_div(now_ms, 3600000) % 24;
    if (hour < 0) hour += 24;
    return (unsigned)(dow * 24 + hour);
}

static void dow_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    dow_st *s = st;
    uint64_t *c = slots_put(&s->c, &DOW_SHAPE, dow_index(in->now_ms));
    if (*c < UINT64_MAX) (*c)++;
}

static void dow_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const dow_st *s = st;
    char key[8];
    jsonw_obj_begin(w);
    for (int i = 0; i < 7; i++) {
        int d = DAY_SORTED[i];
        for (int h = 0; h < 24; h++) {
            memcpy(key, DAY[d], 3);
            key[3] = '-';
            key[4] = (char)('0' + h / 10);
            key[5] = (char)('0' + h % 10);
            jsonw_keyn(w, key, 6);
            jsonw_u64(w, dow_count(s, (unsigned)(d * 24 + h)));
        }
    }
    jsonw_obj_end(w);
}

static void dow_destroy(const feature *f, void *st) {
    (void)f;
    dow_st *s = st;
    slots_free(&s->c);
}

static void dow_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const dow_st *s = st;
    cod_put_u8(out, s->c ? 1 : 0);
    if (s->c)
        for (unsigned i = 0; i < DOW_CELLS; i++) cod_put_u64(out, dow_count(s, i));
}

static int dow_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    dow_st *s = st;
    const uint8_t *q = *p;
    uint8_t present;
    slots *c = NULL;
    if (cod_get_u8(&q, end, &present) < 0 || present > 1) return -1;
    if (present) {
        if ((size_t)(end - q) < DOW_CELLS * 8) return -1;
        for (unsigned i = 0; i < DOW_CELLS; i++) {
            uint64_t v = 0;
            cod_get_u64(&q, end, &v);                  /* length checked above */
            if (v) *(uint64_t *)slots_put(&c, &DOW_SHAPE, i) = v;
        }
        if (!c) slots_put(&c, &DOW_SHAPE, 0);          /* present, all zero: stays present */
    }
    dow_destroy(f, st);
    s->c = c;
    *p = q;
    return 0;
}

static void dow_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)f; (void)v;
    op_prefetch_ptr(((const dow_st *)st)->c);
}

const struct op_vtable op_dow_hour_histogram = {
    .name = "dow_hour_histogram",
    .flags = OPF_LIFETIME_ONLY,
    .state_size = sizeof(dow_st),
    .update = dow_update,
    .prefetch = dow_prefetch,
    .read = dow_read,
    .destroy = dow_destroy,
    .encode = dow_encode,
    .decode = dow_decode,
};
