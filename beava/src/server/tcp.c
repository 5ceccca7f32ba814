/*
 * tcp.c - framed TCP listener (see tcp.h).
 *
 * Each connection owns a read buffer (at most one frame beyond what it has parsed:
 * frames are handled as soon as they are complete) and a write buffer. A connection
 * whose write buffer exceeds TCP_WBUF_HIGH stops being read until the peer drains it,
 * so a client that pipelines without reading cannot grow server memory without bound.
 */
#include "tcp.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "mpjson.h"

#define TCP_WBUF_HIGH (16u << 20)
#define TCP_READ_CHUNK 65536

typedef struct tcp_conn {
    int fd;
    bv_buf rbuf;
    size_t rpos;           /* parsed up to here */
    bv_buf wbuf;
    size_t wpos;           /* written up to here */
    bool close_after_write;
    bool reading;          /* EPOLLIN armed */
    bool listed;           /* in the worker's connection list */
} tcp_conn;

typedef struct tcp_worker {
    tcp_server *srv;
    pthread_t thread;
    int epfd;
    bool started;
} tcp_worker;

struct tcp_server {
    engine *eng;
    const bv_config *cfg;
    const bv_log *log;
    int listen_fd;
    int stop_fd;           /* eventfd */
    int nworkers;
    tcp_worker *workers;
};

/* ---- frames ------------------------------------------------------------------------- */

static void put_frame_header(bv_buf *out, uint16_t op, uint8_t ct, size_t payload_len) {
    uint32_t len = (uint32_t)(payload_len + 3);
    unsigned char h[7] = { (unsigned char)(len >> 24), (unsigned char)(len >> 16), (unsigned char)(len >> 8),
                           (unsigned char)len, (unsigned char)(op >> 8), (unsigned char)op, ct };
    bv_buf_put(out, h, sizeof h);
}

static void put_frame(bv_buf *out, uint16_t op, uint8_t ct, const char *payload, size_t len) {
    put_frame_header(out, op, ct, len);
    bv_buf_put(out, payload, len);
}

static void put_json_frame(bv_buf *out, uint16_t op, bv_buf *body) {
    put_frame(out, op, TCP_CT_JSON, body->data ? body->data : "", body->len);
}

/* A reply whose content type mirrors the request (GET family with msgpack). */
static void put_reply(bv_buf *out, uint16_t op, uint8_t ct, bv_buf *json_body) {
    if (ct != TCP_CT_MSGPACK) {
        put_json_frame(out, op, json_body);
        return;
    }
    json_t *j = json_loadb(json_body->data, json_body->len, JSON_DECODE_ANY, NULL);
    bv_buf mp;
    bv_buf_init(&mp);
    if (j) mpjson_encode(j, &mp);
    json_decref(j);
    put_frame(out, op, TCP_CT_MSGPACK, mp.data ? mp.data : "", mp.len);
    bv_buf_free(&mp);
}

static void put_error(bv_buf *out, const char *code, const char *message, const char *extra_key, long long extra) {
    bv_buf b;
    bv_buf_init(&b);
    jsonw w;
    jsonw_init(&w, &b);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "error");
    jsonw_obj_begin(&w);
    jsonw_key(&w, "code");
    jsonw_str(&w, code);
    if (message) {
        jsonw_key(&w, "message");
        jsonw_str(&w, message);
    }
    if (extra_key) {
        jsonw_key(&w, extra_key);
        jsonw_i64(&w, extra);
    }
    jsonw_obj_end(&w);
    jsonw_obj_end(&w);
    put_json_frame(out, TCP_OP_ERROR, &b);
    bv_buf_free(&b);
}

static void put_unsupported(bv_buf *out) {
    static const char body[] = "{\"code\":\"unsupported\"}";
    put_frame(out, TCP_OP_ERROR, TCP_CT_JSON, body, sizeof body - 1);
}

static json_t *decode_payload(uint8_t ct, const char *p, size_t n, char *err, size_t errlen) {
    if (ct == TCP_CT_MSGPACK) return mpjson_decode(p, n, err, errlen);
    json_error_t je;
    json_t *j = json_loadb(p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j) snprintf(err, errlen, "%.96s at line %d column %d", je.text, je.line, je.column);
    return j;
}

/* The push envelope: JSON object with string `event` and a `body`; msgpack: a map of
 * exactly those two keys. Returns false when unusable. */
