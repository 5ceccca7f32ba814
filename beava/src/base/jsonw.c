/*
 * jsonw.c - byte buffer, JSON writer and the f64 formatting rule (see jsonw.h).
 *
 * bv_fmt_f64 finds the shortest decimal digit string that round-trips (trying 1..17
 * significant digits with "%.*e" and strtod), then lays the digits out exactly as
 * serde_json/ryu does: plain notation while the decimal exponent is in [-5, 16), with
 * ".0" appended to integral values, else "d.ddde-7" style. This is the only place that
 * decides how a number looks on the wire.
 */
#include "jsonw.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void bv_buf_init(bv_buf *b) { b->data = NULL; b->len = 0; b->cap = 0; }

void bv_buf_free(bv_buf *b) { free(b->data); bv_buf_init(b); }

void bv_buf_reserve(bv_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) { fputs("beava: out of memory\n", stderr); abort(); }
    b->data = p;
    b->cap = cap;
}

void bv_buf_puts(bv_buf *b, const char *s) { bv_buf_put(b, s, strlen(s)); }

void bv_buf_printf(bv_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    bv_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *bv_buf_steal(bv_buf *b) {
    if (!b->data) bv_buf_reserve(b, 0);
    b->data[b->len] = 0;
    char *p = b->data;
    bv_buf_init(b);
    return p;
}

int bv_fmt_f64(double v, char *buf) {
    if (!isfinite(v)) { memcpy(buf, "null", 5); return 4; }
    if (v == 0) {
        if (signbit(v)) { memcpy(buf, "-0.0", 5); return 4; }
        memcpy(buf, "0.0", 4);
        return 3;
    }
    char tmp[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v) break;
    }
    /* tmp = [-]d[.ddd]e[+-]XX : collect digits and exponent */
    char digits[24];
    int nd = 0, neg = 0;
    const char *p = tmp;
    if (*p == '-') { neg = 1; p++; }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;   /* trailing zeros carry no information */
    /* value = 0.d1d2...dn * 10^(kk) with kk = exp10 + 1 */
    int kk = exp10 + 1;
    char *o = buf;
    if (neg) *o++ = '-';
    if (kk >= nd && kk <= 16) {                  /* integral: digits, zeros, ".0" */
        memcpy(o, digits, (size_t)nd); o += nd;
        for (int i = nd; i < kk; i++) *o++ = '0';
        *o++ = '.'; *o++ = '0';
    } else if (kk > 0 && kk <= 16) {             /* d.ddd */
        memcpy(o, digits, (size_t)kk); o += kk;
        *o++ = '.';
        memcpy(o, digits + kk, (size_t)(nd - kk)); o += nd - kk;
    } else if (kk > -5 && kk <= 0) {             /* 0.000ddd */
        *o++ = '0'; *o++ = '.';
        for (int i = 0; i < -kk; i++) *o++ = '0';
        memcpy(o, digits, (size_t)nd); o += nd;
    } else {                                     /* exponent form */
        *o++ = digits[0];
        if (nd > 1) { *o++ = '.'; memcpy(o, digits + 1, (size_t)(nd - 1)); o += nd - 1; }
        o += sprintf(o, "e%d", kk - 1);
    }
    *o = 0;
    return (int)(o - buf);
}

void bv_buf_json_str(bv_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    bv_buf_reserve(b, n + 2);
    bv_buf_putc(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char ubuf[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                ubuf[0] = '\\'; ubuf[1] = 'u'; ubuf[2] = '0'; ubuf[3] = '0';
                ubuf[4] = hex[c >> 4]; ubuf[5] = hex[c & 15]; ubuf[6] = 0;
                esc = ubuf;
            }
        }
        if (esc) {
            bv_buf_put(b, s + i - run, run);
            run = 0;
            bv_buf_puts(b, esc);
        } else {
            run++;
        }
    }
    bv_buf_put(b, s + n - run, run);
    bv_buf_putc(b, '"');
}

void jsonw_init(jsonw *w, bv_buf *out) {
    w->out = out;
    w->depth = 0;
    memset(w->need_comma, 0, sizeof w->need_comma);
}

static void jsonw_sep(jsonw *w) {
    if (w->need_comma[w->depth]) bv_buf_putc(w->out, ',');
    w->need_comma[w->depth] = true;
}

static void jsonw_open(jsonw *w, char c) {
    jsonw_sep(w);
    bv_buf_putc(w->out, c);
    if (w->depth < JSONW_MAX_DEPTH - 1) w->depth++;
    w->need_comma[w->depth] = false;
}

static void jsonw_close(jsonw *w, char c) {
    bv_buf_putc(w->out, c);
    if (w->depth > 0) w->depth--;
}

void jsonw_obj_begin(jsonw *w) { jsonw_open(w, '{'); }
void jsonw_obj_end(jsonw *w) { jsonw_close(w, '}'); }
void jsonw_arr_begin(jsonw *w) { jsonw_open(w, '['); }
void jsonw_arr_end(jsonw *w) { jsonw_close(w, ']'); }

