/*
 * mpjson.c - MessagePack <-> jansson (see mpjson.h).
 */
#include "mpjson.h"

#include <msgpack.h>
#include <stdbool.h>
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
            /* an empty key comes with ptr == NULL: no memchr/memcpy on it (UB even for 0 bytes) */
            size_t kn = kv->key.via.str.size;
            if (kn >= sizeof key || (kn && memchr(kv->key.via.str.ptr, 0, kn))) {
                snprintf(err, errlen, "msgpack map key %u is too long or contains NUL", i);
                json_decref(m);
                return NULL;
            }
            if (kn) memcpy(key, kv->key.via.str.ptr, kn);
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

/* Walk the encoding without allocating and check that every container's declared count
 * fits in the bytes that remain (each element takes at least one byte) and that nesting
 * stays under the cap. msgpack-c sizes its allocations from the declared counts, so
 * without this a 5-byte array header could ask for gigabytes. */
static int mp_check(const unsigned char *p, size_t len, char *err, size_t errlen) {
    uint64_t pending[MPJSON_MAX_DEPTH + 1];
    int depth = 0;
    size_t off = 0;
    pending[0] = 1;
    while (depth >= 0) {
        if (pending[depth] == 0) { depth--; continue; }
        pending[depth]--;
        if (off >= len) { snprintf(err, errlen, "truncated msgpack"); return -1; }
        unsigned char t = p[off++];
        uint64_t skip = 0, count = 0;
        bool container = false;
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        } else if (t >= 0x80 && t <= 0x8f) { container = true; count = 2u * (t & 15); }
        else if (t >= 0x90 && t <= 0x9f) { container = true; count = t & 15; }
        else if (t >= 0xa0 && t <= 0xbf) { skip = t & 31; }
        else {
            size_t n;
            switch (t) {
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xca: case 0xce: case 0xd2: skip = 4; break;
            case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xc4: case 0xd9: case 0xc7: n = 1; goto sized;
            case 0xc5: case 0xda: case 0xc8: case 0xdc: case 0xde: n = 2; goto sized;
            case 0xc6: case 0xdb: case 0xc9: case 0xdd: case 0xdf: n = 4; goto sized;
            default: snprintf(err, errlen, "invalid msgpack type byte 0x%02x", t); return -1;
            sized:
                if (len - off < n) { snprintf(err, errlen, "truncated msgpack"); return -1; }
                for (size_t i = 0; i < n; i++) count = count << 8 | p[off + i];
                off += n;
                if (t == 0xdc || t == 0xdd) container = true;
                else if (t == 0xde || t == 0xdf) { container = true; count *= 2; }
                else { skip = count + ((t >= 0xc7 && t <= 0xc9) ? 1 : 0); count = 0; }
            }
        }
        if (skip) {
            if (len - off < skip) { snprintf(err, errlen, "truncated msgpack"); return -1; }
            off += skip;
        }
        if (container) {
            if (count > len - off) {
                snprintf(err, errlen, "msgpack container declares %llu elements but only %zu bytes follow",
                         (unsigned long long)count, len - off);
                return -1;
            }
            if (depth + 1 > MPJSON_MAX_DEPTH) {
                snprintf(err, errlen, "msgpack nesting deeper than %d", MPJSON_MAX_DEPTH);
                return -1;
            }
            pending[++depth] = count;
        }
    }
    if (off != len) {
        snprintf(err, errlen, "trailing bytes after the msgpack value (%zu of %zu used)", off, len);
        return -1;
    }
    return 0;
}

json_t *mpjson_decode(const char *buf, size_t len, char *err, size_t errlen) {
    if (mp_check((const unsigned char *)buf, len, err, errlen) != 0) return NULL;
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