static bool push_envelope(uint8_t ct, const json_t *env, const json_t **event, const json_t **body) {
    if (!json_is_object(env)) return false;
    *event = json_object_get(env, "event");
    *body = json_object_get(env, "body");
    if (!json_is_string(*event) || !*body) return false;
    if (ct == TCP_CT_MSGPACK && json_object_size(env) != 2) return false;
    return true;
}

static void do_push(engine *eng, const bv_config *cfg, uint16_t op, uint8_t ct, const char *p, size_t n, bv_buf *out) {
    if (ct != TCP_CT_JSON && ct != TCP_CT_MSGPACK) {
        char msg[64];
        snprintf(msg, sizeof msg, "unsupported content_type: 0x%02x", ct);
        put_error(out, "unsupported_content_type", msg, NULL, 0);
        return;
    }
    char err[256];
    json_t *env = decode_payload(ct, p, n, err, sizeof err);
    const json_t *event, *body;
    if (!env || !push_envelope(ct, env, &event, &body)) {
        json_decref(env);
        put_unsupported(out);
        return;
    }
    push_result res;
    bool sync = op == TCP_OP_PUSH_SYNC || cfg->durability == DURABILITY_SYNC;
    engine_push(eng, json_string_value(event), json_string_length(event), body, sync, &res);
    bv_buf b;
    bv_buf_init(&b);
    int st = engine_push_body(&res, TRANSPORT_TCP, &b);
    put_json_frame(out, st == 200 ? op : TCP_OP_ERROR, &b);
    bv_buf_free(&b);
    json_decref(env);
}

static void do_push_many(engine *eng, const bv_config *cfg, uint8_t ct, const char *p, size_t plen, bv_buf *out) {
    if (ct != TCP_CT_JSON && ct != TCP_CT_MSGPACK) {
        char msg[64];
        snprintf(msg, sizeof msg, "unsupported content_type: 0x%02x", ct);
        put_error(out, "unsupported_content_type", msg, NULL, 0);
        return;
    }
    char err[256];
    json_t *root = decode_payload(ct, p, plen, err, sizeof err);
    json_t *events = json_is_object(root) ? json_object_get(root, "events") : NULL;
    if (!json_is_array(events)) {
        json_decref(root);
        put_unsupported(out);
        return;
    }
    if (json_array_size(events) > TCP_PUSH_MANY_MAX) {
        json_decref(root);
        put_error(out, "batch_too_large", "OP_PUSH_MANY takes at most 10000 events", "limit", TCP_PUSH_MANY_MAX);
        return;
    }
    size_t n = json_array_size(events);
    const char **names = calloc(n ? n : 1, sizeof *names);
    size_t *lens = calloc(n ? n : 1, sizeof *lens);
    const json_t **bodies = calloc(n ? n : 1, sizeof *bodies);
    push_result *res = calloc(n ? n : 1, sizeof *res);
    if (!names || !lens || !bodies || !res) abort();
    for (size_t i = 0; i < n; i++) {
        const json_t *event, *body;
        if (!push_envelope(TCP_CT_JSON, json_array_get(events, i), &event, &body)) continue;
        names[i] = json_string_value(event);
        lens[i] = json_string_length(event);
        bodies[i] = body;
    }
    engine_push_batch(eng, n, names, lens, bodies, cfg->durability == DURABILITY_SYNC, res);
    bv_buf b;
    bv_buf_init(&b);
    bv_buf_puts(&b, "{\"acks\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) bv_buf_putc(&b, ',');
        if (!names[i]) bv_buf_puts(&b, "{\"code\":\"unsupported\"}");
        else engine_push_body(&res[i], TRANSPORT_TCP, &b);
    }
    free(names);
    free(lens);
    free(bodies);
    free(res);
    bv_buf_puts(&b, "]}");
    put_json_frame(out, TCP_OP_PUSH_MANY, &b);
    bv_buf_free(&b);
    json_decref(root);
}

