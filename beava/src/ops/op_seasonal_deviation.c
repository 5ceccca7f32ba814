/*
 * op_seasonal_deviation.c - `seasonal_deviation`: the z-score of the latest numeric value
 * of `field` against the running baseline of its UTC hour of arrival. Per hour h =
 * floor(now_ms / 3,600,000) mod 24 it keeps (n, sum, sum of squares) of I64/F64 values
 * (others ignored) and remembers the latest (value, hour). Read: (v - mean_h) /
 * sqrt(var_h) with the textbook sample variance var_h = (sumsq - sum*sum/n) / (n - 1), as
 * the reference computes it (not Welford); null when n_h < 2 or var_h <= 0. Lifetime
 * only; `field` neither required nor checked at register time.
 *
 * State: pointer to the 24 hour sums as a slots array (slots.h: only the hours seen,
 * 32 bytes each, until the dense 576 bytes are smaller; NULL before the first value),
 * last value, last hour, has-last flag (24 bytes). Snapshot form (either
 * representation): u8 has; if has: f64 v, u8 hour, then 24 x (u64 n, f64 sum,
 * f64 sumsq), absent hours as zeros. Empty: null.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "codec.h"
#include "slots.h"

typedef struct sd_hour { uint64_t n; double sum, sumsq; } sd_hour;

#define SD_HOURS 24

static const slots_shape SD_SHAPE = { SD_HOURS, sizeof(sd_hour) };

typedef struct sd_st {
    slots *h;                 /* hours seen (sd_hour cells) once a value arrived */
    double last_v;
    int32_t last_h;
    int32_t has;
} sd_st;

static int sd_hour_of(int64_t now_ms) {
    int64_t h = now_ms / 3600000;
    if (now_ms % 3600000 < 0) h--;
    h %= 24;
    return (int)(h < 0 ? h + 24 : h);
}

static void sd_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    sd_st *s = st;
    double v;
    if (!bv_as_f64(in->v, &v)) return;
    int h = sd_hour_of(in->now_ms);
    sd_hour *c = slots_put(&s->h, &SD_SHAPE, (uint32_t)h);
    c->n++;
    c->sum += v;
    c->sumsq += v * v;
    s->last_v = v;
    s->last_h = h;
    s->has = 1;
}

static void sd_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const sd_st *s = st;
    const sd_hour *b = s->has ? slots_get(s->h, &SD_SHAPE, (uint32_t)s->last_h) : NULL;
    if (!b || b->n < 2) {
        jsonw_null(w);
        return;
    }
    double n = (double)b->n, mean = b->sum / n;
    double var = (b->sumsq - b->sum * b->sum / n) / (n - 1.0);
    if (!(var > 0)) jsonw_null(w);
    else jsonw_f64(w, (s->last_v - mean) / sqrt(var));
}

static void sd_destroy(const feature *f, void *st) {
    (void)f;
    sd_st *s = st;
    slots_free(&s->h);
    memset(s, 0, sizeof *s);
}

static void sd_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const sd_st *s = st;
    cod_put_u8(out, s->has ? 1 : 0);
    if (!s->has) return;
    cod_put_f64(out, s->last_v);
    cod_put_u8(out, (uint8_t)s->last_h);
    for (uint32_t i = 0; i < SD_HOURS; i++) {
        static const sd_hour zero;
        const sd_hour *c = slots_get(s->h, &SD_SHAPE, i);
        if (!c) c = &zero;
        cod_put_u64(out, c->n);
        cod_put_f64(out, c->sum);
        cod_put_f64(out, c->sumsq);
    }
}

static int sd_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    sd_st *s = st, t;
    const uint8_t *q = *p;
    uint8_t has, hour;
    memset(&t, 0, sizeof t);
    if (cod_get_u8(&q, end, &has) < 0 || has > 1) return -1;
    if (has) {
        if (cod_get_f64(&q, end, &t.last_v) < 0 || cod_get_u8(&q, end, &hour) < 0 || hour >= 24 ||
            (size_t)(end - q) < 24 * 24)
            return -1;
        for (uint32_t i = 0; i < SD_HOURS; i++) {      /* length checked above */
            static const sd_hour zero;
            sd_hour c = zero;
            cod_get_u64(&q, end, &c.n);
            cod_get_f64(&q, end, &c.sum);
            cod_get_f64(&q, end, &c.sumsq);
            if (memcmp(&c, &zero, sizeof c) != 0) *(sd_hour *)slots_put(&t.h, &SD_SHAPE, i) = c;
        }
        const sd_hour *last = slots_get(t.h, &SD_SHAPE, hour);
        if (!last || last->n == 0) {
            slots_free(&t.h);
            return -1;
        }
        t.last_h = hour;
        t.has = 1;
    }
    sd_destroy(f, st);
    *s = t;
    *p = q;
    return 0;
}

static void sd_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)f; (void)v;
    op_prefetch_ptr(((const sd_st *)st)->h);
}

const struct op_vtable op_seasonal_deviation = {
    .name = "seasonal_deviation",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
    .state_size = sizeof(sd_st),
    .update = sd_update,
    .prefetch = sd_prefetch,
    .read = sd_read,
    .destroy = sd_destroy,
    .encode = sd_encode,
    .decode = sd_decode,
};
