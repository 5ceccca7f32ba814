/*
 * http.c - libmicrohttpd listeners for the data plane and the admin sidecar.
 *
 * Request lifecycle: the URI-log callback stores the raw request URI (query string
 * included, nothing percent-decoded) in a per-request context; the access handler
 * accumulates the body up to cfg->max_body_bytes (a larger Content-Length is answered
 * 413 http_protocol_error at once, a chunked body that grows past the cap likewise at
 * its end); the final call routes the request. Routing follows reference-wire-api.md
 * §2 exactly: path without query, trailing '/' stripped, prefix routes first, wrong
 * method 405, everything else 404 with the raw path.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listenfd.h"
#include "site.h"

/* On stop, in-flight requests get this long to finish (answers say Connection: close). */
#define HTTP_DRAIN_MS 3000

struct http_server {
    struct MHD_Daemon *daemon;
    http_role role;
    http_deps deps;
    int fd;
    bv_site *site;
    bv_site_allow allow;
    atomic_bool draining;   /* http_stop: no new connections, answers close theirs */
};

typedef struct req_ctx {
    char *raw_uri;        /* as sent, with query */
    bv_buf body;
    bool too_large;
    bool started;
} req_ctx;

/* ---- sockets ------------------------------------------------------------------------ */

int http_bind_listen(const char *addr, char *bound, size_t boundlen, char *err, size_t errlen) {
    if (listenfd_is_addr(addr)) return listenfd_adopt(addr, bound, boundlen, err, errlen);
    char host[CONFIG_ADDR_MAX];
    int port;
    if (config_split_addr(addr, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "'%s' is not a host:port address", addr);
        return -1;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    char ip[INET6_ADDRSTRLEN] = "?";
    int bport = 0;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        bport = ntohs(s4->sin_port);
        snprintf(bound, boundlen, "%s:%d", ip, bport);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        bport = ntohs(s6->sin6_port);
        snprintf(bound, boundlen, "[%s]:%d", ip, bport);
    }
    return fd;
}

/* ---- responses ---------------------------------------------------------------------- */

static enum MHD_Result send_buf(struct MHD_Connection *c, int status, const char *ctype, bv_buf *body,
                                const char *runtime, bool replay) {
    size_t len = body->len;
    char *data = bv_buf_steal(body);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    if (ctype) MHD_add_response_header(r, "Content-Type", ctype);
    if (runtime) MHD_add_response_header(r, "X-Runtime", runtime);
    if (replay) MHD_add_response_header(r, "X-Beava-Idempotent-Replay", "1");
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    const http_server *srv = ci ? ci->socket_context : NULL;
    if (srv && atomic_load(&srv->draining)) MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, bv_buf *body) {
    return send_buf(c, status, "application/json", body, "hand-rolled", false);
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *code, const char *extra_key,
                                  const char *extra_val) {
    bv_buf b;
    bv_buf_init(&b);
    jsonw w;
    jsonw_init(&w, &b);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "error");
    jsonw_obj_begin(&w);
    jsonw_key(&w, "code");
    jsonw_str(&w, code);
    if (extra_key) {
        jsonw_key(&w, extra_key);
        jsonw_str(&w, extra_val);
    }
    jsonw_obj_end(&w);
    jsonw_obj_end(&w);
    return send_json(c, status, &b);
}

static enum MHD_Result send_not_found(struct MHD_Connection *c, const char *raw) {
    return send_error(c, 404, "not_found", "path", raw);
}

static enum MHD_Result send_method_not_allowed(struct MHD_Connection *c, const char *method, const char *raw) {
    bv_buf b;
    bv_buf_init(&b);
    jsonw w;
    jsonw_init(&w, &b);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "error");
    jsonw_obj_begin(&w);
    jsonw_key(&w, "code");
    jsonw_str(&w, "method_not_allowed");
    jsonw_key(&w, "method");
    jsonw_str(&w, method);
    jsonw_key(&w, "path");
    jsonw_str(&w, raw);
    jsonw_obj_end(&w);
    jsonw_obj_end(&w);
    return send_json(c, 405, &b);
}

