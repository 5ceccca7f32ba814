/*
 * evrec.c - binary event records for the WAL (see evrec.h).
 */
#include "evrec.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum { TAG_NULL = 0, TAG_FALSE, TAG_TRUE, TAG_I64, TAG_F64, TAG_STR, TAG_JSON };

static void put_u16(bv_buf *b, uint16_t v) { bv_buf_put(b, &v, 2); }
static void put_u32(bv_buf *b, uint32_t v) { bv_buf_put(b, &v, 4); }

void evrec_encode(int64_t now, const char *event, size_t event_len, const json_t *data, bv_buf *out) {
    uint64_t t = (uint64_t)now;
    bv_buf_put(out, &t, 8);
    put_u32(out, (uint32_t)event_len);
    bv_buf_put(out, event, event_len);
    put_u32(out, (uint32_t)json_object_size(data));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)data, k, v) {
        size_t kl = strlen(k);
        put_u16(out, (uint16_t)(kl > 0xffff ? 0xffff : kl));
        bv_buf_put(out, k, kl > 0xffff ? 0xffff : kl);
        uint8_t tag;
        switch (json_typeof(v)) {
        case JSON_NULL: tag = TAG_NULL; bv_buf_put(out, &tag, 1); break;
        case JSON_FALSE: tag = TAG_FALSE; bv_buf_put(out, &tag, 1); break;
        case JSON_TRUE: tag = TAG_TRUE; bv_buf_put(out, &tag, 1); break;
        case JSON_INTEGER: {
            int64_t i = (int64_t)json_integer_value(v);
            tag = TAG_I64;
            bv_buf_put(out, &tag, 1);
            bv_buf_put(out, &i, 8);
            break;
        }
        case JSON_REAL: {
            double d = json_real_value(v);
            tag = TAG_F64;
            bv_buf_put(out, &tag, 1);
            bv_buf_put(out, &d, 8);
            break;
        }
        case JSON_STRING:
            tag = TAG_STR;
            bv_buf_put(out, &tag, 1);
            put_u32(out, (uint32_t)json_string_length(v));
            bv_buf_put(out, json_string_value(v), json_string_length(v));
            break;
        default: {
            char *txt = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            size_t tl = txt ? strlen(txt) : 4;
            tag = TAG_JSON;
            bv_buf_put(out, &tag, 1);
            put_u32(out, (uint32_t)tl);
            bv_buf_put(out, txt ? txt : "null", tl);
            free(txt);
        }
        }
    }
}

typedef struct rd {
    const unsigned char *p, *end;
} rd;

static bool take(rd *r, void *out, size_t n) {
    if ((size_t)(r->end - r->p) < n) return false;
    if (out) memcpy(out, r->p, n);
    r->p += n;
    return true;
}

int evrec_decode(const void *p, size_t len, int64_t *now, const char **event, size_t *event_len, json_t **data,
                 char *reason, size_t rlen) {
    rd r = { p, (const unsigned char *)p + len };
    uint64_t t;
    uint32_t nl, nf;
    *data = NULL;
    if (!take(&r, &t, 8) || !take(&r, &nl, 4) || (size_t)(r.end - r.p) < nl) goto truncated;
    *now = (int64_t)t;
    *event = (const char *)r.p;
    *event_len = nl;
    r.p += nl;
    if (!take(&r, &nf, 4) || nf > len) goto truncated;
    json_t *obj = json_object();
    if (!obj) goto truncated;
    for (uint32_t i = 0; i < nf; i++) {
        uint16_t kl;
        uint8_t tag;
        char key[0x10000];
        if (!take(&r, &kl, 2) || !take(&r, key, kl) || !take(&r, &tag, 1)) goto bad;
        key[kl] = 0;
        json_t *v = NULL;
        switch (tag) {
        case TAG_NULL: v = json_null(); break;
        case TAG_FALSE: v = json_false(); break;
        case TAG_TRUE: v = json_true(); break;
        case TAG_I64: {
            int64_t x;
            if (!take(&r, &x, 8)) goto bad;
            v = json_integer((json_int_t)x);
            break;
        }
        case TAG_F64: {
            double d;
            if (!take(&r, &d, 8)) goto bad;
            v = json_real(d);
            break;
        }
        case TAG_STR:
        case TAG_JSON: {
            uint32_t sl;
            if (!take(&r, &sl, 4) || (size_t)(r.end - r.p) < sl) goto bad;
            if (tag == TAG_STR) v = json_stringn_nocheck((const char *)r.p, sl);
            else v = json_loadb((const char *)r.p, sl, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            r.p += sl;
            break;
        }
        default: goto bad;
        }
        if (!v || json_object_set_new(obj, key, v) != 0) goto bad;
    }
    if (r.p != r.end) {
        json_decref(obj);
        snprintf(reason, rlen, "event record has %zu trailing bytes", (size_t)(r.end - r.p));
        return -1;
    }
    *data = obj;
    return 0;
bad:
    json_decref(obj);
truncated:
    snprintf(reason, rlen, "event record is truncated or malformed");
    return -1;
}
