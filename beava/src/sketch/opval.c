/*
 * opval.c - owned value copies, typed hashing, value order and numeric coercion used
 * by the operators (see opval.h).
 */
#include "opval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include "codec.h"

#define OPVAL_MAX_LEN UINT32_MAX

static char *dup_bytes(const char *p, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    if (n) memcpy(s, p, n);
    s[n] = 0;
    return s;
}

void opval_clear(op_val *d) {
    if ((d->kind == BV_STR || d->kind == BV_JSON) && !d->sso) free(d->u.heap);
    memset(d, 0, sizeof *d);
}

/* Store len bytes of text into n, whose kind is set and other bytes zero: inline when
 * at most OPVAL_INLINE_MAX bytes, else on the heap. The only writer of text, so the
 * form follows from the length alone. */
static void set_text(op_val *n, const char *p, size_t len) {
    if (len <= OPVAL_INLINE_MAX) {
        n->sso = (uint8_t)(len + 1);
        if (len) memcpy(n->in.text, p, len);
    } else {
        n->heap_len = (uint32_t)len;
        n->u.heap = dup_bytes(p, len);
    }
}

void opval_set(op_val *d, const bv_value *v) {
    op_val n;
    memset(&n, 0, sizeof n);
    n.kind = (uint8_t)v->kind;
    switch (v->kind) {
    case BV_NULL: break;
    case BV_BOOL: n.u.b = v->u.b; break;
    case BV_I64: n.u.i = v->u.i; break;
    case BV_F64: n.u.f = v->u.f; break;
    case BV_STR: {
        size_t len = v->u.s.len > OPVAL_MAX_LEN ? OPVAL_MAX_LEN : v->u.s.len;
        set_text(&n, v->u.s.ptr, len);
        break;
    }
    case BV_JSON: {
        bv_buf b;
        jsonw w;
        bv_buf_init(&b);
        jsonw_init(&w, &b);
        jsonw_json(&w, v->u.j);
        if (b.len > OPVAL_MAX_LEN) b.len = OPVAL_MAX_LEN;
        set_text(&n, b.data ? b.data : "", b.len);
        bv_buf_free(&b);
        break;
    }
    }
    opval_clear(d);
    *d = n;
}

void opval_copy(op_val *d, const op_val *s) {
    if (d == s) return;
    opval_clear(d);
    *d = *s;
    if ((s->kind == BV_STR || s->kind == BV_JSON) && !s->sso) d->u.heap = dup_bytes(s->u.heap, s->heap_len);
}

bv_value opval_view(const op_val *v) {
    switch ((bv_kind)v->kind) {
    case BV_BOOL: return bv_bool(v->u.b);
    case BV_I64: return bv_i64(v->u.i);
    case BV_F64: return bv_f64(v->u.f);
    case BV_STR:
    case BV_JSON: return bv_str(opval_bytes(v), opval_len(v));
    default: return bv_null();
    }
}

void opval_write(const op_val *v, jsonw *w) {
    switch ((bv_kind)v->kind) {
    case BV_BOOL: jsonw_bool(w, v->u.b); break;
    case BV_I64: jsonw_i64(w, v->u.i); break;
    case BV_F64: jsonw_f64(w, v->u.f); break;
    case BV_STR: jsonw_strn(w, opval_bytes(v), opval_len(v)); break;
    case BV_JSON: jsonw_raw(w, opval_bytes(v), opval_len(v)); break;
    default: jsonw_null(w); break;
    }
}

uint64_t opval_hash(const bv_value *v) {
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(v->kind + 1);
    switch (v->kind) {
    case BV_BOOL: {
        uint8_t b = v->u.b ? 1 : 0;
        return XXH3_64bits_withSeed(&b, 1, seed);
    }
    case BV_I64: return XXH3_64bits_withSeed(&v->u.i, 8, seed);
    case BV_F64: {
        double f = v->u.f;
        if (f == 0) f = 0.0;           /* -0.0 == 0.0 */
        if (isnan(f)) f = NAN;
        uint64_t u;
        memcpy(&u, &f, 8);
        return XXH3_64bits_withSeed(&u, 8, seed);
    }
    case BV_STR: return XXH3_64bits_withSeed(v->u.s.ptr, v->u.s.len, seed);
    case BV_JSON: {
        bv_buf b;
        jsonw w;
        bv_buf_init(&b);
        jsonw_init(&w, &b);
        jsonw_json(&w, v->u.j);
        uint64_t h = XXH3_64bits_withSeed(b.data ? b.data : "", b.len, seed);
        bv_buf_free(&b);
        return h;
    }
    default: return XXH3_64bits_withSeed("", 0, seed);
    }
}