/* ---- data-plane handlers ------------------------------------------------------------ */

static bool is_json_content_type(struct MHD_Connection *c) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct) return false;
    while (*ct == ' ' || *ct == '\t') ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    return n == strlen("application/json") && strncasecmp(ct, "application/json", n) == 0;
}

static bool token_ok(struct MHD_Connection *c, const char *token) {
    if (!token) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0) return false;
    const char *got = h + 7;
    size_t gl = strlen(got), tl = strlen(token);
    unsigned char diff = (unsigned char)(gl != tl);
    for (size_t i = 0; i < tl; i++) diff |= (unsigned char)(token[i] ^ (i < gl ? got[i] : 0));
    return diff == 0;
}

static enum MHD_Result send_unauthorized(struct MHD_Connection *c) {
    return send_error(c, 401, "unauthorized", "reason",
                      "this route requires Authorization: Bearer <token> (security.admin_token_file)");
}

static enum MHD_Result do_register(http_server *s, struct MHD_Connection *c, req_ctx *rc, const char *raw) {
    if (!token_ok(c, s->deps.admin_token)) return send_unauthorized(c);
    if (!is_json_content_type(c)) {
        bv_buf b;
        bv_buf_init(&b);
        jsonw w;
        jsonw_init(&w, &b);
        jsonw_obj_begin(&w);
        jsonw_key(&w, "error");
        jsonw_obj_begin(&w);
        jsonw_key(&w, "code");
        jsonw_str(&w, "unsupported_media_type");
        jsonw_key(&w, "path");
        jsonw_str(&w, raw);
        jsonw_key(&w, "reason");
        jsonw_str(&w, "expected application/json");
        jsonw_obj_end(&w);
        jsonw_key(&w, "registry_version");
        jsonw_u64(&w, engine_registry_version(s->deps.eng));
        jsonw_obj_end(&w);
        return send_json(c, 415, &b);
    }
    bv_buf out;
    bv_buf_init(&out);
    int status = engine_register(s->deps.eng, rc->body.data ? rc->body.data : "", rc->body.len, &out);
    return send_json(c, status, &out);
}

static enum MHD_Result push_and_reply(http_server *s, struct MHD_Connection *c, const char *event, size_t elen,
                                      const json_t *data, bool sync) {
    push_result res;
    engine_push(s->deps.eng, event, elen, data, sync || s->deps.cfg->durability == DURABILITY_SYNC, &res);
    bv_buf out;
    bv_buf_init(&out);
    int status = engine_push_body(&res, TRANSPORT_HTTP, &out);
    return send_buf(c, status, "application/json", &out, "hand-rolled", res.replay);
}

/* POST /push and /push-sync: {"event":NAME,"data":{...}} */
static enum MHD_Result do_push_envelope(http_server *s, struct MHD_Connection *c, req_ctx *rc, bool sync) {
    json_error_t jerr;
    json_t *root = json_loadb(rc->body.data ? rc->body.data : "", rc->body.len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!root) return send_error(c, 400, "invalid_json_body", "reason", jerr.text);
    json_t *ev = json_is_object(root) ? json_object_get(root, "event") : NULL;
    if (!json_is_string(ev)) {
        json_decref(root);
        return send_error(c, 400, "missing_event_name_in_body", "reason", "the body needs a string member `event`");
    }
    json_t *data = json_object_get(root, "data");
    json_t *empty = NULL;
    if (!data) data = empty = json_object();
    enum MHD_Result r = push_and_reply(s, c, json_string_value(ev), json_string_length(ev), data, sync);
    json_decref(empty);
    json_decref(root);
    return r;
}

/* POST /push/<event>: the bare event object. */
static enum MHD_Result do_push_bare(http_server *s, struct MHD_Connection *c, req_ctx *rc, const char *event,
                                    bool sync) {
    json_error_t jerr;
    json_t *data = json_loadb(rc->body.data ? rc->body.data : "", rc->body.len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!data) {
        char reason[300];
        snprintf(reason, sizeof reason, "event data must be a JSON object: %s", jerr.text);
        return send_error(c, 400, "invalid_event", "reason", reason);
    }
    enum MHD_Result r = push_and_reply(s, c, event, strlen(event), data, sync);
    json_decref(data);
    return r;
}