bool tcp_handle_frame(engine *eng, const bv_config *cfg, uint16_t op, uint8_t ct, const char *p, size_t n,
                      bv_buf *out) {
    bv_buf b;
    bv_buf_init(&b);
    char err[256], msg[128];
    switch (op) {
    case TCP_OP_PING:
        bv_buf_printf(&b, "{\"registry_version\":%llu,\"server_version\":\"0.0.6\"}",
                      (unsigned long long)engine_registry_version(eng));
        put_json_frame(out, TCP_OP_PING, &b);
        break;
    case TCP_OP_REGISTER: {
        if (ct != TCP_CT_JSON) {
            snprintf(msg, sizeof msg, "unsupported content_type for register: 0x%02x", ct);
            put_error(out, "unsupported_content_type", msg, NULL, 0);
            break;
        }
        int st = engine_register(eng, p, n, &b);
        put_json_frame(out, st == 200 ? TCP_OP_REGISTER : TCP_OP_ERROR, &b);
        break;
    }
    case TCP_OP_PUSH:
    case TCP_OP_PUSH_SYNC:
        do_push(eng, cfg, op, ct, p, n, out);
        break;
    case TCP_OP_PUSH_MANY:
        do_push_many(eng, cfg, ct, p, n, out);
        break;
    case TCP_OP_GET:
    case TCP_OP_MGET:
    case TCP_OP_GET_MULTI:
    case TCP_OP_BATCH_GET:
    case TCP_OP_RESET: {
        if (ct != TCP_CT_JSON && ct != TCP_CT_MSGPACK) {
            snprintf(msg, sizeof msg, "unsupported content_type: 0x%02x", ct);
            put_error(out, "unsupported_content_type", msg, NULL, 0);
            break;
        }
        int st;
        if (op == TCP_OP_RESET) {
            st = engine_reset(eng, &b);
            put_json_frame(out, st == 200 ? TCP_OP_GET_RESPONSE : TCP_OP_ERROR, &b);
            break;
        }
        json_t *req = decode_payload(ct, p, n, err, sizeof err);
        if (op == TCP_OP_GET) st = engine_get(eng, TRANSPORT_TCP, req, req ? NULL : err, &b);
        else if (op == TCP_OP_BATCH_GET) st = engine_batch_get(eng, req, req ? NULL : err, &b);
        else st = engine_get_multi(eng, req, op == TCP_OP_MGET, &b);
        json_decref(req);
        if (st != 200) put_json_frame(out, TCP_OP_ERROR, &b);
        else if (op == TCP_OP_BATCH_GET) put_json_frame(out, TCP_OP_GET_RESPONSE, &b);
        else put_reply(out, TCP_OP_GET_RESPONSE, ct, &b);
        break;
    }
    default:
        snprintf(msg, sizeof msg, "opcode 0x%04x is not recognised by this server", op);
        put_error(out, "unknown_op", msg, "op", op);
        break;
    }
    bv_buf_free(&b);
    return true;
}

/* ---- connections -------------------------------------------------------------------- */

static void conn_free(tcp_conn *c) {
    close(c->fd);
    bv_buf_free(&c->rbuf);
    bv_buf_free(&c->wbuf);
    free(c);
}

#define TCP_PUSH_RUN_MAX 1024

/* A pipelined client sends many OP_PUSH frames back to back: take the run of complete
 * push frames at the read position (up to TCP_PUSH_RUN_MAX) and hand them to the engine
 * as one batch (one lock hold, one shard wake-up), then answer each frame in order
 * exactly as if it had been handled alone. Returns the number of frames consumed. */
static size_t push_run(tcp_server *s, tcp_conn *c, uint32_t maxlen) {
    json_t *envs[TCP_PUSH_RUN_MAX];
    const char *names[TCP_PUSH_RUN_MAX];
    size_t lens[TCP_PUSH_RUN_MAX];
    const json_t *bodies[TCP_PUSH_RUN_MAX];
    size_t n = 0, pos = c->rpos;
    while (n < TCP_PUSH_RUN_MAX && c->rbuf.len - pos >= 7) {
        const unsigned char *h = (const unsigned char *)c->rbuf.data + pos;
        uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (len > maxlen || len < 3 || c->rbuf.len - pos < 4 + (size_t)len) break;
        uint16_t op = (uint16_t)(h[4] << 8 | h[5]);
        uint8_t ct = h[6];
        if (op != TCP_OP_PUSH || (ct != TCP_CT_JSON && ct != TCP_CT_MSGPACK)) break;
        char err[128];
        json_t *env = decode_payload(ct, (const char *)h + 7, len - 3, err, sizeof err);
        const json_t *event, *body;
        envs[n] = env;
        names[n] = NULL;
        if (env && push_envelope(ct, env, &event, &body)) {
            names[n] = json_string_value(event);
            lens[n] = json_string_length(event);
            bodies[n] = body;
        }
        n++;
        pos += 4 + (size_t)len;
    }
    if (n == 0) return 0;
    push_result *res = calloc(n, sizeof *res);
    if (!res) abort();
    engine_push_batch(s->eng, n, names, lens, bodies, s->cfg->durability == DURABILITY_SYNC, res);
    bv_buf b;
    bv_buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        if (!names[i]) {
            put_unsupported(&c->wbuf);
        } else {
            b.len = 0;
            int st = engine_push_body(&res[i], TRANSPORT_TCP, &b);
            put_json_frame(&c->wbuf, st == 200 ? TCP_OP_PUSH : TCP_OP_ERROR, &b);
        }
        json_decref(envs[i]);
    }
    bv_buf_free(&b);
    free(res);
    c->rpos = pos;
    return n;
}

