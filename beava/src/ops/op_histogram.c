/*
 * op_histogram.c - `histogram(buckets=[b0, b1, ...])`: counts of the numeric values of
 * `field` per cell, as {label: count} (reference-pipelines.md §2.3 row 44, §2.4).
 * Lifetime only; `field` neither required nor checked at register time; I64 and F64
 * values count, everything else is ignored.
 *
 * Cells: index = first i with v < b_i, else len (so NaN lands in the last cell); the
 * edges are not checked for order, as in the reference. Labels "<b0", "b(i-1)-b(i)",
 * ">=b(last)"; with no edges one cell "all". An edge prints as an integer when it is
 * integral (-0.0 as "0"), else as the shortest round-trip decimal in plain notation
 * (Rust's Display: 0.0000001, never 1e-7). Integral edges beyond the i64 range print
 * as their shortest digits padded with zeros (1e20 -> 100000000000000000000; the
 * reference saturates them to i64::MAX/MIN, an accident we do not copy). Keys are
 * emitted in ascending byte order; when two cells share a label (repeated edges) the
 * later cell's count wins, as with the reference's BTreeMap insert (that later cell can
 * never receive a value, so such a label always reads 0).
 *
 * `buckets`: non-numeric entries are dropped; a non-array counts as []. The lifetime
 * memory-governance check (feature.c) already requires a non-empty array.
 * State: pointer to nbuckets + 1 u64 counts, allocated on the first value (8 bytes).
 * Snapshot form: u32 ncells (0 or nbuckets + 1), then the counts.
 * Empty: every label with 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "codec.h"

typedef struct hist_st { uint64_t *counts; } hist_st;

static int hist_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    const json_t *b = params ? json_object_get(params, "buckets") : NULL;
    size_t n = json_is_array(b) ? json_array_size(b) : 0, m = 0;
    if (n) {
        f->p.buckets = malloc(n * sizeof *f->p.buckets);
        if (!f->p.buckets) abort();
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_array_get(b, i);
            if (json_is_number(e)) f->p.buckets[m++] = json_number_value(e);
        }
    }
    f->p.nbuckets = m;
    return 0;
}

static size_t hist_cell(const feature *f, double v) {
    for (size_t i = 0; i < f->p.nbuckets; i++)
        if (v < f->p.buckets[i]) return i;
    return f->p.nbuckets;
}

static void hist_update(const feature *f, void *st, const op_input *in) {
    hist_st *s = st;
    double v;
    if (!bv_as_f64(in->v, &v)) return;
    if (!s->counts) {
        s->counts = calloc(f->p.nbuckets + 1, sizeof *s->counts);
        if (!s->counts) abort();
    }
    uint64_t *c = &s->counts[hist_cell(f, v)];
    if (*c < UINT64_MAX) (*c)++;
}

/* An edge as the reference prints it; appends to b. */
static void put_edge(bv_buf *b, double v) {
    char tmp[48];
    if (v == floor(v) && v >= -9223372036854775808.0 && v < 9223372036854775808.0) {
        bv_buf_printf(b, "%lld", (long long)v);
        return;
    }
    /* the shortest digits that read back to v, laid out without an exponent */
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v) break;
    }
    char digits[24];
    int nd = 0;
    const char *p = tmp;
    if (*p == '-') { bv_buf_putc(b, '-'); p++; }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int point = atoi(p + 1) + 1;          /* digits before the decimal point */
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (point <= 0) {
        bv_buf_puts(b, "0.");
        for (int i = 0; i < -point; i++) bv_buf_putc(b, '0');
        bv_buf_put(b, digits, (size_t)nd);
    } else if (point >= nd) {               /* a huge integral edge */
        bv_buf_put(b, digits, (size_t)nd);
        for (int i = nd; i < point; i++) bv_buf_putc(b, '0');
    } else {
        bv_buf_put(b, digits, (size_t)point);
        bv_buf_putc(b, '.');
        bv_buf_put(b, digits + point, (size_t)(nd - point));
    }
}

typedef struct hlabel { size_t off, len, cell; const char *base; } hlabel;

static int hlabel_cmp(const void *a, const void *b) {
    const hlabel *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->base + x->off, y->base + y->off, n) : 0;
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->cell < y->cell ? -1 : x->cell > y->cell;
}

static void hist_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)q;
    const hist_st *s = st;
    size_t nb = f->p.nbuckets, nc = nb + 1;
    jsonw_obj_begin(w);
    if (nb == 0) {
        jsonw_key(w, "all");
        jsonw_u64(w, s->counts ? s->counts[0] : 0);
        jsonw_obj_end(w);
        return;
    }
    bv_buf text;
    bv_buf_init(&text);
    hlabel *l = malloc(nc * sizeof *l);
    if (!l) abort();
    for (size_t i = 0; i < nc; i++) {
        l[i].off = text.len;
        l[i].cell = i;
        if (i == 0) {
            bv_buf_putc(&text, '<');
            put_edge(&text, f->p.buckets[0]);
        } else if (i == nb) {
            bv_buf_puts(&text, ">=");
            put_edge(&text, f->p.buckets[nb - 1]);
        } else {
            put_edge(&text, f->p.buckets[i - 1]);
            bv_buf_putc(&text, '-');
            put_edge(&text, f->p.buckets[i]);
        }
        l[i].len = text.len - l[i].off;
    }
    for (size_t i = 0; i < nc; i++) l[i].base = text.data;
    qsort(l, nc, sizeof *l, hlabel_cmp);
    for (size_t i = 0; i < nc; i++) {
        /* equal labels: keep the last cell's count */
        if (i + 1 < nc && l[i + 1].len == l[i].len &&
            memcmp(text.data + l[i + 1].off, text.data + l[i].off, l[i].len) == 0)
            continue;
        jsonw_keyn(w, text.data + l[i].off, l[i].len);
        jsonw_u64(w, s->counts ? s->counts[l[i].cell] : 0);
    }
    jsonw_obj_end(w);
    free(l);
    bv_buf_free(&text);
}

static void hist_destroy(const feature *f, void *st) {
    (void)f;
    hist_st *s = st;
    free(s->counts);
    s->counts = NULL;
}

static void hist_encode(const feature *f, const void *st, bv_buf *out) {
    const hist_st *s = st;
    size_t nc = s->counts ? f->p.nbuckets + 1 : 0;
    cod_put_u32(out, (uint32_t)nc);
    for (size_t i = 0; i < nc; i++) cod_put_u64(out, s->counts[i]);
}

static int hist_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    hist_st *s = st;
    const uint8_t *q = *p;
    uint32_t nc;
    if (cod_get_u32(&q, end, &nc) < 0) return -1;
    if (nc != 0 && nc != f->p.nbuckets + 1) return -1;
    if ((size_t)(end - q) / 8 < nc) return -1;
    uint64_t *c = NULL;
    if (nc) {
        c = malloc((size_t)nc * sizeof *c);
        if (!c) abort();
        for (uint32_t i = 0; i < nc; i++) cod_get_u64(&q, end, &c[i]);   /* length checked above */
    }
    free(s->counts);
    s->counts = c;
    *p = q;
    return 0;
}

const struct op_vtable op_histogram = {
    .name = "histogram",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
    .state_size = sizeof(hist_st),
    .parse = hist_parse,
    .update = hist_update,
    .read = hist_read,
    .destroy = hist_destroy,
    .encode = hist_encode,
    .decode = hist_decode,
};
