/*
 * http.c — libcurl wrapper: buffered or streamed bodies, captured response headers.
 *
 * curl_global_init is the caller's job (main does it once, before any thread starts).
 */
#include "http.h"
#include "util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

struct http_io {
    const struct http_req *req;
    struct http_resp *resp;
    size_t cap;
    int overflow;
    int sink_failed;
};

static size_t on_body(char *data, size_t sz, size_t n, void *ud) {
    struct http_io *io = ud;
    size_t len = sz * n;
    if (io->req->sink) {
        /* the header callback has set io->resp->status by now */
        if (io->req->sink(io->req->sink_ctx, data, len) < 0) {
            io->sink_failed = 1;
            return 0;
        }
        io->resp->len += len;
        return len;
    }
    if (io->resp->len + len > io->cap) {
        io->overflow = 1;
        return 0;
    }
    char *nb = ctl_realloc(io->resp->body, io->resp->len + len + 1);
    memcpy(nb + io->resp->len, data, len);
    io->resp->len += len;
    nb[io->resp->len] = 0;
    io->resp->body = nb;
    return len;
}

static size_t on_header(char *data, size_t sz, size_t n, void *ud) {
    struct http_io *io = ud;
    size_t len = sz * n;
    if (len > 5 && !strncmp(data, "HTTP/", 5)) {
        /* a new response (redirect or 100-continue): start the header set again */
        json_object_clear(io->resp->headers);
        return len;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon) return len;
    size_t nl = (size_t)(colon - data);
    if (nl == 0 || nl > 200) return len;
    char name[201];
    for (size_t i = 0; i < nl; i++) name[i] = (char)tolower((unsigned char)data[i]);
    name[nl] = 0;
    const char *v = colon + 1;
    const char *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    json_object_set_new(io->resp->headers, name, json_stringn(v, (size_t)(end - v)));
    return len;
}

int http_do(const struct http_req *req, struct http_resp *resp, char *err) {
    memset(resp, 0, sizeof *resp);
    resp->headers = json_object();
    CURL *c = curl_easy_init();
    if (!c) return ctl_errf(err, "curl: cannot create a handle");
    struct http_io io = { .req = req, .resp = resp, .cap = req->max_body ? req->max_body : (16u << 20) };
    struct curl_slist *hl = NULL;
    for (const char *const *h = req->headers; h && *h; h++) hl = curl_slist_append(hl, *h);
    const char *method = req->method ? req->method : "GET";
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 10000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &io);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &io);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    if (req->follow_redirects) {
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    }
    if (req->unix_socket) curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, req->unix_socket);
    if (req->userpwd) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, req->userpwd);
    }
    if (!strcmp(method, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(req->body ? req->body_len : 0));
        hl = curl_slist_append(hl, "Expect:");
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (req->body) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)req->body_len);
        }
    }
    if (hl) curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hl);
    if (io.overflow) return ctl_errf(err, "%s %s: response body larger than %zu bytes", method, req->url, io.cap);
    if (io.sink_failed) return ctl_errf(err, "%s %s: transfer aborted by the receiver", method, req->url);
    if (rc != CURLE_OK) return ctl_errf(err, "%s %s: %s", method, req->url, curl_easy_strerror(rc));
    if (!resp->body && !req->sink) { resp->body = ctl_strdup(""); }
    return 0;
}

void http_resp_free(struct http_resp *resp) {
    free(resp->body);
    json_decref(resp->headers);
    memset(resp, 0, sizeof *resp);
}

int http_json(const char *method, const char *url, json_t *body, const char *const *headers, long timeout_ms,
              const char *unix_socket, long *status, json_t **out, char *err) {
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    const char *hdrs[16];
    size_t nh = 0;
    if (body) hdrs[nh++] = "Content-Type: application/json";
    for (const char *const *h = headers; h && *h && nh < 15; h++) hdrs[nh++] = *h;
    hdrs[nh] = NULL;
    struct http_req req = { .method = method,
                            .url = url,
                            .body = text,
                            .body_len = text ? strlen(text) : 0,
                            .headers = hdrs,
                            .timeout_ms = timeout_ms,
                            .unix_socket = unix_socket };
    struct http_resp resp;
    *out = NULL;
    int rc = http_do(&req, &resp, err);
    free(text);
    if (rc == 0) {
        *status = resp.status;
        *out = json_loadb(resp.body ? resp.body : "", resp.len, 0, NULL);
    }
    http_resp_free(&resp);
    return rc;
}
