/*
 * evrec.c - binary event records for the WAL (see evrec.h).
 */
#include "evrec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

enum { TAG_NULL = 0, TAG_FALSE, TAG_TRUE, TAG_I64, TAG_F64, TAG_STR, TAG_JSON, TAG_STR8 };

#define EVREC_NAME_MAX 0xffffu       /* bytes of a field name written by name */
#define EVREC_EVENT_MAX 0x7fffffffu  /* bytes of an event name (bit 31 is the form) */
#define EVREC_STR8_MAX 0xffu         /* longest string written with a one-byte length */
#define EVREC_JSON_STACK 8           /* list/map texts rendered without an allocation */

/* memcpy that allows (NULL, 0): an empty name or string may come without storage. */
static inline unsigned char *copy_bytes(unsigned char *w, const void *p, size_t n) {
    if (n) memcpy(w, p, n);
    return w + n;
}

/* The ref of field i: its schema position, or EVREC_REF_NAME. */
static inline unsigned field_ref(const evrec_pos *pos, size_t i) {
    int32_t g = pos->field[i];
    return g >= 0 && (uint32_t)g < EVREC_REF_NAME ? (unsigned)g : EVREC_REF_NAME;
}

static inline size_t name_bytes(const bv_field *f) {
    return f->name_len > EVREC_NAME_MAX ? EVREC_NAME_MAX : f->name_len;
}

/* Bytes of one field's value, its list/map text aside (TAG_JSON: the caller adds it). */
static size_t value_size(const bv_value *v) {
    switch (v->kind) {
    case BV_NULL:
    case BV_BOOL: return 1;
    case BV_I64:
    case BV_F64: return 9;
    case BV_STR: return (v->u.s.len <= EVREC_STR8_MAX ? 2 : 5) + v->u.s.len;
    case BV_JSON: return 5;
    }
    return 1;
}

static unsigned char *put_value(unsigned char *w, const bv_value *v, const char *txt) {
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
        if (v->u.s.len <= EVREC_STR8_MAX) {
            w[0] = TAG_STR8;
            w[1] = (unsigned char)v->u.s.len;
            w = copy_bytes(w + 2, v->u.s.ptr, v->u.s.len);
        } else {
            *w = TAG_STR;
            codec_put32(w + 1, (uint32_t)v->u.s.len);
            w = copy_bytes(w + 5, v->u.s.ptr, v->u.s.len);
        }
        break;
    case BV_JSON: {
        const char *t = txt ? txt : "null";
        size_t tl = strlen(t);
        *w = TAG_JSON;
        codec_put32(w + 1, (uint32_t)tl);
        w = copy_bytes(w + 5, t, tl);
        break;
    }
    }
    return w;
}

/* The record is sized first (list/map values are rendered to text then), reserved once,
 * and written in place: no capacity check per piece. */
void evrec_encode(int64_t now, const char *event, size_t event_len, const bv_row *row, const evrec_pos *pos,
                  bv_buf *out) {
    if (event_len > EVREC_EVENT_MAX) event_len = EVREC_EVENT_MAX;   /* registry names are far shorter */
    size_t need = 12 + event_len + (pos ? 12 : 4);
    size_t njson = 0;
    for (size_t i = 0; i < row->n; i++) {
        const bv_field *f = &row->fields[i];
        need += value_size(&f->value);
        if (!pos) need += 2 + name_bytes(f);
        else need += field_ref(pos, i) == EVREC_REF_NAME ? 3 + name_bytes(f) : 1;
        njson += f->value.kind == BV_JSON;
    }
    /* list/map fields: compact JSON text, rendered before the write (rare on the push path) */
    char *small[EVREC_JSON_STACK] = { 0 };
    char **txt = njson <= EVREC_JSON_STACK ? small : calloc(njson, sizeof *txt);
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
    codec_put32(w + 8, (uint32_t)event_len | (pos ? EVREC_BY_POSITION : 0));
    w = copy_bytes(w + 12, event, event_len);
    if (pos) {
        codec_put32(w, pos->fingerprint);
        codec_put32(w + 4, pos->nschema);
        w += 8;
    }
    codec_put32(w, (uint32_t)row->n);
    w += 4;
    for (size_t i = 0, k = 0; i < row->n; i++) {
        const bv_field *f = &row->fields[i];
        unsigned ref = pos ? field_ref(pos, i) : EVREC_REF_NAME;
        if (pos) *w++ = (unsigned char)ref;
        if (ref == EVREC_REF_NAME) {
            size_t kl = name_bytes(f);
            codec_put16(w, (uint16_t)kl);
            w = copy_bytes(w + 2, f->name, kl);
        }
        const char *t = NULL;
        if (f->value.kind == BV_JSON) t = txt[k++];
        w = put_value(w, &f->value, t);
    }
    out->len = (size_t)((char *)w - out->data);
    out->data[out->len] = 0;
    for (size_t k = 0; k < njson; k++) free(txt[k]);
    if (txt != small) free(txt);
}

