/*
 * op_event_type_mix.c - `event_type_mix`: the share of each category of `field` among
 * the accepted values, as {category: count / total}.
 * Lifetime only; `field` neither required nor checked at register time.
 *
 * Categories: Str as is, I64 in decimal, Bool "true"/"false" (so 5 and "5" are one
 * category); F64, lists and maps are ignored. Every accepted value adds 1 to total;
 * then with an allowlist (`categories`, non-string entries dropped; an empty list
 * admits nothing) a value outside it stops there, and without one a new category
 * beyond `max_categories` (default 256) distinct stops there; otherwise its count + 1.
 * Shares can therefore sum to less than 1, as in the reference. Keys are emitted in
 * ascending byte order. The allowlist is scanned linearly, only for values not yet
 * counted (a counted category was necessarily admitted).
 *
 * State: valmap of category -> count + total (32 bytes). Snapshot form: u64 total,
 * u32 n, then n x (u32 len, bytes, u64 count). Empty: {}.
 */
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "opval.h"
#include "param.h"
#include "codec.h"
#include "valmap.h"

#define ETM_DEFAULT_MAX 256

typedef struct etm_st {
    valmap m;
    uint64_t total;
} etm_st;

static int etm_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    int64_t mx;
    f->p.max_categories = param_int(params, "max_categories", &mx) == 1 && mx >= 0 ? mx : ETM_DEFAULT_MAX;
    const json_t *c = params ? json_object_get(params, "categories") : NULL;
    if (json_is_array(c)) {
        size_t n = json_array_size(c);
        /* a present list is an allowlist even when empty: keep a non-NULL array */
        f->p.categories = calloc(n ? n : 1, sizeof *f->p.categories);
        if (!f->p.categories) abort();
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_array_get(c, i);
            if (!json_is_string(e)) continue;
            f->p.categories[f->p.ncategories] = strdup(json_string_value(e));
            if (!f->p.categories[f->p.ncategories]) abort();
            f->p.ncategories++;
        }
    }
    return 0;
}

static bool etm_allowed(const feature *f, const bv_value *c) {
    for (size_t i = 0; i < f->p.ncategories; i++) {
        const char *a = f->p.categories[i];
        if (strlen(a) == c->u.s.len && memcmp(a, c->u.s.ptr, c->u.s.len) == 0) return true;
    }
    return false;
}

/* The category text of a value (may point into buf[32] or into v); false: not counted. */
static bool etm_category(const bv_value *v, char *buf, bv_value *c) {
    switch (v->kind) {
    case BV_STR: *c = *v; return true;
    case BV_I64: *c = bv_str(buf, bv_fmt_i64(v->u.i, buf)); return true;
    case BV_BOOL: *c = v->u.b ? bv_str("true", 4) : bv_str("false", 5); return true;
    default: return false;
    }
}

static void etm_update(const feature *f, void *st, const op_input *in) {
    etm_st *s = st;
    char buf[32];
    bv_value c;
    if (!etm_category(in->v, buf, &c)) return;
    if (s->total < UINT64_MAX) s->total++;
    uint64_t h = opval_hash(&c);
    vm_entry *e = vm_find(&s->m, &c, h);
    if (!e) {
        if (f->p.categories ? !etm_allowed(f, &c) : s->m.n >= (uint64_t)f->p.max_categories) return;
        e = vm_insert(&s->m, &c, h);
    }
    if (e->count < UINT64_MAX) e->count++;
}

static void etm_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)f;
    const etm_st *s = st;
    char buf[32];
    bv_value c;
    if (!s->m.e) return;
    if (!s->m.idx) vm_prefetch(&s->m, 0);                 /* a short map: its entries */
    else if (etm_category(v, buf, &c)) vm_prefetch(&s->m, opval_hash(&c));
}

static int key_cmp(const void *a, const void *b) {
    const op_val *x = &(*(const vm_entry *const *)a)->key, *y = &(*(const vm_entry *const *)b)->key;
    return opval_order(x, y);
}

static void etm_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const etm_st *s = st;
    jsonw_obj_begin(w);
    if (s->total && s->m.n) {
        const vm_entry **ix = malloc(s->m.n * sizeof *ix);
        if (!ix) abort();
        for (uint32_t i = 0; i < s->m.n; i++) ix[i] = &s->m.e[i];
        qsort(ix, s->m.n, sizeof *ix, key_cmp);
        for (uint32_t i = 0; i < s->m.n; i++) {
            jsonw_keyn(w, opval_bytes(&ix[i]->key), opval_len(&ix[i]->key));
            jsonw_f64(w, (double)ix[i]->count / (double)s->total);
        }
        free(ix);
    }
    jsonw_obj_end(w);
}

static void etm_destroy(const feature *f, void *st) {
    (void)f;
    etm_st *s = st;
    vm_free(&s->m);
    s->total = 0;
}

static void etm_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const etm_st *s = st;
    cod_put_u64(out, s->total);
    cod_put_u32(out, s->m.n);
    for (uint32_t i = 0; i < s->m.n; i++) {
        const op_val *k = &s->m.e[i].key;
        cod_put_u32(out, opval_len(k));
        bv_buf_put(out, opval_bytes(k), opval_len(k));
        cod_put_u64(out, s->m.e[i].count);
    }
}

static int etm_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    etm_st *s = st, t;
    const uint8_t *q = *p;
    uint32_t n;
    uint64_t sum = 0;
    memset(&t, 0, sizeof t);
    if (cod_get_u64(&q, end, &t.total) < 0 || cod_get_u32(&q, end, &n) < 0) return -1;
    /* each entry takes at least 12 bytes */
    if ((size_t)(end - q) / 12 < n) return -1;
    if (!f->p.categories && n > (uint64_t)f->p.max_categories) return -1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len;
        const uint8_t *bytes;
        uint64_t c;
        if (cod_get_u32(&q, end, &len) < 0 || cod_get_bytes(&q, end, len, &bytes) < 0 ||
            cod_get_u64(&q, end, &c) < 0 || c == 0 || __builtin_add_overflow(sum, c, &sum))
            goto err;
        bv_value k = bv_str((const char *)bytes, len);
        uint64_t h = opval_hash(&k);
        if (vm_find(&t.m, &k, h) || (f->p.categories && !etm_allowed(f, &k))) goto err;
        vm_insert(&t.m, &k, h)->count = c;
    }
    if (sum > t.total) goto err;
    etm_destroy(f, st);
    *s = t;
    *p = q;
    return 0;
err:
    vm_free(&t.m);
    return -1;
}

const struct op_vtable op_event_type_mix = {
    .name = "event_type_mix",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
    .state_size = sizeof(etm_st),
    .parse = etm_parse,
    .update = etm_update,
    .prefetch = etm_prefetch,
    .read = etm_read,
    .destroy = etm_destroy,
    .encode = etm_encode,
    .decode = etm_decode,
};
