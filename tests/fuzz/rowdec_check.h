/*
 * rowdec_check.h - what the two rowdec fuzz targets assert about a decoded push, against a
 * reference jansson tree (from jansson itself or from mpjson/msgpack-c). Any mismatch traps.
 *
 * - the row equals the reference object: same fields in the same order, equal values,
 *   reals bit for bit (bv_equal compares with ==);
 * - has_control_char equals a walk of the reference tree (event name, keys, strings);
 * - data_kind names the reference's type;
 * - err is valid UTF-8 (it ends up in JSON error bodies).
 */
#ifndef FUZZ_ROWDEC_CHECK_H
#define FUZZ_ROWDEC_CHECK_H

#include <string.h>

#include "server/rowdec.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

static bool fz_cc(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return true;
        if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9f) return true;
    }
    return false;
}

static bool fz_tree_cc(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_STRING: return fz_cc(json_string_value(j), json_string_length(j));
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(j); i++)
            if (fz_tree_cc(json_array_get(j, i))) return true;
        return false;
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            if (fz_cc(k, strlen(k)) || fz_tree_cc(v)) return true;
        }
        return false;
    }
    default: return false;
    }
}

static const char *fz_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static void fz_check_row(const bv_row *row, const json_t *obj) {
    CHECK(json_is_object(obj));
    CHECK(row->n == json_object_size(obj));
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        const bv_field *f = &row->fields[i++];
        CHECK(f->name_len == strlen(k) && memcmp(f->name, k, f->name_len) == 0);
        bv_value want = bv_from_json(v);
        CHECK(bv_equal(&f->value, &want));
        if (want.kind == BV_F64) CHECK(memcmp(&f->value.u.f, &want.u.f, sizeof want.u.f) == 0);
    }
}

/* A decoded push against the reference event (a JSON string) and data (any value). */
static void fz_check_push(const rowdec_push *p, const json_t *event, const json_t *data) {
    if (event) {
        CHECK(p->event && p->event_len == json_string_length(event));
        CHECK(memcmp(p->event, json_string_value(event), p->event_len) == 0);
    }
    CHECK(strcmp(p->data_kind, fz_kind(data)) == 0);
    CHECK(p->data_is_object == json_is_object(data));
    bool cc = event && fz_cc(json_string_value(event), json_string_length(event));
    if (json_is_object(data)) {
        fz_check_row(&p->row, data);
        cc = cc || fz_tree_cc(data);
        CHECK(p->has_control_char == cc);
    } else if (cc) {
        CHECK(p->has_control_char);
    }
}

static void fz_check_err(const char *err) {
    json_t *s = json_string(err);    /* NULL when not valid UTF-8 */
    CHECK(s != NULL);
    json_decref(s);
}

#endif