static json_t *parse_body(req_ctx *rc, char *err, size_t errlen) {
    json_error_t jerr;
    if (rc->body.len == 0) {
        snprintf(err, errlen, "EOF while parsing a value at line 1 column 0");
        return NULL;
    }
    json_t *j = json_loadb(rc->body.data, rc->body.len, JSON_DECODE_ANY, &jerr);
    if (!j) snprintf(err, errlen, "%s at line %d column %d", jerr.text, jerr.line, jerr.column);
    return j;
}

static enum MHD_Result do_get(http_server *s, struct MHD_Connection *c, req_ctx *rc, const char *only_table) {
    char perr[256];
    json_t *req = parse_body(rc, perr, sizeof perr);
    if (only_table && req) {
        /* /api/get: only allow-listed tables, else the route does not exist */
        json_t *t = json_is_object(req) ? json_object_get(req, "table") : NULL;
        if (!json_is_string(t) || !bv_site_table_allowed(&s->allow, json_string_value(t))) {
            json_decref(req);
            return send_not_found(c, only_table);
        }
    }
    bv_buf out;
    bv_buf_init(&out);
    int status = engine_get(s->deps.eng, TRANSPORT_HTTP, req, req ? NULL : perr, &out);
    json_decref(req);
    return send_json(c, status, &out);
}

static enum MHD_Result do_batch_get(http_server *s, struct MHD_Connection *c, req_ctx *rc) {
    char perr[256];
    json_t *req = parse_body(rc, perr, sizeof perr);
    bv_buf out;
    bv_buf_init(&out);
    int status = engine_batch_get(s->deps.eng, req, req ? NULL : perr, &out);
    json_decref(req);
    return send_json(c, status, &out);
}

static bool starts_with(const char *s, const char *prefix, const char **rest) {
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) != 0) return false;
    *rest = s + n;
    return true;
}

