/*
 * httpc.c - minimal loopback HTTP client (see httpc.h).
 */
#include "httpc.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"

#define HTTPC_MAX_RESPONSE (1u << 20)
#define HTTPC_MAX_HEADERS (16u << 10)   /* status line and headers, on top of the body cap */

static int wait_fd(int fd, short events, int timeout_ms) {
    struct pollfd p = { .fd = fd, .events = events };
    int rc;
    do rc = poll(&p, 1, timeout_ms); while (rc < 0 && errno == EINTR);
    return rc;
}

int httpc_request(const char *addr, const char *method, const char *path, const char *json_body, int timeout_ms,
                  int *status, bv_buf *body, char *err, size_t errlen) {
    return httpc_request_ex(addr, method, path, json_body, timeout_ms, NULL, HTTPC_MAX_RESPONSE, status, body, err,
                            errlen);
}

int httpc_request_ex(const char *addr, const char *method, const char *path, const char *json_body, int timeout_ms,
                     const char *headers, size_t max_response, int *status, bv_buf *body, char *err, size_t errlen) {
    char host[CONFIG_ADDR_MAX];
    int port;
    int fd = -1, rc = -1;
    struct addrinfo hints, *res = NULL;
    bv_buf req, resp;
    bv_buf_init(&req);
    bv_buf_init(&resp);
    if (config_split_addr(addr, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "'%s' is not a host:port address", addr);
        goto out;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    if (getaddrinfo(host, portstr, &hints, &res) != 0) {
        snprintf(err, errlen, "cannot resolve %s", host);
        goto out;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(errno));
        goto out;
    }
    size_t blen = json_body ? strlen(json_body) : 0;
    bv_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, path, addr);
    if (headers) bv_buf_puts(&req, headers);
    if (json_body) bv_buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    bv_buf_puts(&req, "\r\n");
    if (json_body) bv_buf_put(&req, json_body, blen);
    for (size_t off = 0; off < req.len;) {
        if (wait_fd(fd, POLLOUT, timeout_ms) <= 0) { snprintf(err, errlen, "timeout writing to %s", addr); goto out; }
        ssize_t n = write(fd, req.data + off, req.len - off);
        if (n <= 0) { snprintf(err, errlen, "write to %s failed: %s", addr, strerror(errno)); goto out; }
        off += (size_t)n;
    }
    for (;;) {
        if (wait_fd(fd, POLLIN, timeout_ms) <= 0) { snprintf(err, errlen, "timeout reading from %s", addr); goto out; }
        char chunk[8192];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0) { snprintf(err, errlen, "read from %s failed: %s", addr, strerror(errno)); goto out; }
        if (n == 0) break;
        if (resp.len + (size_t)n > max_response + HTTPC_MAX_HEADERS) {
            snprintf(err, errlen, "response from %s larger than %zu bytes", addr, max_response);
            goto out;
        }
        bv_buf_put(&resp, chunk, (size_t)n);
    }
    if (resp.len < 12 || strncmp(resp.data, "HTTP/1.", 7) != 0) {
        snprintf(err, errlen, "not an HTTP response from %s", addr);
        goto out;
    }
    *status = atoi(resp.data + 9);
    char *hdr_end = memmem(resp.data, resp.len, "\r\n\r\n", 4);
    if (!hdr_end) { snprintf(err, errlen, "truncated HTTP response from %s", addr); goto out; }
    char *payload = hdr_end + 4;
    size_t plen = resp.len - (size_t)(payload - resp.data);
    /* chunked replies: join the chunks */
    if (strcasestr(resp.data, "transfer-encoding: chunked") && strcasestr(resp.data, "transfer-encoding: chunked") < hdr_end) {
        char *p = payload, *end = resp.data + resp.len;
        while (p < end) {
            size_t sz = strtoul(p, NULL, 16);
            char *nl = strstr(p, "\r\n");
            if (!nl || sz == 0) break;
            p = nl + 2;
            if ((size_t)(end - p) < sz) break;
            bv_buf_put(body, p, sz);
            p += sz + 2;
        }
    } else {
        bv_buf_put(body, payload, plen);
    }
    rc = 0;
out:
    if (res) freeaddrinfo(res);
    if (fd >= 0) close(fd);
    bv_buf_free(&req);
    bv_buf_free(&resp);
    return rc;
}