void evrec_release(evrec *r) {
    for (size_t i = 0; i < r->njson; i++) json_decref(r->json[i]);
    r->njson = 0;
}

/* One value at r into *v. Returns false when it is malformed. */
static inline bool get_value(codec_rd *r, evrec *out, bv_value *v) {
    uint8_t tag = codec_rd8(r);
    if (r->bad) return false;
    switch (tag) {
    case TAG_NULL: *v = bv_null(); return true;
    case TAG_FALSE: *v = bv_bool(false); return true;
    case TAG_TRUE: *v = bv_bool(true); return true;
    case TAG_I64: *v = bv_i64((int64_t)codec_rd64(r)); return !r->bad;
    case TAG_F64: *v = bv_f64(codec_bits_f64(codec_rd64(r))); return !r->bad;
    case TAG_STR8:
    case TAG_STR: {
        uint32_t sl = tag == TAG_STR8 ? codec_rd8(r) : codec_rd32(r);
        const char *s = (const char *)codec_take(r, sl);
        if (r->bad) return false;
        *v = bv_str(s, sl);
        return true;
    }
    case TAG_JSON: {
        uint32_t sl = codec_rd32(r);
        const char *s = (const char *)codec_take(r, sl);
        if (r->bad) return false;
        json_t *j = json_loadb(s, sl, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!j) return false;
        out->json[out->njson++] = j;
        v->kind = BV_JSON;
        v->u.j = j;
        return true;
    }
    default: return false;
    }
}

int evrec_decode(const void *p, size_t len, arena *a, evrec_schema_fn schema, void *ctx, evrec *out,
                 char *reason, size_t rlen) {
    codec_rd r = codec_rd_init(p, len);
    memset(out, 0, sizeof *out);
    out->now = (int64_t)codec_rd64(&r);
    uint32_t word = codec_rd32(&r);
    bool by_pos = (word & EVREC_BY_POSITION) != 0;
    uint32_t nl = word & ~EVREC_BY_POSITION;
    out->event = (const char *)codec_take(&r, nl);
    out->event_len = nl;
    evrec_schema sc = { 0 };
    uint32_t k = 0;                     /* fields of the schema the record was written for */
    if (by_pos) {
        uint32_t fp = codec_rd32(&r);
        k = codec_rd32(&r);
        if (r.bad) goto bad;
        int el = (int)(nl > 64 ? 64 : nl);
        if (!schema || !schema(ctx, out->event, nl, &sc)) {
            snprintf(reason, rlen, "event record of '%.*s' refers to fields by position, and no such event is "
                     "registered at its place in the log", el, out->event);
            return -1;
        }
        if (k > sc.n) {
            snprintf(reason, rlen, "event record of '%.*s' was written for a schema of %" PRIu32 " fields, the "
                     "registry's has %zu", el, out->event, k, sc.n);
            return -1;
        }
        if (sc.prefix_fp[k] != fp) {
            snprintf(reason, rlen, "event record of '%.*s' was written for another schema of it (fingerprint "
                     "%08" PRIx32 " of %" PRIu32 " fields, the registry's first %" PRIu32 " have %08" PRIx32 ")",
                     el, out->event, fp, k, k, sc.prefix_fp[k]);
            return -1;
        }
    }
    uint32_t nf = codec_rd32(&r);
    if (r.bad || nf > codec_left(&r) / 2) goto bad;  /* every field takes at least 2 bytes */
    out->row.fields = arena_alloc(a, (nf ? nf : 1) * sizeof(bv_field));
    out->row.cap = 0;                                   /* fixed storage */
    out->json = arena_alloc(a, (nf ? nf : 1) * sizeof(json_t *));
    for (uint32_t i = 0; i < nf; i++) {
        bv_field *f = &out->row.fields[i];
        unsigned ref = by_pos ? codec_rd8(&r) : EVREC_REF_NAME;
        if (ref != EVREC_REF_NAME) {
            if (ref >= k) {
                evrec_release(out);
                snprintf(reason, rlen, "event record of '%.*s': field %" PRIu32 " refers to schema position %u of %"
                         PRIu32, (int)(nl > 64 ? 64 : nl), out->event, i, ref, k);
                return -1;
            }
            f->name = sc.names[ref];
            f->name_len = sc.lens ? sc.lens[ref] : strlen(f->name);
        } else {
            uint16_t kl = codec_rd16(&r);
            f->name = (const char *)codec_take(&r, kl);
            f->name_len = kl;
        }
        if (r.bad || !get_value(&r, out, &f->value)) goto bad;
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
