/*
 * beava_api.c — thin JSON-over-HTTP calls to beava (see the contract in beava_api.h).
 */
#include "beava_api.h"
#include "http.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void auth_headers(const struct beava_ep *ep, char *buf, size_t len, const char **hdrs) {
    hdrs[0] = NULL;
    if (ep->token && *ep->token) {
        snprintf(buf, len, "Authorization: Bearer %s", ep->token);
        hdrs[0] = buf;
        hdrs[1] = NULL;
    }
}

int beava_ready(const struct beava_ep *ep, char *why, size_t whylen) {
    return beava_ready_progress(ep, why, whylen, NULL);
}

int beava_ready_progress(const struct beava_ep *ep, char *why, size_t whylen, json_t **progress) {
    char url[300], err[CTL_ERR_LEN];
    snprintf(url, sizeof url, "http://%s/ready", ep->admin_addr);
    struct http_req req = { .url = url, .timeout_ms = 2000, .max_body = 65536 };
    struct http_resp resp;
    int rc = http_do(&req, &resp, err);
    int ready = 0;
    if (progress) *progress = NULL;
    if (rc < 0) {
        snprintf(why, whylen, "admin /ready: %s", err);
    } else if (resp.status != 200) {
        snprintf(why, whylen, "admin /ready: %ld %.200s", resp.status, resp.body ? resp.body : "");
        json_t *b = resp.body ? json_loads(resp.body, 0, NULL) : NULL;
        if (progress && json_is_object(json_object_get(b, "progress")))
            *progress = json_incref(json_object_get(b, "progress"));
        json_decref(b);
    } else {
        ready = 1;
    }
    http_resp_free(&resp);
    return ready;
}

int beava_ping(const struct beava_ep *ep, int64_t *version, char *err) {
    char url[300];
    snprintf(url, sizeof url, "http://%s/ping", ep->http_addr);
    long status = 0;
    json_t *out = NULL;
    json_t *body = json_object();
    int rc = http_json("POST", url, body, NULL, 2000, NULL, &status, &out, err);
    json_decref(body);
    if (rc == 0 && (status != 200 || !json_is_true(json_object_get(out, "pong"))))
        rc = ctl_errf(err, "data plane /ping: status %ld", status);
    if (rc == 0 && version) *version = json_integer_value(json_object_get(out, "registry_version"));
    json_decref(out);
    return rc;
}

int beava_register(const struct beava_ep *ep, json_t *nodes, bool force, bool dry_run, long *status, json_t **out,
                   char *err) {
    return beava_register_mode(ep, nodes, NULL, force, dry_run, status, out, err);
}

int beava_register_mode(const struct beava_ep *ep, json_t *nodes, const char *mode, bool force, bool dry_run,
                        long *status, json_t **out, char *err) {
    char url[300], auth[600];
    const char *hdrs[2];
    snprintf(url, sizeof url, "http://%s/register", ep->http_addr);
    auth_headers(ep, auth, sizeof auth, hdrs);
    json_t *body = json_pack("{s:O,s:b,s:b}", "nodes", nodes, "force", force, "dry_run", dry_run);
    if (mode) json_object_set_new(body, "mode", json_string(mode));
    int rc = http_json("POST", url, body, hdrs, 60000, NULL, status, out, err);
    json_decref(body);
    return rc;
}

int beava_registry(const struct beava_ep *ep, int64_t *version, int64_t *count, char *err) {
    char url[300];
    snprintf(url, sizeof url, "http://%s/registry", ep->admin_addr);
    long status = 0;
    json_t *out = NULL;
    int rc = http_json("GET", url, NULL, NULL, 5000, NULL, &status, &out, err);
    if (rc == 0 && (status != 200 || !json_is_integer(json_object_get(out, "version"))))
        rc = ctl_errf(err, "admin /registry: status %ld", status);
    if (rc == 0) {
        *version = json_integer_value(json_object_get(out, "version"));
        *count = json_integer_value(json_object_get(out, "node_count"));
    }
    json_decref(out);
    return rc;
}

int beava_get(const struct beava_ep *ep, const char *table, const char *key, long *status, json_t **out, char *err) {
    char url[300];
    snprintf(url, sizeof url, "http://%s/get", ep->http_addr);
    json_t *body = json_pack("{s:s,s:s}", "table", table, "key", key);
    int rc = http_json("POST", url, body, NULL, 5000, NULL, status, out, err);
    json_decref(body);
    return rc;
}

int beava_cluster(const struct beava_ep *ep, long *status, json_t **out, char *err) {
    char url[300];
    snprintf(url, sizeof url, "http://%s/cluster", ep->admin_addr);
    return http_json("GET", url, NULL, NULL, 5000, NULL, status, out, err);
}

int beava_snapshot(const struct beava_ep *ep, json_t **out, char *err) {
    char url[300], auth[600];
    const char *hdrs[2];
    snprintf(url, sizeof url, "http://%s/snapshot", ep->admin_addr);
    auth_headers(ep, auth, sizeof auth, hdrs);
    long status = 0;
    json_t *body = json_object();
    int rc = http_json("POST", url, body, hdrs, 300000, NULL, &status, out, err);
    json_decref(body);
    if (rc == 0 && (status != 200 || !json_is_string(json_object_get(*out, "path")))) {
        char *b = *out ? json_dumps(*out, JSON_COMPACT) : NULL;
        rc = ctl_errf(err, "admin POST /snapshot: status %ld %s", status, b ? b : "");
        free(b);
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}