/* Parse and answer every complete frame. Returns false to close now. */
static bool conn_process(tcp_server *s, tcp_conn *c) {
    uint32_t maxlen = s->cfg->tcp_max_frame_bytes + 3u;
    while (!c->close_after_write && c->rbuf.len - c->rpos >= 4) {
        const unsigned char *h = (const unsigned char *)c->rbuf.data + c->rpos;
        uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (len > maxlen) {
            char msg[128];
            snprintf(msg, sizeof msg, "declared frame length %u exceeds limit %u", len, maxlen);
            bv_buf b;
            bv_buf_init(&b);
            bv_buf_printf(&b, "{\"error\":{\"code\":\"frame_too_large\",\"declared\":%u,\"limit\":%u,\"message\":\"%s\"}}",
                          len, maxlen, msg);
            put_json_frame(&c->wbuf, TCP_OP_ERROR, &b);
            bv_buf_free(&b);
            c->close_after_write = true;
            break;
        }
        if (len < 3) return false;
        if (c->rbuf.len - c->rpos < 4 + (size_t)len) break;
        uint16_t op = (uint16_t)(h[4] << 8 | h[5]);
        uint8_t ct = h[6];
        if (op == TCP_OP_PUSH && (ct == TCP_CT_JSON || ct == TCP_CT_MSGPACK)) {
            size_t used = push_run(s, c, maxlen);
            if (used) continue;
        }
        tcp_handle_frame(s->eng, s->cfg, op, ct, (const char *)h + 7, len - 3, &c->wbuf);
        c->rpos += 4 + (size_t)len;
    }
    if (c->rpos == c->rbuf.len) {
        c->rbuf.len = 0;
        c->rpos = 0;
    } else if (c->rpos > (1u << 20)) {
        memmove(c->rbuf.data, c->rbuf.data + c->rpos, c->rbuf.len - c->rpos);
        c->rbuf.len -= c->rpos;
        c->rpos = 0;
    }
    return true;
}

/* Write what we can. Returns false on a fatal write error. */
static bool conn_flush(tcp_conn *c) {
    while (c->wpos < c->wbuf.len) {
        ssize_t n = send(c->fd, c->wbuf.data + c->wpos, c->wbuf.len - c->wpos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            if (errno == EINTR) continue;
            return false;
        }
        c->wpos += (size_t)n;
    }
    c->wbuf.len = 0;
    c->wpos = 0;
    return true;
}

