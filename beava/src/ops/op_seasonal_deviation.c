/*
 * op_seasonal_deviation.c - `seasonal_deviation`: z-score of the latest numeric value
 * of `field` against the values seen in the same UTC hour of day:
 * (v - mean_h) / sqrt((sum_sq - sum^2/n) / (n - 1)); null while that hour holds fewer
 * than 2 values or the variance is <= 0 (reference-pipelines.md §2.4). Lifetime only;
 * `field` not checked. State: pointer to 24 x (n, sum, sum_sq) + the last (value,
 * hour), allocated on the first value (8 bytes). Empty: null.
 */
#include <math.h>
#include <stdlib.h>
#include "op.h"
#include "../sketch/codec.h"

typedef struct hour_acc { uint64_t n; double sum, sum_sq; } hour_acc;

typedef struct seasonal {
    hour_acc h[24];
    double last_v;
    uint32_t last_h;
    uint32_t pad;
} seasonal;

static void sd_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    seasonal **sp = st;
    double v;
    if (!bv_as_f64(in->v, &v)) return;
    if (!*sp && !(*sp = calloc(1, sizeof **sp))) abort();
    int64_t hours = in->now_ms / 3600000;
    if (in->now_ms % 3600000 != 0 && in->now_ms < 0) hours--;
    int64_t h = hours % 24;
    if (h < 0) h += 24;
    hour_acc *a = &(*sp)->h[h];
    a->n++;
    a->sum += v;
    a->sum_sq += v * v;
    (*sp)->last_v = v;
    (*sp)->last_h = (uint32_t)h;
}

static void sd_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const seasonal *s = *(seasonal *const *)st;
    if (!s) { jsonw_null(w); return; }
    const hour_acc *a = &s->h[s->last_h];
    if (a->n < 2) { jsonw_null(w); return; }
    double n = (double)a->n, mean = a->sum / n;
    double var = (a->sum_sq - a->sum * a->sum / n) / (n - 1.0);
    if (!(var > 0)) { jsonw_null(w); return; }
    jsonw_f64(w, (s->last_v - mean) / sqrt(var));
}

static void sd_destroy(const feature *f, void *st) {
    (void)f;
    seasonal **sp = st;
    free(*sp);
    *sp = NULL;
}

static void sd_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const seasonal *s = *(seasonal *const *)st;
    cod_put_u8(out, s != NULL);
    if (!s) return;
    for (int i = 0; i < 24; i++) {
        cod_put_u64(out, s->h[i].n);
        cod_put_f64(out, s->h[i].sum);
        cod_put_f64(out, s->h[i].sum_sq);
    }
    cod_put_f64(out, s->last_v);
    cod_put_u8(out, (uint8_t)s->last_h);
}

static int sd_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    uint8_t has, h;
    sd_destroy(f, st);
    if (cod_get_u8(p, end, &has) < 0 || has > 1) return -1;
    if (!has) return 0;
    if ((size_t)(end - *p) < 24 * 24 + 9) return -1;
    seasonal *s = calloc(1, sizeof *s);
    if (!s) abort();
    for (int i = 0; i < 24; i++) {
        cod_get_u64(p, end, &s->h[i].n);
        cod_get_f64(p, end, &s->h[i].sum);
        cod_get_f64(p, end, &s->h[i].sum_sq);
    }
    cod_get_f64(p, end, &s->last_v);
    cod_get_u8(p, end, &h);
    if (h >= 24 || s->h[h].n == 0) { free(s); return -1; }
    s->last_h = h;
    *(seasonal **)st = s;
    return 0;
}

const struct op_vtable op_seasonal_deviation = {
    .name = "seasonal_deviation",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
    .state_size = sizeof(seasonal *),
    .update = sd_update,
    .read = sd_read,
    .destroy = sd_destroy,
    .encode = sd_encode,
    .decode = sd_decode,
};
