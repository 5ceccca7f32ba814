/*
 * op_value_change_count.c - `value_change_count`: how many times the non-null value of
 * `field` differed from the previous one.
 * Equality is strict: same kind and value, strings bytewise, NaN never equal, lists and
 * maps by their canonical JSON text (sorted keys). i64; empty 0.
 *
 * Numeric values are first coerced to the field's declared type (opval_coerce, as for
 * min/max/first/last): on an f64 field `10` then `10.0` is no change, where the
 * reference, comparing JSON token types, counted one.
 *
 * Window (the reference accepted it and ignored it; we honour it): a real sliding window
 * over the framework's 64 sub-buckets. A bucket keeps its first and last value and the
 * changes inside it; merging oldest first adds one change when a bucket's first value
 * differs from the previous bucket's last. So a windowed count is the changes between
 * consecutive events that are both in the window: the step from the last value before the
 * window into its first event is not counted (that "previous" value is no longer in the
 * window; counting it would need state outside the buckets).
 *
 * State: 48 bytes (two op_val + counters), all-zero = empty; strings are owned copies.
 */
#include "counter.h"
#include <string.h>
#include "op.h"
#include "opval.h"
#include "codec.h"

typedef struct vcc_st {
    op_val first, last;
    int64_t n;                /* values seen */
    int64_t changes;
} vcc_st;

static bool same_opval(const op_val *a, const op_val *b) {
    if (a->kind != b->kind) return false;
    switch ((bv_kind)a->kind) {
    case BV_NULL: return true;
    case BV_BOOL: return a->u.b == b->u.b;
    case BV_I64: return a->u.i == b->u.i;
    case BV_F64: return a->u.f == b->u.f;    /* NaN != NaN */
    case BV_STR:
    case BV_JSON: return opval_text_eq(a, opval_bytes(b), opval_len(b));
    }
    return false;
}

static bool same_value(const op_val *a, const bv_value *v) {
    if (v->kind == BV_JSON) {
        op_val t;
        memset(&t, 0, sizeof t);
        opval_set(&t, v);
        bool r = same_opval(a, &t);
        opval_clear(&t);
        return r;
    }
    if (a->kind != (uint8_t)v->kind) return false;
    switch (v->kind) {
    case BV_BOOL: return a->u.b == v->u.b;
    case BV_I64: return a->u.i == v->u.i;
    case BV_F64: return a->u.f == v->u.f;
    case BV_STR: return opval_text_eq(a, v->u.s.ptr, v->u.s.len);
    default: return false;
    }
}

static void vcc_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    vcc_st *s = st;
    if (cnt_inc(&s->n) == 0) {
        opval_set(&s->first, in->v);
        opval_set(&s->last, in->v);
        return;
    }
    if (same_value(&s->last, in->v)) return;
    cnt_inc(&s->changes);
    opval_set(&s->last, in->v);
}

static void vcc_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    vcc_st *d = dst;
    const vcc_st *s = src;
    if (s->n == 0) return;
    if (d->n == 0) {
        opval_copy(&d->first, &s->first);
        d->changes = s->changes;
    } else {
        d->changes = cnt_add(cnt_add(d->changes, s->changes), !same_opval(&d->last, &s->first));
    }
    opval_copy(&d->last, &s->last);
    d->n = cnt_add(d->n, s->n);
}

static void vcc_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    (void)f; (void)q;
    jsonw_i64(w, ((const vcc_st *)st)->changes);
}

static void vcc_destroy(const feature *f, void *st) {
    (void)f;
    vcc_st *s = st;
    opval_clear(&s->first);
    opval_clear(&s->last);
}

static void vcc_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const vcc_st *s = st;
    cod_put_i64(out, s->n);
    cod_put_i64(out, s->changes);
    opval_encode(out, &s->first);
    opval_encode(out, &s->last);
}

static int vcc_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    vcc_st t;
    memset(&t, 0, sizeof t);
    if (cod_get_i64(p, end, &t.n) < 0 || cod_get_i64(p, end, &t.changes) < 0 ||
        opval_decode(p, end, &t.first) < 0 || opval_decode(p, end, &t.last) < 0)
        goto err;
    /* n == 0 <=> both values empty; changes < n */
    if (t.n < 0 || t.changes < 0 || (t.n == 0 ? t.changes != 0 : t.changes >= t.n) ||
        (t.first.kind == BV_NULL) != (t.n == 0) || (t.last.kind == BV_NULL) != (t.n == 0))
        goto err;
    vcc_destroy(f, st);
    *(vcc_st *)st = t;
    return 0;
err:
    vcc_destroy(f, &t);
    return -1;
}

/* The base vtable and its f64 / i64 coercing variants (op.h). */
#define VCC_COMMON                                                                   \
    .name = "value_change_count",                                                    \
    .flags = OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD | OPF_COERCE,      \
    .state_size = sizeof(vcc_st), .update = vcc_update, .merge = vcc_merge,          \
    .read = vcc_read, .destroy = vcc_destroy, .encode = vcc_encode, .decode = vcc_decode

static const struct op_vtable vcc_as_f64 = { VCC_COMMON, .coerce = OP_COERCE_F64 };
static const struct op_vtable vcc_as_i64 = { VCC_COMMON, .coerce = OP_COERCE_I64 };
const struct op_vtable op_value_change_count = {
    VCC_COMMON, .coerce = OP_COERCE_NONE, .as_f64 = &vcc_as_f64, .as_i64 = &vcc_as_i64,
};
