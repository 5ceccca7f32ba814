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

/* memcpy that allows (NULL, 0): an empty name or string may come without storage. */
static inline unsigned char *copy_bytes(unsigned char *w, const void *p, size_t n) {
    if (n) memcpy(w, p, n);
    return w + n;
}

/* Bytes of one field's encoding, its list/map text aside (TAG_JSON: the caller adds it). */
static size_t field_size(const bv_field *f) {
    size_t kl = f->name_len > EVREC_NAME_MAX ? EVREC_NAME_MAX : f->name_len;
    size_t n = 2 + kl + 1;
    switch (f->value.kind) {
    case BV_NULL:
    case BV_BOOL: break;
    case BV_I64:
    case BV_F64: n += 8; break;
    case BV_STR: n += 4 + f->value.u.s.len; break;
    case BV_JSON: n += 4; break;
    }
    return n;
}

/* The record is sized first (list/map values are rendered to text then), reserved once,
 * and written in place: no capacity check per piece. */
void evrec_encode(int64_t now, const char *event, size_t event_len, const bv_row *row, bv_buf *out) {
    size_t need = 12 + event_len + 4;
    size_t njson = 0;
    for (size_t i = 0; i < row->n; i++) {
        need += field_size(&row->fields[i]);
        njson += row->fields[i].value.kind == BV_JSON;
    }
    /* list/map fields: compact JSON text, rendered before the write (rare on the push path) */
    char *small[8] = { 0 };
    char **txt = njson <= 8 ? small : calloc(njson, sizeof *txt);
    if (!txt) abort();
    for (size_t i = 0, k = 0; i < row->n; i++) {
        if (row->fields[i].value.kind != BV_JSON) continue;
        txt[k] = json_dumps(row->fields[i].value.u.j, JSON_COMPACT | JSON_ENCODE_ANY);
        need += txt[k] ? strlen(txt[k]) : 4;
        k++;
    }
    bv_buf_reserve(out, need);
    unsigned char *w = (unsigned char *)out->data + out->len;
    codec_put64(w, (uint64_t)now);
    codec_put32(w + 8, (uint32_t)event_len);
    w = copy_bytes(w + 12, event, event_len);
    codec_put32(w, (uint32_t)row->n);
    w += 4;
    for (size_t i = 0, k = 0; i < row->n; i++) {
        const bv_field *f = &row->fields[i];
        size_t kl = f->name_len > EVREC_NAME_MAX ? EVREC_NAME_MAX : f->name_len;
        codec_put16(w, (uint16_t)kl);
        w = copy_bytes(w + 2, f->name, kl);
        const bv_value *v = &f->value;
        switch (v->kind) {
        case BV_NULL: *w++ = TAG_NULL; break;
        case BV_BOOL: *w++ = v->u.b ? TAG_TRUE : TAG_FALSE; break;
        case BV_I64:
            *w = TAG_I64;
            codec_put64(w + 1, (uint64_t)v->u.i);
            w += 9;
            break;
        case BV_F64:
            *w = TAG_F64;
            codec_put64(w + 1, codec_f64_bits(v->u.f));
            w += 9;
            break;
        case BV_STR:
            *w = TAG_STR;
            codec_put32(w + 1, (uint32_t)v->u.s.len);
            w = copy_bytes(w + 5, v->u.s.ptr, v->u.s.len);
            break;
        case BV_JSON: {
            const char *t = txt[k] ? txt[k] : "null";
            size_t tl = txt[k] ? strlen(txt[k]) : 4;
            *w = TAG_JSON;
            codec_put32(w + 1, (uint32_t)tl);
            w = copy_bytes(w + 5, t, tl);
            free(txt[k]);
            k++;
            break;
        }
        }
    }
    out->len = (size_t)((char *)w - out->data);
    out->data[out->len] = 0;
    if (txt != small) free(txt);
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
