/*
 * http.h - the HTTP listeners: the data plane (port 8080) and the admin sidecar (8090).
 *
 * Both are libmicrohttpd daemons on sockets this module binds itself, so port 0 works
 * and the real bound address is known (and logged by the caller). libmicrohttpd stays
 * inside http.c. The data plane routes reference-wire-api.md §2 onto the engine, plus
 * the site's static files and the /api aliases of DECISIONS §2; the admin sidecar
 * answers /health, /ready (503 until http_set_ready), /registry and /metrics.
 */
#ifndef BEAVA_HTTP_H
#define BEAVA_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "engine.h"
#include "log.h"

typedef struct http_server http_server;

/* Extra lines for admin /metrics from the process (WAL, snapshots); may be NULL. */
typedef void (*http_metrics_fn)(void *ctx, bv_buf *out);
/* Admin /ready while not ready: extra JSON members (",\"progress\":{...}") after "status". */
typedef void (*http_progress_fn)(void *ctx, bv_buf *out);
/* Admin POST /snapshot: take a snapshot now; writes the body, returns the status. */
typedef int (*http_snapshot_fn)(void *ctx, bv_buf *out);

typedef struct http_deps {
    engine *eng;
    const bv_config *cfg;
    const bv_log *log;
    atomic_bool *ready;                /* admin /ready: 200 once true */
    const char *admin_token;           /* NULL = no token required */
    http_metrics_fn extra_metrics;
    http_snapshot_fn snapshot;
    http_progress_fn progress;         /* may be NULL */
    void *ctx;
} http_deps;

typedef enum http_role { HTTP_DATA = 0, HTTP_ADMIN = 1 } http_role;

/* Bind `addr` ("host:port"), start serving. On success returns the server and writes
 * the bound "ip:port" into bound. On failure returns NULL with a message in err. */
http_server *http_start(http_role role, const char *addr, const http_deps *deps, int threads,
                        char *bound, size_t boundlen, char *err, size_t errlen);

/* Stop accepting, finish in-flight requests, free. */
void http_stop(http_server *s);

/* Bind a listening TCP socket for "host:port" (used by every listener). Returns the fd
 * or -1 with err set; bound receives the actual address. */
int http_bind_listen(const char *addr, char *bound, size_t boundlen, char *err, size_t errlen);

#endif