bool opval_same_key(const op_val *a, const bv_value *b) {
    if (a->kind != (uint8_t)b->kind) return false;
    switch (b->kind) {
    case BV_NULL: return true;
    case BV_BOOL: return a->u.b == b->u.b;
    case BV_I64: return a->u.i == b->u.i;
    case BV_F64: return a->u.f == b->u.f || (isnan(a->u.f) && isnan(b->u.f));
    case BV_STR: return opval_text_eq(a, b->u.s.ptr, b->u.s.len);
    default: return false;   /* lists/maps are never map keys */
    }
}

static int kind_rank(uint8_t k) {
    switch ((bv_kind)k) {
    case BV_STR: return 0;
    case BV_I64: return 1;
    case BV_F64: return 2;
    case BV_BOOL: return 3;
    default: return 4;
    }
}

int opval_order(const op_val *a, const op_val *b) {
    int ra = kind_rank(a->kind), rb = kind_rank(b->kind);
    if (ra != rb) return ra < rb ? -1 : 1;
    switch ((bv_kind)a->kind) {
    case BV_STR: {
        uint32_t la = opval_len(a), lb = opval_len(b);
        uint32_t n = la < lb ? la : lb;
        int c = n ? memcmp(opval_bytes(a), opval_bytes(b), n) : 0;
        if (c) return c < 0 ? -1 : 1;
        return la < lb ? -1 : la > lb;
    }
    case BV_I64: return a->u.i < b->u.i ? -1 : a->u.i > b->u.i;
    case BV_F64: {
        bool na = isnan(a->u.f), nb = isnan(b->u.f);
        if (na || nb) return na - nb;
        return a->u.f < b->u.f ? -1 : a->u.f > b->u.f;
    }
    case BV_BOOL: return (int)a->u.b - (int)b->u.b;
    default: return 0;
    }
}

bv_value opval_coerce(const bv_value *v, int wtype) {
    if (wtype == WT_F64 && v->kind == BV_I64) return bv_f64((double)v->u.i);
    if (wtype == WT_I64 && v->kind == BV_F64) {
        double f = v->u.f;
        /* 2^63 is exactly representable; the range [-2^63, 2^63) fits an int64. */
        if (f == floor(f) && f >= -9223372036854775808.0 && f < 9223372036854775808.0)
            return bv_i64((int64_t)f);
    }
    return *v;
}

void opval_encode(bv_buf *out, const op_val *v) {
    cod_put_u8(out, v->kind);
    switch ((bv_kind)v->kind) {
    case BV_BOOL: cod_put_u8(out, v->u.b ? 1 : 0); break;
    case BV_I64: cod_put_i64(out, v->u.i); break;
    case BV_F64: cod_put_f64(out, v->u.f); break;
    case BV_STR:
    case BV_JSON:
        cod_put_u32(out, opval_len(v));
        bv_buf_put(out, opval_bytes(v), opval_len(v));
        break;
    default: break;
    }
}

int opval_decode(const uint8_t **p, const uint8_t *end, op_val *v) {
    const uint8_t *q = *p;
    uint8_t kind, b;
    op_val n;
    memset(&n, 0, sizeof n);
    if (cod_get_u8(&q, end, &kind) < 0) return -1;
    n.kind = kind;
    switch ((bv_kind)kind) {
    case BV_NULL: break;
    case BV_BOOL:
        if (cod_get_u8(&q, end, &b) < 0 || b > 1) return -1;
        n.u.b = b;
        break;
    case BV_I64: if (cod_get_i64(&q, end, &n.u.i) < 0) return -1; break;
    case BV_F64: if (cod_get_f64(&q, end, &n.u.f) < 0) return -1; break;
    case BV_STR:
    case BV_JSON: {
        uint32_t len;
        const uint8_t *bytes;
        if (cod_get_u32(&q, end, &len) < 0 || cod_get_bytes(&q, end, len, &bytes) < 0) return -1;
        set_text(&n, (const char *)bytes, len);
        break;
    }
    default: return -1;
    }
    opval_clear(v);
    *v = n;
    *p = q;
    return 0;
}
