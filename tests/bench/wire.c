/*
 * wire.c - encoders and reply classifiers for HTTP, framed TCP and RESP (see wire.h).
 *
 * TCP frames are written in place: 7 header bytes are reserved, the payload is
 * encoded after them and the length is patched, so no intermediate copy is made.
 * HTTP needs the body length before the body, so the body goes through scratch.
 */
#include "wire.h"

#include <hiredis/hiredis.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *wire_name(wire_kind k) {
    switch (k) {
    case WIRE_HTTP: return "http";
    case WIRE_TCP_JSON: return "tcp-json";
    case WIRE_TCP_MSGPACK: return "tcp-msgpack";
    case WIRE_REDIS: return "redis";
    }
    return "?";
}

int wire_kind_parse(const char *s, wire_kind *out) {
    static const wire_kind all[] = { WIRE_HTTP, WIRE_TCP_JSON, WIRE_TCP_MSGPACK, WIRE_REDIS };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(s, wire_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    return -1;
}

void wire_conn_init(const wire_ctx *w, wire_conn *c) {
    c->reader = w->kind == WIRE_REDIS ? redisReaderCreate() : NULL;
}

void wire_conn_free(wire_conn *c) {
    if (c->reader) redisReaderFree(c->reader);
    c->reader = NULL;
}

/* ---- framed TCP ------------------------------------------------------------------------ */

static size_t frame_begin(bbuf *out, uint16_t op, uint8_t ct) {
    char *h = bbuf_reserve(out, 7);
    h[4] = (char)(op >> 8);
    h[5] = (char)op;
    h[6] = (char)ct;
    size_t at = out->len;
    out->len += 7;
    return at;
}

static void frame_end(bbuf *out, size_t at) {
    uint32_t len = (uint32_t)(out->len - at - 4);
    unsigned char *h = (unsigned char *)out->data + at;
    h[0] = (unsigned char)(len >> 24);
    h[1] = (unsigned char)(len >> 16);
    h[2] = (unsigned char)(len >> 8);
    h[3] = (unsigned char)len;
}

void wire_tcp_frame(bbuf *out, uint16_t op, uint8_t ct, const void *payload, size_t len) {
    size_t at = frame_begin(out, op, ct);
    bbuf_put(out, payload, len);
    frame_end(out, at);
}

static void pk_cstr(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void json_envelope(const wire_ctx *w, const event *e, const char *body_key, bbuf *out) {
    bbuf_puts(out, "{\"event\":");
    bbuf_puts(out, w->pl->event_json);
    bbuf_putc(out, ',');
    bbuf_puts(out, body_key);
    bbuf_putc(out, ':');
    gen_body_json(w->pl, e, out);
    bbuf_putc(out, '}');
}

static void msgpack_envelope(const wire_ctx *w, const event *e, bbuf *out) {
    msgpack_packer pk;
    gen_packer_init(&pk, out);
    msgpack_pack_map(&pk, 2);
    pk_cstr(&pk, "event");
    pk_cstr(&pk, w->pl->event_name);
    pk_cstr(&pk, "body");
    gen_body_msgpack(w->pl, e, out);
}

static unsigned tcp_push(const wire_ctx *w, evgen *g, unsigned n, bbuf *out) {
    bool mp = w->kind == WIRE_TCP_MSGPACK;
    uint8_t ct = mp ? TCP_CT_MSGPACK : TCP_CT_JSON;
    if (n <= 1) {
        size_t at = frame_begin(out, TCP_OP_PUSH, ct);
        const event *e = evgen_next(g);
        if (mp) msgpack_envelope(w, e, out);
        else json_envelope(w, e, "\"body\"", out);
        frame_end(out, at);
        return 1;
    }
    size_t at = frame_begin(out, TCP_OP_PUSH_MANY, ct);
    if (mp) {
        msgpack_packer pk;
        gen_packer_init(&pk, out);
        msgpack_pack_map(&pk, 1);
        pk_cstr(&pk, "events");
        msgpack_pack_array(&pk, n);
        for (unsigned i = 0; i < n; i++) msgpack_envelope(w, evgen_next(g), out);
    } else {
        bbuf_puts(out, "{\"events\":[");
        for (unsigned i = 0; i < n; i++) {
            if (i) bbuf_putc(out, ',');
            json_envelope(w, evgen_next(g), "\"body\"", out);
        }
        bbuf_puts(out, "]}");
    }
    frame_end(out, at);
    return 1;
}

/* ---- HTTP ------------------------------------------------------------------------------ */

/* The request head is copied and the length formatted by hand: this runs once per request
 * on the client's hot path, and the client shares the machine's cores with the server. */
static void http_post(bbuf *out, const char *path, const bbuf *body) {
    static const char head1[] = "POST ";
    static const char head2[] = " HTTP/1.1\r\nHost: beava\r\nContent-Type: application/json\r\nContent-Length: ";
    size_t pl = strlen(path);
    char *d = bbuf_reserve(out, sizeof head1 + pl + sizeof head2 + 24 + body->len);
    char *q = d;
    memcpy(q, head1, sizeof head1 - 1);
    q += sizeof head1 - 1;
    memcpy(q, path, pl);
    q += pl;
    memcpy(q, head2, sizeof head2 - 1);
    q += sizeof head2 - 1;
    char digits[24];
    int nd = 0;
    size_t v = body->len;
    do digits[nd++] = (char)('0' + v % 10); while ((v /= 10) != 0);
    while (nd > 0) *q++ = digits[--nd];
    memcpy(q, "\r\n\r\n", 4);
    q += 4;
    memcpy(q, body->data, body->len);
    q += body->len;
    out->len += (size_t)(q - d);
    out->data[out->len] = '\0';
}

unsigned wire_push(const wire_ctx *w, evgen *g, unsigned n, int64_t now_ms, bbuf *out, bbuf *scratch) {
    switch (w->kind) {
    case WIRE_TCP_JSON:
    case WIRE_TCP_MSGPACK:
        return tcp_push(w, g, n, out);
    case WIRE_HTTP:
        bbuf_reset(scratch);
        json_envelope(w, evgen_next(g), "\"data\"", scratch);
        http_post(out, "/push", scratch);
        return 1;
    case WIRE_REDIS: {
        unsigned replies = 0;
        for (unsigned i = 0; i < (n ? n : 1); i++) replies += redis_plan_encode(w->plan, evgen_next(g), now_ms, out);
        return replies;
    }
    }
    return 0;
}

unsigned wire_get(const wire_ctx *w, uint64_t key, bbuf *out, bbuf *scratch) {
    char k[32];
    int kl = gen_key_text(key, k);
    if (w->kind == WIRE_TCP_MSGPACK) {
        size_t at = frame_begin(out, TCP_OP_GET, TCP_CT_MSGPACK);
        msgpack_packer pk;
        gen_packer_init(&pk, out);
        msgpack_pack_map(&pk, 2);
        pk_cstr(&pk, "table");
        pk_cstr(&pk, w->get_table);
        pk_cstr(&pk, "key");
        msgpack_pack_str(&pk, (size_t)kl);
        msgpack_pack_str_body(&pk, k, (size_t)kl);
        frame_end(out, at);
        return 1;
    }
    bbuf_reset(scratch);
    bbuf_printf(scratch, "{\"table\":\"%s\",\"key\":\"%.*s\"}", w->get_table, kl, k);
    if (w->kind == WIRE_TCP_JSON) wire_tcp_frame(out, TCP_OP_GET, TCP_CT_JSON, scratch->data, scratch->len);
    else http_post(out, "/get", scratch);
    return 1;
}

/* ---- replies --------------------------------------------------------------------------- */

static uint32_t count_acks(const char *p, size_t n) {
    static const char needle[] = "\"ack_lsn\"";
    uint32_t c = 0;
    const char *end = p + n;
    while (p < end) {
        const char *q = memmem(p, (size_t)(end - p), needle, sizeof needle - 1);
        if (!q) break;
        c++;
        p = q + sizeof needle - 1;
    }
    return c;
}

static int parse_tcp(const char *p, size_t n, size_t *used, wire_reply *rep) {
    if (n < 4) return 0;
    const unsigned char *h = (const unsigned char *)p;
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (len < 3) return -1;
    if (n < 4 + (size_t)len) return 0;
    uint16_t op = (uint16_t)(h[4] << 8 | h[5]);
    *used = 4 + (size_t)len;
    rep->ok = op != TCP_OP_ERROR;
    if (op == TCP_OP_PUSH_MANY) rep->acked = count_acks(p + 7, len - 3);
    else rep->acked = rep->ok ? 1 : 0;
    return 1;
}

static int parse_http(const char *p, size_t n, size_t *used, wire_reply *rep) {
    const char *he = n >= 4 ? memmem(p, n, "\r\n\r\n", 4) : NULL;
    if (!he) return n > 65536 ? -1 : 0;
    size_t hlen = (size_t)(he - p) + 4;
    if (hlen < 12 || memcmp(p, "HTTP/1.", 7) != 0) return -1;
    int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    size_t clen = 0;
    bool have_cl = false;
    for (const char *l = memchr(p, '\n', hlen); l && l < he; l = memchr(l + 1, '\n', (size_t)(he - l))) {
        if ((size_t)(he - l) > 16 && strncasecmp(l + 1, "content-length:", 15) == 0) {
            const char *v = l + 16;
            while (*v == ' ' || *v == '\t') v++;
            clen = 0;
            while (*v >= '0' && *v <= '9') clen = clen * 10 + (size_t)(*v++ - '0');
            have_cl = true;
            break;
        }
    }
    if (!have_cl) return -1;  /* beava always sends Content-Length */
    if (n < hlen + clen) return 0;
    *used = hlen + clen;
    /* every answer beava gives is a JSON object; a push is acknowledged only by one that
     * carries its ack_lsn (a number): a 200 with any other body counts as a failure */
    static const char ack[] = "{\"ack_lsn\":";
    const char *body = p + hlen;
    rep->ok = status == 200 && clen >= 2 && body[0] == '{' && body[clen - 1] == '}';
    rep->acked = rep->ok && clen > sizeof ack && memcmp(body, ack, sizeof ack - 1) == 0 &&
                 body[sizeof ack - 1] >= '0' && body[sizeof ack - 1] <= '9';
    return 1;
}

static int parse_resp(wire_conn *c, const char *p, size_t n, size_t *used, wire_reply *rep) {
    *used = 0;
    if (n) {
        if (redisReaderFeed(c->reader, p, n) != REDIS_OK) return -1;
        *used = n;
    }
    void *r = NULL;
    if (redisReaderGetReply(c->reader, &r) != REDIS_OK) return -1;
    if (!r) return 0;
    redisReply *rr = r;
    rep->ok = rr->type != REDIS_REPLY_ERROR;
    rep->acked = 0;
    freeReplyObject(r);
    return 1;
}

int wire_parse(const wire_ctx *w, wire_conn *c, const char *p, size_t n, size_t *used, wire_reply *rep) {
    *used = 0;
    switch (w->kind) {
    case WIRE_TCP_JSON:
    case WIRE_TCP_MSGPACK:
        return parse_tcp(p, n, used, rep);
    case WIRE_HTTP:
        return parse_http(p, n, used, rep);
    case WIRE_REDIS:
        return parse_resp(c, p, n, used, rep);
    }
    return -1;
}
