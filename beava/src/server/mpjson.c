/*
 * mpjson.c - MessagePack <-> jansson (see mpjson.h).
 */
#include "mpjson.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

static json_t *from_object(const msgpack_object *o, int depth, char *err, size_t errlen) {
    if (depth > MPJSON_MAX_DEPTH) {
        snprintf(err, errlen, "msgpack nesting deeper than %d", MPJSON_MAX_DEPTH);
        return NULL;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX) return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: return json_stringn_nocheck(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            json_t *v = from_object(&o->via.array.ptr[i], depth + 1, err, errlen);
            if (!v) { json_decref(a); return NULL; }
            json_array_append_new(a, v);
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) {
                snprintf(err, errlen, "msgpack map key %u is not a string", i);
                json_decref(m);
                return NULL;
            }
            char key[1024];
            if (kv->key.via.str.size >= sizeof key || memchr(kv->key.via.str.ptr, 0, kv->key.via.str.size)) {
                snprintf(err, errlen, "msgpack map key %u is too long or contains NUL", i);
                json_decref(m);
                return NULL;
            }
            memcpy(key, kv->key.via.str.ptr, kv->key.via.str.size);
            key[kv->key.via.str.size] = 0;
            json_t *v = from_object(&kv->val, depth + 1, err, errlen);
            if (!v) { json_decref(m); return NULL; }
            json_object_set_new(m, key, v);
        }
        return m;
    }
    default:
        snprintf(err, errlen, "msgpack bin/ext values are not supported");
        return NULL;
    }
}

json_t *mpjson_decode(const char *buf, size_t len, char *err, size_t errlen) {
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack_next(&u, buf, len, &off);
    json_t *out = NULL;
    if (r != MSGPACK_UNPACK_SUCCESS) {
        snprintf(err, errlen, "invalid msgpack (%s)", r == MSGPACK_UNPACK_CONTINUE ? "truncated" : "parse error");
    } else if (off != len) {
        snprintf(err, errlen, "trailing bytes after the msgpack value (%zu of %zu used)", off, len);
    } else {
        out = from_object(&u.data, 0, err, errlen);
    }
    msgpack_unpacked_destroy(&u);
    return out;
}

static int buf_write(void *data, const char *p, size_t n) {
    bv_buf_put(data, p, n);
    return 0;
}

static void pack(msgpack_packer *pk, const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        msgpack_pack_map(pk, json_object_size(j));
        json_object_foreach((json_t *)j, k, v) {
            size_t kl = strlen(k);
            msgpack_pack_str(pk, kl);
            msgpack_pack_str_body(pk, k, kl);
            pack(pk, v);
        }
        break;
    }
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++) pack(pk, json_array_get(j, i));
        break;
    case JSON_STRING:
        msgpack_pack_str(pk, json_string_length(j));
        msgpack_pack_str_body(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER: msgpack_pack_int64(pk, (int64_t)json_integer_value(j)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    case JSON_NULL: msgpack_pack_nil(pk); break;
    }
}

void mpjson_encode(const json_t *j, bv_buf *out) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    pack(&pk, j);
}
