/*
 * httpc.h - a minimal blocking HTTP/1.1 client over loopback, for `beava probe` and
 * `beava quickstart` (the server talks to itself the way a user's curl would).
 * One request per connection, Connection: close, response capped at 1 MiB (httpc_request_ex:
 * any cap; the cluster fetches peers' partition snapshots with it).
 */
#ifndef BEAVA_HTTPC_H
#define BEAVA_HTTPC_H

#include <stddef.h>
#include "jsonw.h"

/* Send METHOD path to "host:port" with an optional JSON body; fills status and body.
 * Returns 0, or -1 with a message in err (connection refused, timeout, bad reply). */
int httpc_request(const char *addr, const char *method, const char *path, const char *json_body,
                  int timeout_ms, int *status, bv_buf *body, char *err, size_t errlen);

/* httpc_request with extra request header lines (each ending "\r\n"; NULL = none) and a
 * response cap of max_response bytes (a larger response is an error). */
int httpc_request_ex(const char *addr, const char *method, const char *path, const char *json_body, int timeout_ms,
                     const char *headers, size_t max_response, int *status, bv_buf *body, char *err, size_t errlen);

#endif