static enum MHD_Result serve_static(http_server *s, struct MHD_Connection *c, const char *raw) {
    bv_site_file f;
    int st = bv_site_resolve(s->site, raw, &f);
    if (st != 200) {
        bv_buf b;
        bv_buf_init(&b);
        jsonw w;
        jsonw_init(&w, &b);
        jsonw_obj_begin(&w);
        jsonw_key(&w, "error");
        jsonw_obj_begin(&w);
        jsonw_key(&w, "code");
        jsonw_str(&w, st == 404 ? "not_found" : "bad_path");
        jsonw_key(&w, "path");
        jsonw_str(&w, raw);
        jsonw_obj_end(&w);
        jsonw_obj_end(&w);
        return send_json(c, st, &b);
    }
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    struct MHD_Response *r;
    int status = 200;
    if (bv_site_not_modified(inm, f.etag)) {
        close(f.fd);
        status = 304;
        r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else {
        r = MHD_create_response_from_fd((size_t)f.size, f.fd);   /* the response closes fd */
        if (!r) close(f.fd);
    }
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", f.content_type);
    MHD_add_response_header(r, "ETag", f.etag);
    MHD_add_response_header(r, "Cache-Control", f.cache_control);
    MHD_add_response_header(r, "X-Content-Type-Options", BV_SITE_NOSNIFF);
    MHD_add_response_header(r, "Content-Security-Policy", BV_SITE_CSP);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result route_data(http_server *s, struct MHD_Connection *c, req_ctx *rc, const char *method) {
    const char *raw = rc->raw_uri ? rc->raw_uri : "/";
    /* path = raw without query, trailing '/' stripped */
    char path[2048];
    size_t pl = strcspn(raw, "?");
    if (pl >= sizeof path) return send_error(c, 414, "http_protocol_error", "reason", "request path too long");
    memcpy(path, raw, pl);
    path[pl] = 0;
    while (pl > 0 && path[pl - 1] == '/') path[--pl] = 0;
    bool post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0;
    const char *rest;

    if (starts_with(path, "/push/", &rest) && *rest) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return do_push_bare(s, c, rc, rest, false);
    }
    if (starts_with(path, "/push-sync/", &rest) && *rest) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return do_push_bare(s, c, rc, rest, true);
    }
    if (starts_with(path, "/push-batch/", &rest) && *rest) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return do_push_bare(s, c, rc, rest, false);
    }
    if (strcmp(path, "/push") == 0 || strcmp(path, "/push-sync") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return do_push_envelope(s, c, rc, path[5] == '-');
    }
    if (strcmp(path, "/ping") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        bv_buf out;
        bv_buf_init(&out);
        return send_json(c, engine_ping(s->deps.eng, &out), &out);
    }
    if (strcmp(path, "/reset") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        if (!token_ok(c, s->deps.admin_token)) return send_unauthorized(c);
        bv_buf out;
        bv_buf_init(&out);
        return send_json(c, engine_reset(s->deps.eng, &out), &out);
    }
    if (starts_with(path, "/get/", &rest) && strchr(rest, '/') && rest[0] != '/') {
        if (!get) return send_method_not_allowed(c, method, raw);
        bv_buf out;
        bv_buf_init(&out);
        return send_json(c, engine_get_legacy(s->deps.eng, rest, &out), &out);
    }
    if (strcmp(path, "/get") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return do_get(s, c, rc, NULL);
    }
    if (strcmp(path, "/batch_get") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return do_batch_get(s, c, rc);
    }
    if (strcmp(path, "/register") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return do_register(s, c, rc, raw);
    }
    if (strcmp(path, "/health") == 0 || strcmp(path, "/ready") == 0) {
        if (!get) return send_method_not_allowed(c, method, raw);
        bv_buf out;
        bv_buf_init(&out);
        bool ready = path[1] == 'r';
        bv_buf_puts(&out, ready ? "{\"status\":\"ready\"}" : "{\"status\":\"ok\"}");
        return send_json(c, 200, &out);
    }
    if (strcmp(path, "/registry") == 0) {
        if (!get) return send_method_not_allowed(c, method, raw);
        return send_not_found(c, raw);
    }
    /* the website's aliases (DECISIONS §2): only allow-listed tables and events */
    char event[BV_SITE_MAX_NAME + 1];
    switch (bv_site_api_route(raw, event)) {
    case BV_SITE_API_GET:
        if (s->allow.n_public_tables == 0) return send_not_found(c, raw);
        if (!post) return send_method_not_allowed(c, method, raw);
        return do_get(s, c, rc, raw);
    case BV_SITE_API_PUSH:
        if (!bv_site_event_allowed(&s->allow, event)) return send_not_found(c, raw);
        if (!post) return send_method_not_allowed(c, method, raw);
        return do_push_bare(s, c, rc, event, false);
    case BV_SITE_API_NOT_FOUND:
        return send_not_found(c, raw);
    case BV_SITE_API_NONE:
        break;
    }
    if (s->site && (get || strcmp(method, "HEAD") == 0)) return serve_static(s, c, raw);
    return send_not_found(c, raw);
}

/* ---- admin handlers ----------------------------------------------------------------- */

static enum MHD_Result send_empty(struct MHD_Connection *c, int status) {
    bv_buf b;
    bv_buf_init(&b);
    return send_buf(c, status, NULL, &b, "beava-admin", false);
}

