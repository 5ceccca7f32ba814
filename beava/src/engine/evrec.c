/*
 * evrec.c - binary event records for the WAL (see evrec.h).
 */
#include "evrec.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

enum { TAG_NULL = 0, TAG_FALSE, TAG_TRUE, TAG_I64, TAG_F64, TAG_STR, TAG_JSON };

#define EVREC_NAME_MAX 0xffffu

static void put_tag(bv_buf *b, uint8_t tag) { bv_buf_put(b, &tag, 1); }

static void put_tagged64(bv_buf *b, uint8_t tag, uint64_t v) {
    unsigned char t[9];
    t[0] = tag;
    codec_put64(t + 1, v);
    bv_buf_put(b, t, 9);
}

static void put_bytes32(bv_buf *b, uint8_t tag, const char *p, size_t n) {
    unsigned char t[5];
    t[0] = tag;
    codec_put32(t + 1, (uint32_t)n);
    bv_buf_put(b, t, 5);
    bv_buf_put(b, p, n);
}

void evrec_encode(int64_t now, const char *event, size_t event_len, const bv_row *row, bv_buf *out) {
    unsigned char h[12];
    codec_put64(h, (uint64_t)now);
    codec_put32(h + 8, (uint32_t)event_len);
    bv_buf_reserve(out, 16 + event_len + row->n * 24);
    bv_buf_put(out, h, 12);
    bv_buf_put(out, event, event_len);
    codec_put32(h, (uint32_t)row->n);
    bv_buf_put(out, h, 4);
    for (size_t i = 0; i < row->n; i++) {
        const bv_field *f = &row->fields[i];
        size_t kl = f->name_len > EVREC_NAME_MAX ? EVREC_NAME_MAX : f->name_len;
        codec_put16(h, (uint16_t)kl);
        bv_buf_put(out, h, 2);
        bv_buf_put(out, f->name, kl);
        const bv_value *v = &f->value;
        switch (v->kind) {
        case BV_NULL: put_tag(out, TAG_NULL); break;
        case BV_BOOL: put_tag(out, v->u.b ? TAG_TRUE : TAG_FALSE); break;
        case BV_I64: put_tagged64(out, TAG_I64, (uint64_t)v->u.i); break;
        case BV_F64: put_tagged64(out, TAG_F64, codec_f64_bits(v->u.f)); break;
        case BV_STR: put_bytes32(out, TAG_STR, v->u.s.ptr, v->u.s.len); break;
        case BV_JSON: {
            char *txt = json_dumps(v->u.j, JSON_COMPACT | JSON_ENCODE_ANY);
            put_bytes32(out, TAG_JSON, txt ? txt : "null", txt ? strlen(txt) : 4);
            free(txt);
            break;
        }
        }
    }
}

void evrec_release(evrec *r) {
    for (size_t i = 0; i < r->njson; i++) json_decref(r->json[i]);
    r->njson = 0;
}

int evrec_decode(const void *p, size_t len, arena *a, evrec *out, char *reason, size_t rlen) {
    codec_rd r = codec_rd_init(p, len);
    memset(out, 0, sizeof *out);
    out->now = (int64_t)codec_rd64(&r);
    uint32_t nl = codec_rd32(&r);
    out->event = (const char *)codec_take(&r, nl);
    out->event_len = nl;
    uint32_t nf = codec_rd32(&r);
    if (r.bad || nf > codec_left(&r)) goto bad;        /* every field takes at least 3 bytes */
    out->row.fields = arena_alloc(a, (nf ? nf : 1) * sizeof(bv_field));
    out->row.cap = 0;                                   /* fixed storage */
    out->json = arena_alloc(a, (nf ? nf : 1) * sizeof(json_t *));
    for (uint32_t i = 0; i < nf; i++) {
        bv_field *f = &out->row.fields[i];
        uint16_t kl = codec_rd16(&r);
        f->name = (const char *)codec_take(&r, kl);
        f->name_len = kl;
        uint8_t tag = codec_rd8(&r);
        if (r.bad) goto bad;
        switch (tag) {
        case TAG_NULL: f->value = bv_null(); break;
        case TAG_FALSE: f->value = bv_bool(false); break;
        case TAG_TRUE: f->value = bv_bool(true); break;
        case TAG_I64: f->value = bv_i64((int64_t)codec_rd64(&r)); break;
        case TAG_F64: f->value = bv_f64(codec_bits_f64(codec_rd64(&r))); break;
        case TAG_STR:
        case TAG_JSON: {
            uint32_t sl = codec_rd32(&r);
            const char *s = (const char *)codec_take(&r, sl);
            if (r.bad) goto bad;
            if (tag == TAG_STR) {
                f->value = bv_str(s, sl);
            } else {
                json_t *j = json_loadb(s, sl, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
                if (!j) goto bad;
                out->json[out->njson++] = j;
                f->value.kind = BV_JSON;
                f->value.u.j = j;
            }
            break;
        }
        default: goto bad;
        }
        if (r.bad) goto bad;
        out->row.n = i + 1;
    }
    if (codec_left(&r) != 0) {
        evrec_release(out);
        snprintf(reason, rlen, "event record has %zu trailing bytes", codec_left(&r));
        return -1;
    }
    return 0;
bad:
    evrec_release(out);
    snprintf(reason, rlen, "event record is truncated or malformed");
    return -1;
}
