/*
 * op_histogram.c - `histogram(buckets=[b0,b1,...])`: counts of the numeric values of
 * `field` per cell, cell = first i with v < b_i, else len(buckets); output an object
 * "<b0", "b0-b1", ..., ">=b_last" -> count with keys in ascending byte order (equal
 * labels collapse, the later cell winning, as the reference's map does); {"all": n}
 * without buckets (reference-pipelines.md §2.4). Edges print as integers when
 * integral, else in shortest plain decimal (no exponent). Non-numeric bucket entries
 * are dropped; order is not checked. Lifetime only; `field` not checked.
 * State: pointer to len+1 u64 counters allocated on the first value (8 bytes).
 * Empty: every label with 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "../sketch/codec.h"

static int hist_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    const json_t *b = params ? json_object_get(params, "buckets") : NULL;
    if (!json_is_array(b)) return 0;
    f->p.buckets = malloc((json_array_size(b) + 1) * sizeof(double));
    if (!f->p.buckets) abort();
    for (size_t i = 0; i < json_array_size(b); i++) {
        const json_t *e = json_array_get(b, i);
        if (json_is_number(e)) f->p.buckets[f->p.nbuckets++] = json_number_value(e);
    }
    return 0;
}

static size_t ncells(const feature *f) { return f->p.nbuckets + 1; }

/* An edge as the reference prints it: integral -> i64 (saturating), else the shortest
 * round-trip digits laid out without an exponent. */
static void fmt_edge(double v, char *out, size_t cap) {
    if (isnan(v)) { snprintf(out, cap, "NaN"); return; }
    if (isinf(v)) { snprintf(out, cap, "%s", v > 0 ? "inf" : "-inf"); return; }
    if (v == floor(v)) {
        long long i = v >= 9223372036854775807.0 ? INT64_MAX : v <= -9223372036854775808.0 ? INT64_MIN : (long long)v;
        snprintf(out, cap, "%lld", i);
        return;
    }
    char e[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, v);
        if (strtod(e, NULL) == v) break;
    }
    char digits[24];
    int nd = 0;
    const char *p = e;
    bool neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    size_t o = 0;
    if (neg) out[o++] = '-';
    if (exp10 < 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (int i = 0; i < -exp10 - 1 && o + 2 < cap; i++) out[o++] = '0';
        for (int i = 0; i < nd && o + 1 < cap; i++) out[o++] = digits[i];
    } else {
        for (int i = 0; i <= exp10 && o + 2 < cap; i++) out[o++] = i < nd ? digits[i] : '0';
        out[o++] = '.';
        for (int i = exp10 + 1; i < nd && o + 1 < cap; i++) out[o++] = digits[i];
    }
    out[o] = 0;
}

static void label(const feature *f, size_t i, char *out, size_t cap) {
    char a[400], b[400];
    const double *e = f->p.buckets;
    size_t n = f->p.nbuckets;
    if (n == 0) { snprintf(out, cap, "all"); return; }
    if (i == 0) { fmt_edge(e[0], a, sizeof a); snprintf(out, cap, "<%s", a); return; }
    if (i == n) { fmt_edge(e[n - 1], a, sizeof a); snprintf(out, cap, ">=%s", a); return; }
    fmt_edge(e[i - 1], a, sizeof a);
    fmt_edge(e[i], b, sizeof b);
    snprintf(out, cap, "%s-%s", a, b);
}

static void hist_update(const feature *f, void *st, const op_input *in) {
    uint64_t **c = st;
    double v;
    if (!bv_as_f64(in->v, &v)) return;
    if (!*c && !(*c = calloc(ncells(f), sizeof **c))) abort();
    size_t i = 0;
    while (i < f->p.nbuckets && !(v < f->p.buckets[i])) i++;
    (*c)[i]++;
}

typedef struct cell { char *label; size_t idx; } cell;

static int cell_cmp(const void *a, const void *b) {
    const cell *x = a, *y = b;
    int c = strcmp(x->label, y->label);
    if (c) return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static void hist_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)q;
    const uint64_t *c = *(uint64_t *const *)st;
    size_t n = ncells(f);
    cell *cells = malloc(n * sizeof *cells);
    if (!cells) abort();
    for (size_t i = 0; i < n; i++) {
        cells[i].label = malloc(820);
        if (!cells[i].label) abort();
        label(f, i, cells[i].label, 820);
        cells[i].idx = i;
    }
    qsort(cells, n, sizeof *cells, cell_cmp);
    jsonw_obj_begin(w);
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && strcmp(cells[i].label, cells[i + 1].label) == 0) continue;   /* later wins */
        jsonw_key(w, cells[i].label);
        jsonw_u64(w, c ? c[cells[i].idx] : 0);
    }
    jsonw_obj_end(w);
    for (size_t i = 0; i < n; i++) free(cells[i].label);
    free(cells);
}

static void hist_destroy(const feature *f, void *st) {
    (void)f;
    uint64_t **c = st;
    free(*c);
    *c = NULL;
}

static void hist_encode(const feature *f, const void *st, bv_buf *out) {
    const uint64_t *c = *(uint64_t *const *)st;
    cod_put_u8(out, c != NULL);
    if (!c) return;
    cod_put_u32(out, (uint32_t)ncells(f));
    for (size_t i = 0; i < ncells(f); i++) cod_put_u64(out, c[i]);
}

static int hist_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    uint8_t has;
    uint32_t n;
    hist_destroy(f, st);
    if (cod_get_u8(p, end, &has) < 0 || has > 1) return -1;
    if (!has) return 0;
    if (cod_get_u32(p, end, &n) < 0 || n != ncells(f) || (size_t)(end - *p) < (size_t)n * 8) return -1;
    uint64_t *c = malloc(n * sizeof *c);
    if (!c) abort();
    for (uint32_t i = 0; i < n; i++) cod_get_u64(p, end, &c[i]);
    *(uint64_t **)st = c;
    return 0;
}

const struct op_vtable op_histogram = {
    .name = "histogram",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
    .state_size = sizeof(uint64_t *),
    .parse = hist_parse,
    .update = hist_update,
    .read = hist_read,
    .destroy = hist_destroy,
    .encode = hist_encode,
    .decode = hist_decode,
};
