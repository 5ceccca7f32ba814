/*
 * op_entropy.c - `entropy`: Shannon entropy in bits, H = -sum p log2 p, of the
 * categories of `field`. Values are stringified (Str as
 * is, I64 decimal, F64 shortest form with ".0", Bool true/false; lists/maps ignored), so
 * 1 and "1" are one category. Exact counts of at most 1024 categories: a new category
 * beyond that is dropped, not counted in the total, and counted in
 * op_stats.entropy_categories_capped. Windows merge counts (uncapped: the merged state
 * only lives for one query). Windowable. State: valmap + total (32 bytes). Empty: 0.0.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "op.h"
#include "opval.h"
#include "codec.h"
#include "valmap.h"

#define ENTROPY_MAX_CATEGORIES 1024

typedef struct entropy_st {
    valmap m;
    uint64_t total;
} entropy_st;

/* The category text of a value (may point into buf or into the value). */
static bool category(const bv_value *v, char *buf, bv_value *out) {
    int n;
    switch (v->kind) {
    case BV_STR: *out = *v; return true;
    case BV_I64: n = (int)bv_fmt_i64(v->u.i, buf); break;
    case BV_BOOL: n = snprintf(buf, 32, "%s", v->u.b ? "true" : "false"); break;
    case BV_F64:
        if (isnan(v->u.f)) n = snprintf(buf, 32, "NaN");
        else if (isinf(v->u.f)) n = snprintf(buf, 32, "%s", v->u.f > 0 ? "inf" : "-inf");
        else n = bv_fmt_f64(v->u.f, buf);
        break;
    default: return false;
    }
    *out = bv_str(buf, (size_t)n);
    return true;
}

static void entropy_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    entropy_st *s = st;
    char buf[48];
    bv_value c;
    if (!category(in->v, buf, &c)) return;
    uint64_t h = opval_hash(&c);
    vm_entry *e = vm_find(&s->m, &c, h);
    if (!e) {
        if (s->m.n >= ENTROPY_MAX_CATEGORIES) {
            if (in->stats) in->stats->entropy_categories_capped++;
            return;
        }
        e = vm_insert(&s->m, &c, h);
    }
    e->count++;
    s->total++;
}

static void entropy_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)f;
    const entropy_st *s = st;
    char buf[48];
    bv_value c;
    if (!vm_prefetch_hashes(&s->m)) vm_prefetch(&s->m, 0);
    else if (category(v, buf, &c)) vm_prefetch(&s->m, opval_hash(&c));
}

static void entropy_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    entropy_st *d = dst;
    const entropy_st *s = src;
    for (uint32_t i = 0; i < s->m.n; i++) {
        bv_value k = opval_view(&s->m.e[i].key);
        uint64_t h = opval_hash(&k);
        vm_entry *e = vm_find(&d->m, &k, h);
        if (!e) e = vm_insert(&d->m, &k, h);
        e->count += s->m.e[i].count;
    }
    d->total += s->total;
}

static void entropy_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const entropy_st *s = st;
    double h = 0.0;
    for (uint32_t i = 0; i < s->m.n; i++) {
        double p = (double)s->m.e[i].count / (double)s->total;
        if (p > 0) h -= p * log2(p);
    }
    jsonw_f64(w, h);
}

static void entropy_destroy(const feature *f, void *st) {
    (void)f;
    entropy_st *s = st;
    vm_free(&s->m);
    s->total = 0;
}

static void entropy_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const entropy_st *s = st;
    cod_put_u32(out, s->m.n);
    for (uint32_t i = 0; i < s->m.n; i++) {
        const op_val *k = &s->m.e[i].key;
        cod_put_u32(out, opval_len(k));
        bv_buf_put(out, opval_bytes(k), opval_len(k));
        cod_put_u64(out, s->m.e[i].count);
    }
}

static int entropy_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    entropy_st *s = st;
    const uint8_t *q = *p;
    uint32_t n;
    entropy_destroy(f, st);
    if (cod_get_u32(&q, end, &n) < 0 || n > ENTROPY_MAX_CATEGORIES) return -1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len;
        const uint8_t *bytes;
        uint64_t c;
        if (cod_get_u32(&q, end, &len) < 0 || cod_get_bytes(&q, end, len, &bytes) < 0 ||
            cod_get_u64(&q, end, &c) < 0 || c == 0)
            goto err;
        bv_value k = bv_str((const char *)bytes, len);
        uint64_t h = opval_hash(&k);
        if (vm_find(&s->m, &k, h)) goto err;
        vm_insert(&s->m, &k, h)->count = c;
        if (__builtin_add_overflow(s->total, c, &s->total)) goto err;
    }
    *p = q;
    return 0;
err:
    entropy_destroy(f, st);
    return -1;
}

const struct op_vtable op_entropy = {
    .name = "entropy",
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD,
    .state_size = sizeof(entropy_st),
    .update = entropy_update,
    .prefetch = entropy_prefetch,
    .merge = entropy_merge,
    .read = entropy_read,
    .destroy = entropy_destroy,
    .encode = entropy_encode,
    .decode = entropy_decode,
};