static enum MHD_Result route_admin(http_server *s, struct MHD_Connection *c, req_ctx *rc, const char *method) {
    (void)rc;
    const char *raw = rc->raw_uri ? rc->raw_uri : "/";
    char path[512];
    size_t pl = strcspn(raw, "?");
    if (pl >= sizeof path) return send_empty(c, 404);
    memcpy(path, raw, pl);
    path[pl] = 0;
    while (pl > 1 && path[pl - 1] == '/') path[--pl] = 0;
    bool get = strcmp(method, "GET") == 0;
    bv_buf out;
    bv_buf_init(&out);
    if (strcmp(path, "/snapshot") == 0) {
        if (strcmp(method, "POST") != 0) return send_empty(c, 405);
        if (!token_ok(c, s->deps.admin_token)) return send_unauthorized(c);
        if (!s->deps.snapshot) {
            bv_buf_puts(&out, "{\"error\":{\"code\":\"snapshots_disabled\",\"reason\":\"the server runs with --memory-only\"}}");
            return send_buf(c, 409, "application/json", &out, "beava-admin", false);
        }
        int st = s->deps.snapshot(s->deps.ctx, &out);
        return send_buf(c, st, "application/json", &out, "beava-admin", false);
    }
    if (s->deps.cfg->test_mode && strncmp(path, "/debug/", 7) == 0 && strcmp(method, "POST") == 0) {
        /* test-mode hooks: which shard owns a key; pause/resume a shard (overload tests) */
        json_t *req = json_loadb(rc->body.data ? rc->body.data : "", rc->body.len, 0, NULL);
        int st = 400;
        if (req && strcmp(path, "/debug/shard-of") == 0 && json_is_string(json_object_get(req, "table")) &&
            json_is_string(json_object_get(req, "key"))) {
            unsigned sh = engine_shard_of(s->deps.eng, json_string_value(json_object_get(req, "table")),
                                          json_string_value(json_object_get(req, "key")));
            bv_buf_printf(&out, "{\"shard\":%u}", sh);
            st = 200;
        } else if (req && strcmp(path, "/debug/pause-shard") == 0 && json_is_integer(json_object_get(req, "shard"))) {
            engine_pause_shard(s->deps.eng, (unsigned)json_integer_value(json_object_get(req, "shard")),
                               json_is_true(json_object_get(req, "paused")));
            bv_buf_puts(&out, "{\"ok\":true}");
            st = 200;
        } else {
            bv_buf_puts(&out, "{\"error\":{\"code\":\"bad_request\"}}");
        }
        json_decref(req);
        return send_buf(c, st, "application/json", &out, "beava-admin", false);
    }
    bool known = strcmp(path, "/health") == 0 || strcmp(path, "/ready") == 0 || strcmp(path, "/registry") == 0 ||
                 strcmp(path, "/metrics") == 0;
    if (!known) return send_empty(c, 404);
    if (!get) return send_empty(c, 405);
    if (strcmp(path, "/health") == 0) {
        bv_buf_puts(&out, "{\"status\":\"ok\"}");
        return send_buf(c, 200, "application/json", &out, "beava-admin", false);
    }
    if (strcmp(path, "/ready") == 0) {
        bool ready = s->deps.ready ? atomic_load(s->deps.ready) : true;
        bv_buf_puts(&out, ready ? "{\"status\":\"ready\"" : "{\"status\":\"recovering\"");
        if (!ready && s->deps.progress) s->deps.progress(s->deps.ctx, &out);
        bv_buf_putc(&out, '}');
        return send_buf(c, ready ? 200 : 503, "application/json", &out, "beava-admin", false);
    }
    bool ready = s->deps.ready ? atomic_load(s->deps.ready) : true;
    if (strcmp(path, "/registry") == 0) {
        if (!ready) {
            bv_buf_puts(&out, "{\"status\":\"recovering\"}");
            return send_buf(c, 503, "application/json", &out, "beava-admin", false);
        }
        engine_registry_info(s->deps.eng, &out);
        return send_buf(c, 200, "application/json", &out, "beava-admin", false);
    }
    /* /metrics */
    if (ready) engine_metrics(s->deps.eng, &out);
    bv_buf_printf(&out, "# HELP beava_ready 1 once recovery is complete.\n# TYPE beava_ready gauge\nbeava_ready %d\n",
                  ready ? 1 : 0);
    if (s->deps.extra_metrics) s->deps.extra_metrics(s->deps.ctx, &out);
    return send_buf(c, 200, "text/plain; version=0.0.4; charset=utf-8", &out, "beava-admin", false);
}

/* ---- libmicrohttpd glue ------------------------------------------------------------- */

static void *uri_log(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)cls;
    (void)c;
    req_ctx *rc = calloc(1, sizeof *rc);
    if (!rc) return NULL;
    rc->raw_uri = strdup(uri ? uri : "/");
    bv_buf_init(&rc->body);
    return rc;
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    return strlen(s);
}