static void conn_rearm(tcp_worker *w, tcp_conn *c) {
    bool want_write = c->wpos < c->wbuf.len;
    c->reading = !c->close_after_write && c->wbuf.len - c->wpos < TCP_WBUF_HIGH;
    struct epoll_event ev = { .events = (c->reading ? EPOLLIN : 0) | (want_write ? EPOLLOUT : 0) | EPOLLRDHUP,
                              .data.ptr = c };
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Returns false when the connection is finished. */
static bool conn_event(tcp_worker *w, tcp_conn *c, uint32_t events) {
    tcp_server *s = w->srv;
    if (events & (EPOLLERR | EPOLLHUP)) return false;
    if ((events & EPOLLIN) && c->reading) {
        for (;;) {
            bv_buf_reserve(&c->rbuf, TCP_READ_CHUNK);
            ssize_t n = recv(c->fd, c->rbuf.data + c->rbuf.len, TCP_READ_CHUNK, 0);
            if (n > 0) {
                c->rbuf.len += (size_t)n;
                if (!conn_process(s, c)) return false;
                if (c->close_after_write || c->wbuf.len - c->wpos >= TCP_WBUF_HIGH) break;
                continue;
            }
            if (n == 0) {
                conn_flush(c);
                return false;
            }
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return false;
        }
    }
    if (!conn_flush(c)) return false;
    if (c->close_after_write && c->wpos == c->wbuf.len) return false;
    /* frames left unprocessed while we were throttled */
    if (c->wbuf.len == 0 && c->rbuf.len > c->rpos && !conn_process(s, c)) return false;
    conn_rearm(w, c);
    return true;
}

static void accept_all(tcp_worker *w) {
    tcp_server *s = w->srv;
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        tcp_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->reading = true;
        bv_buf_init(&c->rbuf);
        bv_buf_init(&c->wbuf);
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) conn_free(c);
    }
}

typedef struct conn_list {
    tcp_conn **v;
    size_t n, cap;
} conn_list;

static void *worker_main(void *arg) {
    tcp_worker *w = arg;
    tcp_server *s = w->srv;
    struct epoll_event evs[128];
    conn_list all = { 0 };
    for (;;) {
        int n = epoll_wait(w->epfd, evs, 128, 1000);
        if (n < 0 && errno != EINTR) break;
        bool stop = false;
        for (int i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == &s->listen_fd) {
                accept_all(w);
            } else if (ptr == &s->stop_fd) {
                stop = true;
            } else {
                tcp_conn *c = ptr;
                if (!conn_event(w, c, evs[i].events)) {
                    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
                    for (size_t k = 0; k < all.n; k++)
                        if (all.v[k] == c) { all.v[k] = all.v[--all.n]; break; }
                    conn_free(c);
                    continue;
                }
                if (!c->listed) {
                    c->listed = true;
                    if (all.n == all.cap) {
                        all.cap = all.cap ? all.cap * 2 : 64;
                        tcp_conn **v = realloc(all.v, all.cap * sizeof *v);
                        if (!v) abort();
                        all.v = v;
                    }
                    all.v[all.n++] = c;
                }
            }
        }
        if (stop) break;
    }
    for (size_t k = 0; k < all.n; k++) conn_free(all.v[k]);
    free(all.v);
    return NULL;
}

tcp_server *tcp_start(const char *addr, engine *eng, const bv_config *cfg, const bv_log *log, int threads,
                      char *bound, size_t boundlen, char *err, size_t errlen) {
    tcp_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->eng = eng;
    s->cfg = cfg;
    s->log = log;
    s->stop_fd = -1;
    s->listen_fd = http_bind_listen(addr, bound, boundlen, err, errlen);
    if (s->listen_fd < 0) goto fail;
    int fl = fcntl(s->listen_fd, F_GETFL);
    if (fl < 0 || fcntl(s->listen_fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "cannot make the TCP listener non-blocking: %s", strerror(errno));
        goto fail;
    }
    s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->stop_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    s->nworkers = threads < 1 ? 1 : threads;
    s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
    if (!s->workers) goto fail;
    for (int i = 0; i < s->nworkers; i++) {
        tcp_worker *w = &s->workers[i];
        w->srv = s;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event lev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &s->listen_fd };
        struct epoll_event sev = { .events = EPOLLIN, .data.ptr = &s->stop_fd };
        if (w->epfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->listen_fd, &lev) != 0 ||
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->stop_fd, &sev) != 0) {
            snprintf(err, errlen, "epoll: %s", strerror(errno));
            goto fail;
        }
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, errlen, "cannot start a TCP I/O thread");
            goto fail;
        }
        w->started = true;
    }
    return s;
fail:
    tcp_stop(s);
    return NULL;
}

void tcp_stop(tcp_server *s) {
    if (!s) return;
    if (s->stop_fd >= 0) {
        uint64_t one = 1;
        ssize_t wr = write(s->stop_fd, &one, sizeof one);
        (void)wr;
    }
    for (int i = 0; s->workers && i < s->nworkers; i++) {
        if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
        if (s->workers[i].epfd > 0) close(s->workers[i].epfd);
    }
    free(s->workers);
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->stop_fd >= 0) close(s->stop_fd);
    free(s);
}
