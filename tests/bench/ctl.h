/*
 * ctl.h - control-plane HTTP calls to beava (register, metrics, batch_get) through
 * libcurl. Not on the measured path: one blocking request at a time.
 */
#ifndef BENCH_CTL_H
#define BENCH_CTL_H

#include <stddef.h>

#include "buf.h"

typedef struct ctl {
    void *curl;
} ctl;

/* Returns 0, -1 when libcurl cannot start. curl_global_init is the caller's job. */
int ctl_init(ctl *c);
void ctl_free(ctl *c);
/* method "GET" or "POST" to http://addr path. body may be NULL. Fills *status and the
 * response body (reset first). Returns 0, or -1 on a transport error (message in resp). */
int ctl_request(ctl *c, const char *method, const char *addr, const char *path, const char *ctype,
                const char *body, size_t blen, long *status, bbuf *resp);
/* Value of a Prometheus metric line "name value" from admin /metrics; -1 on failure. */
double ctl_metric(ctl *c, const char *admin_addr, const char *name);

#endif