static void request_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    req_ctx *rc = *con_cls;
    if (!rc) return;
    bv_buf_free(&rc->body);
    free(rc->raw_uri);
    free(rc);
    *con_cls = NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)url;
    (void)version;
    http_server *s = cls;
    req_ctx *rc = *con_cls;
    if (!rc) return MHD_NO;
    uint64_t cap = s->deps.cfg->max_body_bytes;
    if (!rc->started) {
        rc->started = true;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > cap) {
            char reason[128];
            snprintf(reason, sizeof reason, "request body of %s bytes exceeds the limit of %llu bytes", cl,
                     (unsigned long long)cap);
            return send_error(c, 413, "http_protocol_error", "reason", reason);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (rc->body.len + *upload_data_size > cap) rc->too_large = true;
        if (!rc->too_large) bv_buf_put(&rc->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rc->too_large) {
        char reason[128];
        snprintf(reason, sizeof reason, "request body exceeds the limit of %llu bytes", (unsigned long long)cap);
        return send_error(c, 413, "http_protocol_error", "reason", reason);
    }
    return s->role == HTTP_DATA ? route_data(s, c, rc, method) : route_admin(s, c, rc, method);
}

/* Every connection knows its server (send_buf reads the draining flag). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    (void)c;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) *socket_context = cls;
}

http_server *http_start(http_role role, const char *addr, const http_deps *deps, int threads, char *bound,
                        size_t boundlen, char *err, size_t errlen) {
    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->role = role;
    s->deps = *deps;
    s->allow.public_tables = deps->cfg->public_tables;
    s->allow.n_public_tables = deps->cfg->npublic_tables;
    s->allow.public_events = deps->cfg->public_events;
    s->allow.n_public_events = deps->cfg->npublic_events;
    s->fd = http_bind_listen(addr, bound, boundlen, err, errlen);
    if (s->fd < 0) goto fail;
    if (role == HTTP_DATA && deps->cfg->site_dir[0]) {
        bv_err serr;
        if (bv_site_open(deps->cfg->site_dir, 0, &s->site, &serr) != 0) {
            snprintf(err, errlen, "site.dir %s: %s", deps->cfg->site_dir, serr.reason);
            goto fail;
        }
    }
    /* The data plane runs one thread per connection: a push may wait for its shards and,
     * in sync mode, for the group-commit fsync, and such waits must not stall other
     * clients (many waiters share one fsync). The admin sidecar uses a small pool. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_SUPPRESS_DATE_NO_CLOCK | MHD_USE_ITC;
    if (threads < 1) threads = 1;
    if (role == HTTP_DATA) flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
    else flags |= MHD_USE_EPOLL_LINUX_ONLY;
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                                 MHD_OPTION_LISTEN_SOCKET, s->fd,
                                 MHD_OPTION_THREAD_POOL_SIZE, role == HTTP_DATA ? 0u : (unsigned)threads,
                                 MHD_OPTION_URI_LOG_CALLBACK, uri_log, NULL,
                                 MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL,
                                 MHD_OPTION_NOTIFY_COMPLETED, request_done, NULL,
                                 MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096,
                                 MHD_OPTION_THREAD_STACK_SIZE, (size_t)(2u << 20),
                                 MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "libmicrohttpd could not start on %s", bound);
        goto fail;
    }
    return s;
fail:
    if (s->fd >= 0) close(s->fd);
    bv_site_close(s->site);
    free(s);
    return NULL;
}

void http_stop(http_server *s) {
    if (!s) return;
    if (s->daemon) {
        /* Stop accepting (the listening socket may be shared with the next server), let the
         * requests in flight answer, then stop. */
        atomic_store(&s->draining, true);
        MHD_quiesce_daemon(s->daemon);
        for (int waited = 0; waited < HTTP_DRAIN_MS; waited += 10) {
            const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
            if (!di || di->num_connections == 0) break;
            usleep(10000);
        }
        MHD_stop_daemon(s->daemon);
    }
    if (s->fd >= 0) close(s->fd);
    bv_site_close(s->site);
    free(s);
}
