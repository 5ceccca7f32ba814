/*
 * http.h - the HTTP listeners: the data plane (port 8080) and the admin sidecar (8090).
 *
 * Both are libmicrohttpd daemons on sockets this module binds itself, so port 0 works
 * and the real bound address is known (and logged by the caller). libmicrohttpd stays
 * inside http.c. The data plane routes the wire API (README "Wire protocol") onto the
 * engine, plus the site's static files and the /api aliases; the admin sidecar answers
 * /health, /ready (503 until the ready flag is set), /registry, /metrics and /snapshot.
 *
 * I/O model: a pool of epoll threads (http.threads) serves every connection; no thread
 * is tied to a connection and none waits for a shard or an fsync. A push the engine
 * cannot answer at once (engine_push_submit returned false) is suspended; the engine's
 * completion hands the answer back with http_request_complete(), which resumes the
 * connection (see http.c for the per-request state machine). Every listener enforces http.max_connections (and the per-address
 * limit), a deadline for the request line and headers, one for the body, an idle timeout
 * for keep-alive connections, and takes body buffers from the shared membudget.
 */
#ifndef BEAVA_HTTP_H
#define BEAVA_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "engine.h"
#include "log.h"
#include "membudget.h"

typedef struct http_server http_server;

/* One request waiting for its answer (opaque outside http.c). */
typedef struct http_request http_request;

/* Extra lines for admin /metrics from the process (WAL, snapshots); may be NULL. */
typedef void (*http_metrics_fn)(void *ctx, bv_buf *out);
/* Admin /ready while not ready: extra JSON members (",\"progress\":{...}") after "status". */
typedef void (*http_progress_fn)(void *ctx, bv_buf *out);
/* Admin POST /snapshot: take a snapshot now; writes the body, returns the status. */
typedef int (*http_snapshot_fn)(void *ctx, bv_buf *out);

/* Admin /cluster/<...> (cluster mode: membership changes, peer snapshots): method, the
 * path after "/cluster/", the query string ("" if none) and the body; writes the answer and
 * its content type, returns the status. Behind the admin token like POST /snapshot. */
typedef int (*http_cluster_fn)(void *ctx, const char *method, const char *sub, const char *query, const char *body,
                               size_t len, bv_buf *out, const char **ctype);

/* Connection counters of the data-plane listener, rendered by the admin /metrics. */
typedef struct http_stats {
    _Atomic uint64_t open;             /* connections open now */
    _Atomic uint64_t accepted;         /* connections accepted since start */
    _Atomic uint64_t refused_cap;      /* closed at accept: http.max_connections reached */
    _Atomic uint64_t refused_per_ip;   /* closed at accept: http.max_connections_per_ip */
    _Atomic uint64_t timeout_header;   /* closed: request line + headers not in by the deadline */
    _Atomic uint64_t timeout_body;     /* closed: body not in by the deadline */
    _Atomic uint64_t timeout_idle;     /* closed: keep-alive connection idle too long */
    _Atomic uint64_t framing_errors;   /* 400: ambiguous Content-Length / Transfer-Encoding */
    _Atomic uint64_t overloaded;       /* 503: body refused by the receive budget */
    _Atomic uint64_t suspended;        /* requests waiting for their answer now */
} http_stats;

typedef struct http_deps {
    engine *eng;
    const bv_config *cfg;
    const bv_log *log;
    atomic_bool *ready;                /* admin /ready: 200 once true */
    const char *admin_token;           /* NULL = no token required */
    http_metrics_fn extra_metrics;
    http_snapshot_fn snapshot;
    http_progress_fn progress;         /* may be NULL */
    http_snapshot_fn cluster_status;   /* admin GET /cluster (cluster mode); NULL = 404 */
    http_cluster_fn cluster_admin;     /* admin /cluster/<...> (cluster mode); NULL = 404 */
    void *ctx;
    membudget *body_budget;            /* shared receive budget; NULL = a private one */
    http_stats *data_stats;            /* the data listener counts here, admin renders it */
} http_deps;

typedef enum http_role { HTTP_DATA = 0, HTTP_ADMIN = 1 } http_role;

/* Bind `addr` ("host:port"), start serving with `threads` I/O threads (0 = number of
 * cores). The data role first raises the process's descriptor soft limit to its hard
 * limit and logs both (server.fd_limit). On success returns the server and writes the
 * bound "ip:port" into bound. On failure returns NULL with a message in err. */
http_server *http_start(http_role role, const char *addr, const http_deps *deps, int threads,
                        char *bound, size_t boundlen, char *err, size_t errlen);

/* Stop accepting, answer every suspended request, finish in-flight requests, free. */
void http_stop(http_server *s);

/* Hand the answer of a suspended request back to its connection, from any thread:
 * status and body (taken over: *body is left empty), `replay` adds the idempotent-replay
 * header. The connection is resumed and the answer sent by its I/O thread; req must not
 * be touched after this call. Each suspended request is completed exactly once. */
void http_request_complete(http_request *req, int status, bv_buf *body, bool replay);

/* Bind a listening TCP socket for "host:port" (used by every listener). Returns the fd
 * or -1 with err set; bound receives the actual address. */
int http_bind_listen(const char *addr, char *bound, size_t boundlen, char *err, size_t errlen);

#endif
