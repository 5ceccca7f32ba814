/*
 * op_event_type_mix.c - `event_type_mix`: fraction of matched values of `field` per
 * category, {category: count/total} with keys in ascending byte order
 * (reference-pipelines.md §2.4). Accepted values: Str, I64 (decimal), Bool
 * ("true"/"false"); F64 and lists/maps are ignored. Every accepted value counts in
 * total; with a `categories` allowlist only listed ones are counted, otherwise a new
 * category beyond `max_categories` (default 256) is not counted (so fractions may sum
 * to less than 1). Lifetime only; `field` not checked. State: valmap + total
 * (32 bytes). Empty: {}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "opval.h"
#include "param.h"
#include "../sketch/codec.h"
#include "../sketch/valmap.h"

typedef struct mix_st {
    valmap m;
    uint64_t total;
} mix_st;

static int mix_parse(feature *f, const json_t *params, const char *path, bv_err *err) {
    (void)path; (void)err;
    int64_t mc;
    f->p.max_categories = (param_int(params, "max_categories", &mc) == 1 && mc >= 0) ? mc : 256;
    const json_t *cats = params ? json_object_get(params, "categories") : NULL;
    if (!json_is_array(cats)) return 0;
    f->p.categories = calloc(json_array_size(cats) + 1, sizeof(char *));
    if (!f->p.categories) abort();
    for (size_t i = 0; i < json_array_size(cats); i++) {
        const json_t *c = json_array_get(cats, i);
        if (!json_is_string(c)) continue;
        if (!(f->p.categories[f->p.ncategories++] = strdup(json_string_value(c)))) abort();
    }
    /* an allowlist was given (possibly empty): remember that with a non-NULL array */
    return 0;
}

static bool allowed(const feature *f, const bv_value *c) {
    for (size_t i = 0; i < f->p.ncategories; i++)
        if (strlen(f->p.categories[i]) == c->u.s.len && memcmp(f->p.categories[i], c->u.s.ptr, c->u.s.len) == 0)
            return true;
    return false;
}

static void mix_update(const feature *f, void *st, const op_input *in) {
    mix_st *s = st;
    char buf[32];
    bv_value c;
    switch (in->v->kind) {
    case BV_STR: c = *in->v; break;
    case BV_I64: c = bv_str(buf, (size_t)snprintf(buf, sizeof buf, "%lld", (long long)in->v->u.i)); break;
    case BV_BOOL: c = in->v->u.b ? bv_str("true", 4) : bv_str("false", 5); break;
    default: return;
    }
    s->total++;
    uint64_t h = opval_hash(&c);
    vm_entry *e = vm_find(&s->m, &c, h);
    if (f->p.categories) {
        if (!allowed(f, &c)) return;
    } else if (!e && s->m.n >= (uint64_t)f->p.max_categories) {
        return;
    }
    if (!e) e = vm_insert(&s->m, &c, h);
    e->count++;
}

static int key_cmp(const void *a, const void *b) {
    const vm_entry *x = *(vm_entry *const *)a, *y = *(vm_entry *const *)b;
    size_t n = x->key.len < y->key.len ? x->key.len : y->key.len;
    int c = n ? memcmp(x->key.u.s, y->key.u.s, n) : 0;
    if (c) return c;
    return x->key.len < y->key.len ? -1 : x->key.len > y->key.len;
}

static void mix_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    const mix_st *s = st;
    jsonw_obj_begin(w);
    if (s->total) {
        vm_entry **es = malloc((s->m.n + 1) * sizeof *es);
        if (!es) abort();
        for (uint32_t i = 0; i < s->m.n; i++) es[i] = &s->m.e[i];
        qsort(es, s->m.n, sizeof *es, key_cmp);
        for (uint32_t i = 0; i < s->m.n; i++) {
            jsonw_keyn(w, es[i]->key.u.s, es[i]->key.len);
            jsonw_f64(w, (double)es[i]->count / (double)s->total);
        }
        free(es);
    }
    jsonw_obj_end(w);
}

static void mix_destroy(const feature *f, void *st) {
    (void)f;
    mix_st *s = st;
    vm_free(&s->m);
    s->total = 0;
}

static void mix_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const mix_st *s = st;
    cod_put_u64(out, s->total);
    cod_put_u32(out, s->m.n);
    for (uint32_t i = 0; i < s->m.n; i++) {
        cod_put_u32(out, s->m.e[i].key.len);
        bv_buf_put(out, s->m.e[i].key.u.s, s->m.e[i].key.len);
        cod_put_u64(out, s->m.e[i].count);
    }
}

static int mix_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    mix_st *s = st;
    uint32_t n;
    uint64_t total, sum = 0;
    mix_destroy(f, st);
    if (cod_get_u64(p, end, &total) < 0 || cod_get_u32(p, end, &n) < 0) return -1;
    if ((size_t)(end - *p) < (size_t)n * 12) return -1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len;
        const uint8_t *bytes;
        uint64_t c;
        if (cod_get_u32(p, end, &len) < 0 || cod_get_bytes(p, end, len, &bytes) < 0 ||
            cod_get_u64(p, end, &c) < 0 || c == 0 || __builtin_add_overflow(sum, c, &sum))
            goto err;
        bv_value k = bv_str((const char *)bytes, len);
        uint64_t h = opval_hash(&k);
        if (vm_find(&s->m, &k, h)) goto err;
        vm_insert(&s->m, &k, h)->count = c;
    }
    if (sum > total) goto err;
    s->total = total;
    return 0;
err:
    mix_destroy(f, st);
    return -1;
}

const struct op_vtable op_event_type_mix = {
    .name = "event_type_mix",
    .flags = OPF_LIFETIME_ONLY | OPF_READS_FIELD,
    .state_size = sizeof(mix_st),
    .parse = mix_parse,
    .update = mix_update,
    .read = mix_read,
    .destroy = mix_destroy,
    .encode = mix_encode,
    .decode = mix_decode,
};
