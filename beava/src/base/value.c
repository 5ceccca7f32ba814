/*
 * value.c - conversions and comparisons of bv_value, row lookup, key canonicalisation.
 */
#include "value.h"
#include "crc32c.h"
#include "jsonw.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

bv_value bv_from_json(const json_t *j) {
    if (!j) return bv_null();
    switch (json_typeof(j)) {
    case JSON_STRING: return bv_str(json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return bv_i64((int64_t)json_integer_value(j));
    case JSON_REAL: return bv_f64(json_real_value(j));
    case JSON_TRUE: return bv_bool(true);
    case JSON_FALSE: return bv_bool(false);
    case JSON_NULL: return bv_null();
    default: {
        bv_value v;
        v.kind = BV_JSON;
        v.u.j = j;
        return v;
    }
    }
}

bool bv_equal(const bv_value *a, const bv_value *b) {
    if (a->kind != b->kind) return false;
    switch (a->kind) {
    case BV_NULL: return true;
    case BV_BOOL: return a->u.b == b->u.b;
    case BV_I64: return a->u.i == b->u.i;
    case BV_F64: return a->u.f == b->u.f;   /* NaN != NaN */
    case BV_STR: return a->u.s.len == b->u.s.len && memcmp(a->u.s.ptr, b->u.s.ptr, a->u.s.len) == 0;
    case BV_JSON: return json_equal((json_t *)a->u.j, (json_t *)b->u.j);
    }
    return false;
}

static const char *const wtype_names[WT__COUNT] = {
    "str", "i64", "f64", "bool", "bytes", "datetime", "json",
};

int bv_wtype_parse(const char *name) {
    for (int i = 0; i < WT__COUNT; i++)
        if (strcmp(name, wtype_names[i]) == 0) return i;
    return -1;
}

const char *bv_wtype_name(bv_wtype t) {
    return (t >= 0 && t < WT__COUNT) ? wtype_names[t] : "?";
}

const bv_value *bv_row_getn(const bv_row *row, const char *name, size_t len) {
    for (size_t i = 0; i < row->n; i++) {
        const bv_field *f = &row->fields[i];
        if (f->name_len == len && memcmp(f->name, name, len) == 0) return &f->value;
    }
    return NULL;
}

const bv_value *bv_row_get(const bv_row *row, const char *name) {
    return bv_row_getn(row, name, strlen(name));
}

int bv_key_text(const bv_value *v, char *buf, size_t cap) {
    int n;
    switch (v->kind) {
    case BV_STR:
        if (v->u.s.len + 1 > cap) return -1;
        memcpy(buf, v->u.s.ptr, v->u.s.len);
        buf[v->u.s.len] = 0;
        return (int)v->u.s.len;
    case BV_I64: n = snprintf(buf, cap, "%lld", (long long)v->u.i); break;
    case BV_BOOL: n = snprintf(buf, cap, "%s", v->u.b ? "true" : "false"); break;
    case BV_F64: {
        if (isnan(v->u.f)) return -1;
        char tmp[48];
        bv_fmt_f64(v->u.f, tmp);
        n = snprintf(buf, cap, "%s", tmp);
        break;
    }
    default: return -1;
    }
    return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

#include <stdlib.h>

void bv_schema_init(bv_schema *s) { memset(s, 0, sizeof *s); }

void bv_schema_free(bv_schema *s) {
    for (size_t i = 0; i < s->n; i++) free(s->names[i]);
    for (size_t i = 0; i < s->nopt; i++) free(s->optional[i]);
    free(s->names);
    free(s->types);
    free(s->optional);
    bv_schema_init(s);
}

uint32_t bv_schema_fingerprint_extend(uint32_t fp, const char *name, bv_wtype type) {
    fp = crc32c_extend(fp, name, strlen(name) + 1);    /* with its NUL */
    unsigned char t = (unsigned char)type;
    return crc32c_extend(fp, &t, 1);
}

uint32_t bv_schema_fingerprint(const bv_schema *s) {
    uint32_t fp = 0;
    for (size_t i = 0; i < s->n; i++) fp = bv_schema_fingerprint_extend(fp, s->names[i], s->types[i]);
    return fp;
}

int bv_schema_find(const bv_schema *s, const char *name, bv_wtype *t) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0) {
            if (t) *t = s->types[i];
            return (int)i;
        }
    return -1;
}

void bv_schema_set(bv_schema *s, const char *name, bv_wtype t) {
    int i = bv_schema_find(s, name, NULL);
    if (i >= 0) { s->types[i] = t; return; }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->names = realloc(s->names, s->cap * sizeof *s->names);
        s->types = realloc(s->types, s->cap * sizeof *s->types);
        if (!s->names || !s->types) abort();
    }
    s->names[s->n] = bv_xstrdup(name);
    s->types[s->n] = t;
    s->n++;
}

bool bv_schema_remove(bv_schema *s, const char *name) {
    int i = bv_schema_find(s, name, NULL);
    if (i < 0) return false;
    free(s->names[i]);
    memmove(&s->names[i], &s->names[i + 1], (s->n - (size_t)i - 1) * sizeof *s->names);
    memmove(&s->types[i], &s->types[i + 1], (s->n - (size_t)i - 1) * sizeof *s->types);
    s->n--;
    return true;
}

bool bv_schema_is_optional(const bv_schema *s, const char *name) {
    for (size_t i = 0; i < s->nopt; i++)
        if (strcmp(s->optional[i], name) == 0) return true;
    return false;
}

void bv_schema_add_optional(bv_schema *s, const char *name) {
    if (bv_schema_is_optional(s, name)) return;
    s->optional = realloc(s->optional, (s->nopt + 1) * sizeof *s->optional);
    if (!s->optional) abort();
    s->optional[s->nopt++] = bv_xstrdup(name);
}

void bv_schema_copy(bv_schema *dst, const bv_schema *src) {
    bv_schema_init(dst);
    for (size_t i = 0; i < src->n; i++) bv_schema_set(dst, src->names[i], src->types[i]);
    for (size_t i = 0; i < src->nopt; i++) bv_schema_add_optional(dst, src->optional[i]);
}

bool bv_has_control_char(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return true;
        if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9f)
            return true;
    }
    return false;
}

static bool json_cc_at(const json_t *j, int depth) {
    if (depth > JSON_PARSER_MAX_DEPTH) return false;
    switch (json_typeof(j)) {
    case JSON_STRING: return bv_has_control_char(json_string_value(j), json_string_length(j));
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(j); i++)
            if (json_cc_at(json_array_get(j, i), depth + 1)) return true;
        return false;
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            if (bv_has_control_char(k, strlen(k)) || json_cc_at(v, depth + 1)) return true;
        }
        return false;
    }
    default: return false;
    }
}

bool bv_json_has_control_char(const json_t *j) { return json_cc_at(j, 0); }
