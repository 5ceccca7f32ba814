/*
 * value.h - the runtime value of one event field, and event rows.
 *
 * bv_value is a small tagged union that never owns memory: strings point into the
 * parsed request (jansson) or into an arena, JSON lists/maps keep a borrowed json_t.
 * A bv_row is an ordered list of (name, value) pairs: the parsed push body after
 * validation, and the row chain ops transform. Rows are small (tens of fields), so
 * lookup is a linear scan by design; the hot path never hashes field names.
 *
 * bv_wtype is a declared schema type (the lowercase wire types "str", "i64", ...).
 */
#ifndef BEAVA_VALUE_H
#define BEAVA_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <jansson.h>

typedef enum bv_kind {
    BV_NULL = 0,
    BV_BOOL,
    BV_I64,
    BV_F64,
    BV_STR,
    BV_JSON,      /* list or map (borrowed json_t) */
} bv_kind;

typedef struct bv_value {
    bv_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct { const char *ptr; size_t len; } s;
        const json_t *j;
    } u;
} bv_value;

static inline bv_value bv_null(void) { bv_value v; v.kind = BV_NULL; v.u.i = 0; return v; }
static inline bv_value bv_bool(bool b) { bv_value v; v.kind = BV_BOOL; v.u.b = b; return v; }
static inline bv_value bv_i64(int64_t i) { bv_value v; v.kind = BV_I64; v.u.i = i; return v; }
static inline bv_value bv_f64(double f) { bv_value v; v.kind = BV_F64; v.u.f = f; return v; }
static inline bv_value bv_str(const char *p, size_t n) { bv_value v; v.kind = BV_STR; v.u.s.ptr = p; v.u.s.len = n; return v; }

/* a[0..n) == b[0..n) for the short field names of a schema, inline (no libc call): two
 * overlapping 8- (or 4-) byte words cover 4..16 bytes; longer names use memcmp. */
static inline bool bv_short_name_eq(const char *a, const char *b, size_t n) {
    uint64_t x0, y0, x1, y1;
    uint32_t u0, v0, u1, v1;
    if (n > 16) return memcmp(a, b, n) == 0;
    if (n >= 8) {
        memcpy(&x0, a, 8); memcpy(&y0, b, 8); memcpy(&x1, a + n - 8, 8); memcpy(&y1, b + n - 8, 8);
        return x0 == y0 && x1 == y1;
    }
    if (n >= 4) {
        memcpy(&u0, a, 4); memcpy(&v0, b, 4); memcpy(&u1, a + n - 4, 4); memcpy(&v1, b + n - 4, 4);
        return u0 == v0 && u1 == v1;
    }
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return false;
    return true;
}

/* Numeric view: I64 -> double, F64 as is. Returns false for every other kind. */
static inline bool bv_as_f64(const bv_value *v, double *out) {
    if (v->kind == BV_I64) { *out = (double)v->u.i; return true; }
    if (v->kind == BV_F64) { *out = v->u.f; return true; }
    return false;
}

/* Convert a jansson value to a borrowed bv_value (integer->I64, real->F64, ...). */
bv_value bv_from_json(const json_t *j);

/* Strict variant+value equality (NaN never equal, strings bytewise). */
bool bv_equal(const bv_value *a, const bv_value *b);

/* A Unicode Cc (U+0000-001F, U+007F, U+0080-009F as UTF-8 C2 80..C2 9F) in s[0..n). */
bool bv_has_control_char(const char *s, size_t n);

/* A Cc in any string or key of the tree (as it stands: a key given twice counts once,
 * with the value it kept). Walks at most JSON_PARSER_MAX_DEPTH levels, jansson's own
 * nesting bound for parsed trees. */
bool bv_json_has_control_char(const json_t *j);

typedef enum bv_wtype {
    WT_STR = 0, WT_I64, WT_F64, WT_BOOL, WT_BYTES, WT_DATETIME, WT_JSON,
    WT__COUNT
} bv_wtype;

/* "str" -> WT_STR ...; returns -1 for an unknown name. */
int bv_wtype_parse(const char *name);
const char *bv_wtype_name(bv_wtype t);

/* A declared schema: ordered (name, type) pairs plus the names allowed to be absent.
 * A schema owns its strings (bv_schema_free releases them). */
typedef struct bv_schema {
    size_t n, cap;
    char **names;
    bv_wtype *types;
    size_t nopt;
    char **optional;
} bv_schema;

void bv_schema_init(bv_schema *s);
void bv_schema_free(bv_schema *s);
/* Add or overwrite (keeps position on overwrite). */
void bv_schema_set(bv_schema *s, const char *name, bv_wtype t);
bool bv_schema_remove(bv_schema *s, const char *name);
void bv_schema_add_optional(bv_schema *s, const char *name);
bool bv_schema_is_optional(const bv_schema *s, const char *name);
/* CRC-32C of the field names and types in position order (optional_fields aside): two
 * schemas with the same fingerprint name the same field at every position. A schema
 * widened in place (fields appended) keeps its first fields, so the fingerprint of its
 * first k fields is that of the schema before: bv_schema_fingerprint_extend(fp of the
 * first k, field k) gives the first k + 1 (0 is the fingerprint of no field). */
uint32_t bv_schema_fingerprint(const bv_schema *s);
uint32_t bv_schema_fingerprint_extend(uint32_t fp, const char *name, bv_wtype type);
/* Returns the index of name or -1; *t receives its type when found. */
int bv_schema_find(const bv_schema *s, const char *name, bv_wtype *t);
void bv_schema_copy(bv_schema *dst, const bv_schema *src);

typedef struct bv_field {
    const char *name;       /* borrowed */
    size_t name_len;
    bv_value value;
} bv_field;

typedef struct bv_row {
    bv_field *fields;
    size_t n, cap;          /* cap == 0 means fields is borrowed / fixed */
} bv_row;

/* Look up a field by NUL-terminated name; NULL if absent. */
const bv_value *bv_row_get(const bv_row *row, const char *name);
const bv_value *bv_row_getn(const bv_row *row, const char *name, size_t len);
/* bv_row_getn for the event path: rows are small and usually arrive in schema order, so
 * the field's schema position `pos` (-1 none) is tried first; any other order falls back
 * to the scan by name (names compared inline: a row sent key first puts the key and
 * event_time off their schema positions on every event), with the same result. */
static inline const bv_value *bv_row_field_at(const bv_row *row, const char *name, size_t len, long pos) {
    if (pos >= 0 && (size_t)pos < row->n) {
        const bv_field *x = &row->fields[pos];
        if (x->name_len == len && bv_short_name_eq(x->name, name, len)) return &x->value;
    }
    for (size_t i = 0; i < row->n; i++) {
        const bv_field *x = &row->fields[i];
        if (x->name_len == len && bv_short_name_eq(x->name, name, len)) return &x->value;
    }
    return NULL;
}

/* Canonical text of a key value for entity keys and dedupe keys:
 * Str verbatim, I64 decimal, Bool true/false, F64 shortest form.
 * Writes at most cap-1 bytes plus NUL into buf; returns the text length, or -1 if the
 * value is not usable as a key (null, NaN, list/map) or does not fit. */
int bv_key_text(const bv_value *v, char *buf, size_t cap);

#endif