void jsonw_keyn(jsonw *w, const char *key, size_t n) {
    jsonw_sep(w);
    bv_buf_json_str(w->out, key, n);
    bv_buf_putc(w->out, ':');
    w->need_comma[w->depth] = false;   /* the value that follows needs no comma */
    /* restore "needs comma" after the value: values call jsonw_sep, which sets it again */
}

void jsonw_key(jsonw *w, const char *key) { jsonw_keyn(w, key, strlen(key)); }

void jsonw_strn(jsonw *w, const char *s, size_t n) { jsonw_sep(w); bv_buf_json_str(w->out, s, n); }
void jsonw_str(jsonw *w, const char *s) { jsonw_strn(w, s, strlen(s)); }
/* Integers are on every ack and row: format them without printf. `neg` puts a '-' before
 * v's digits; returns the length (at most 21). */
static size_t fmt_dec(uint64_t v, bool neg, char *buf) {
    char tmp[20];
    size_t n = 0, k = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (neg) buf[k++] = '-';
    while (n) buf[k++] = tmp[--n];
    return k;
}

size_t bv_fmt_i64(int64_t v, char *buf) {
    return fmt_dec(v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, v < 0, buf);
}

static void put_u64(bv_buf *b, uint64_t v, bool neg) {
    bv_buf_reserve(b, 21);
    b->len += fmt_dec(v, neg, b->data + b->len);
    b->data[b->len] = 0;
}

void bv_buf_put_u64(bv_buf *b, uint64_t v) { put_u64(b, v, false); }

void jsonw_i64(jsonw *w, int64_t v) {
    jsonw_sep(w);
    put_u64(w->out, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, v < 0);
}

void jsonw_u64(jsonw *w, uint64_t v) {
    jsonw_sep(w);
    put_u64(w->out, v, false);
}
void jsonw_bool(jsonw *w, bool v) { jsonw_sep(w); bv_buf_puts(w->out, v ? "true" : "false"); }
void jsonw_null(jsonw *w) { jsonw_sep(w); bv_buf_puts(w->out, "null"); }
void jsonw_raw(jsonw *w, const char *json, size_t n) { jsonw_sep(w); bv_buf_put(w->out, json, n); }

void jsonw_f64(jsonw *w, double v) {
    char tmp[48];
    int n = bv_fmt_f64(v, tmp);
    jsonw_sep(w);
    bv_buf_put(w->out, tmp, (size_t)n);
}

static int cmp_key(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void jsonw_json(jsonw *w, const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(j), i = 0;
        const char **keys = n ? malloc(n * sizeof *keys) : NULL;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) keys[i++] = k;
        if (n) qsort(keys, n, sizeof *keys, cmp_key);
        jsonw_obj_begin(w);
        for (i = 0; i < n; i++) {
            jsonw_key(w, keys[i]);
            jsonw_json(w, json_object_get(j, keys[i]));
        }
        jsonw_obj_end(w);
        free(keys);
        break;
    }
    case JSON_ARRAY: {
        jsonw_arr_begin(w);
        for (size_t i = 0; i < json_array_size(j); i++) jsonw_json(w, json_array_get(j, i));
        jsonw_arr_end(w);
        break;
    }
    case JSON_STRING: jsonw_strn(w, json_string_value(j), json_string_length(j)); break;
    case JSON_INTEGER: jsonw_i64(w, (int64_t)json_integer_value(j)); break;
    case JSON_REAL: jsonw_f64(w, json_real_value(j)); break;
    case JSON_TRUE: jsonw_bool(w, true); break;
    case JSON_FALSE: jsonw_bool(w, false); break;
    case JSON_NULL: jsonw_null(w); break;
    }
}

void jsonw_value(jsonw *w, const bv_value *v) {
    switch (v->kind) {
    case BV_NULL: jsonw_null(w); break;
    case BV_BOOL: jsonw_bool(w, v->u.b); break;
    case BV_I64: jsonw_i64(w, v->u.i); break;
    case BV_F64: jsonw_f64(w, v->u.f); break;
    case BV_STR: jsonw_strn(w, v->u.s.ptr, v->u.s.len); break;
    case BV_JSON: jsonw_json(w, v->u.j); break;
    }
}

void jsonw_error(bv_buf *out, const char *code, const jsonw_member *m, size_t n, bool with_version,
                 uint64_t version) {
    jsonw w;
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "error");
    jsonw_obj_begin(&w);
    jsonw_key(&w, "code");
    jsonw_str(&w, code);
    for (size_t i = 0; i < n; i++) {
        jsonw_key(&w, m[i].key);
        if (m[i].str) jsonw_str(&w, m[i].str);
        else if (m[i].raw) jsonw_raw(&w, m[i].raw, strlen(m[i].raw));
        else jsonw_i64(&w, (int64_t)m[i].num);
    }
    jsonw_obj_end(&w);
    if (with_version) {
        jsonw_key(&w, "registry_version");
        jsonw_u64(&w, version);
    }
    jsonw_obj_end(&w);
}
