/*
 * http.h — the one HTTP client of beava-control (libcurl, blocking, one easy handle per
 * call). Used for the beava data/admin ports, the OCI registry and the CLI's unix socket.
 *
 * Contract: http_do fills resp (caller frees with http_resp_free, also after an error).
 * A transport error (connect refused, timeout, body over the cap) returns -1 with err;
 * any HTTP status is success at this level — callers decide what a status means.
 */
#ifndef CTL_HTTP_H
#define CTL_HTTP_H

#include <jansson.h>
#include <stddef.h>

/* Streaming sink for large bodies: return 0 to continue, -1 to abort the transfer. */
typedef int (*http_sink_fn)(void *ctx, const char *data, size_t len);

struct http_req {
    const char *method; /* "GET", "POST", "HEAD"; default GET */
    const char *url;
    const char *body; /* may be NULL */
    size_t body_len;
    const char *const *headers; /* NULL-terminated "Name: value" list, may be NULL */
    long timeout_ms;            /* whole transfer; default 10 s */
    size_t max_body;            /* cap on a buffered body; default 16 MiB */
    const char *unix_socket;    /* connect through this unix socket */
    const char *userpwd;        /* "user:password" for basic auth */
    http_sink_fn sink;          /* stream the body here instead of buffering */
    void *sink_ctx;
    int follow_redirects;
};

struct http_resp {
    long status;
    char *body; /* NUL-terminated (buffered mode) */
    size_t len;
    json_t *headers; /* lower-cased name -> value (last wins) */
};

int http_do(const struct http_req *req, struct http_resp *resp, char *err);
void http_resp_free(struct http_resp *resp);

/* Convenience: request with a JSON body (may be NULL) and parse a JSON answer.
 * *out is NULL when the body is not JSON. */
int http_json(const char *method, const char *url, json_t *body, const char *const *headers, long timeout_ms,
              const char *unix_socket, long *status, json_t **out, char *err);

#endif
