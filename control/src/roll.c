/*
 * roll.c — the rolling cluster deploy of the CLI (contract in roll.h): signed calls to each
 * host's control port, one host at a time, stopping at the first failure.
 */
#include "roll.h"
#include "http.h"
#include "trigger.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROLL_CALL_TIMEOUT_MS 15000 /* one signed call to a host's control port */
#define ROLL_POLL_US 500000        /* between two looks at a host's deploy */
#define ROLL_SECRET_MAX 4096

struct host {
    const char *name, *url;
    char *secret;
    size_t secret_len;
};

static void hosts_free(struct host *h, size_t n) {
    for (size_t i = 0; i < n; i++) free(h[i].secret);
    free(h);
}

/* The hosts of cluster.hosts with their secrets read (a host's secret_file, else the
 * daemon's trigger.secret_file). */
static int load_hosts(const struct ctl_config *cfg, struct host **out, size_t *n, char *err) {
    *n = json_array_size(cfg->cluster_hosts);
    *out = NULL;
    if (*n == 0) return ctl_errf(err, "cluster.hosts is empty: list the hosts' control ports in roll order");
    struct host *h = ctl_calloc(*n, sizeof *h);
    for (size_t i = 0; i < *n; i++) {
        json_t *e = json_array_get(cfg->cluster_hosts, i);
        h[i].name = json_string_value(json_object_get(e, "name"));
        h[i].url = json_string_value(json_object_get(e, "url"));
        const char *sf = json_string_value(json_object_get(e, "secret_file"));
        if (!sf || !*sf) sf = cfg->trigger_secret_file;
        char e2[CTL_ERR_LEN];
        if (ctl_read_file(sf, ROLL_SECRET_MAX, &h[i].secret, &h[i].secret_len, e2) < 0) {
            hosts_free(h, *n);
            return ctl_errf(err, "host %s: %s", json_string_value(json_object_get(e, "name")), e2);
        }
        while (h[i].secret_len &&
               (h[i].secret[h[i].secret_len - 1] == '\n' || h[i].secret[h[i].secret_len - 1] == '\r'))
            h[i].secret[--h[i].secret_len] = 0;
    }
    *out = h;
    return 0;
}

/* A signed request to a host's control port (the trigger API's headers). Returns the HTTP
 * status, or -1 with err when the host cannot be reached. *out: the JSON answer or NULL. */
static long signed_call(const struct host *h, const char *method, const char *path, json_t *body, const char *delivery,
                        json_t **out, char *err) {
    char *raw = body ? json_dumps(body, JSON_COMPACT) : NULL;
    char ts[32], sig[80], hts[64], hsig[128], hdel[200];
    snprintf(ts, sizeof ts, "%lld", (long long)(ctl_now_ms() / 1000));
    const struct trigger_req r = { .method = method,
                                   .path = path,
                                   .timestamp = ts,
                                   .delivery = delivery,
                                   .body = raw ? raw : "",
                                   .body_len = raw ? strlen(raw) : 0 };
    trigger_sign(h->secret, h->secret_len, &r, sig);
    snprintf(hts, sizeof hts, "%s: %s", TRIGGER_HDR_TS, ts);
    snprintf(hsig, sizeof hsig, "%s: %s", TRIGGER_HDR_SIG, sig);
    snprintf(hdel, sizeof hdel, "%s: %s", TRIGGER_HDR_DELIVERY, delivery ? delivery : "");
    const char *hdrs[] = { hts, hsig, "Content-Type: application/json", delivery ? hdel : NULL, NULL };
    size_t ul = strlen(h->url);
    while (ul && h->url[ul - 1] == '/') ul--;
    char *url = ctl_asprintf("%.*s%s", (int)ul, h->url, path);
    struct http_req req = { .method = method,
                            .url = url,
                            .body = raw,
                            .body_len = raw ? strlen(raw) : 0,
                            .headers = hdrs,
                            .timeout_ms = ROLL_CALL_TIMEOUT_MS };
    struct http_resp resp;
    long st = -1;
    *out = NULL;
    if (http_do(&req, &resp, err) == 0) {
        st = resp.status;
        if (resp.body) *out = json_loads(resp.body, 0, NULL);
    }
    http_resp_free(&resp);
    free(url);
    free(raw);
    return st;
}

static const char *jstr(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static const char *error_message(json_t *out) {
    const char *m = json_string_value(json_object_get(json_object_get(out, "error"), "message"));
    return m ? m : "";
}

/* GET /v1/status of one host: *st the document (caller frees). Returns the HTTP status or -1. */
static long host_status(const struct host *h, json_t **st, char *err) {
    long s = signed_call(h, "GET", "/v1/status", NULL, NULL, st, err);
    if (s >= 0 && s != 200) ctl_errf(err, "GET /v1/status: %ld %s", s, error_message(*st));
    return s;
}

/* The digest the request names (IMAGE@sha256:...), or NULL for a tag. */
static const char *asked_digest(const char *image) {
    const char *at = strstr(image, "@sha256:");
    return at ? at + 1 : NULL;
}

/* Follow one host's deploy to its end; *final gets the deploy record (caller frees). */
static int follow_host(const struct ctl_config *cfg, const struct host *h, const struct roll_opts *o, const char *id,
                       json_t **final, char *err) {
    char path[200];
    snprintf(path, sizeof path, "/v1/deploys/%s", id);
    size_t printed = 0;
    int64_t end = ctl_mono_ms() + cfg->cluster_host_timeout_s * 1000;
    *final = NULL;
    for (;;) {
        json_t *d = NULL;
        long st = signed_call(h, "GET", path, NULL, NULL, &d, err);
        if (st == 200) {
            json_t *steps = json_object_get(d, "steps");
            for (; printed < json_array_size(steps); printed++)
                if (!o->json && o->print_step) o->print_step(json_array_get(steps, printed));
            fflush(stdout);
            const char *status = jstr(d, "status");
            if (*status && strcmp(status, "queued") && strcmp(status, "running")) {
                *final = d;
                return 0;
            }
        }
        json_decref(d);
        if (st >= 0 && st != 200) return ctl_errf(err, "GET %s: status %ld", path, st);
        /* an unreachable daemon mid-deploy (restarting) is waited for up to the timeout */
        if (ctl_mono_ms() >= end)
            return ctl_errf(err, "deploy %s did not end within %llds (cluster.host_timeout_s)%s%s", id,
                            (long long)cfg->cluster_host_timeout_s, st < 0 ? ": " : "", st < 0 ? err : "");
        usleep(ROLL_POLL_US);
    }
}

__attribute__((format(printf, 2, 3))) static void say(const struct roll_opts *o, const char *fmt, ...) {
    if (o->json) return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

int roll_deploy(const struct ctl_config *cfg, const struct roll_opts *o) {
    char err[CTL_ERR_LEN];
    struct host *h = NULL;
    size_t n = 0;
    if (load_hosts(cfg, &h, &n, err) < 0) {
        fprintf(stderr, "beava-control: %s\n", err);
        return 2;
    }
    json_t *report = json_array();
    int rc = 0;
    const char *want = asked_digest(o->image);
    /* 1. every host answers and runs (or is empty) before any is touched */
    json_t **before = ctl_calloc(n, sizeof *before);
    for (size_t i = 0; i < n && rc == 0; i++) {
        long s = host_status(&h[i], &before[i], err);
        const char *state = jstr(before[i], "state");
        if (s != 200) {
            fprintf(stderr, "beava-control: host %s (%s): %s; no host was touched\n", h[i].name, h[i].url, err);
            rc = s < 0 ? 3 : 1;
        } else if (strcmp(state, "running") && strcmp(state, "empty")) {
            fprintf(stderr,
                    "beava-control: host %s is %s, not running; no host was touched (a roll takes one "
                    "host down at a time)\n",
                    h[i].name, state);
            rc = 1;
        }
    }
    const char *stopped_at = NULL;
    /* 2. one host at a time */
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *cur = json_object_get(before[i], "current");
        json_t *entry = json_pack("{s:s,s:s}", "host", h[i].name, "url", h[i].url);
        json_array_append_new(report, entry);
        if (want && !strcmp(jstr(cur, "digest"), want) && !strcmp(jstr(before[i], "state"), "running")) {
            json_object_set_new(entry, "status", json_string("skipped"));
            json_object_set_new(entry, "digest", json_string(want));
            say(o, "== %s: already runs %s: skipped\n", h[i].name, want);
            continue;
        }
        say(o, "== %s (%s): deploying %s\n", h[i].name, h[i].url, o->image);
        json_t *body = json_pack("{s:s}", "image", o->image);
        if (o->revision) json_object_set_new(body, "revision", json_string(o->revision));
        if (o->manifests) json_object_set_new(body, "manifests", json_string(o->manifests));
        char delivery[160];
        snprintf(delivery, sizeof delivery, "roll-%lld-%d-%s", (long long)ctl_now_ms(), (int)getpid(), h[i].name);
        json_t *out = NULL;
        long s = signed_call(&h[i], "POST", "/v1/deploys", body, delivery, &out, err);
        json_decref(body);
        if (s != 202) {
            if (s >= 0) ctl_errf(err, "refused (%ld): %s", s, error_message(out));
            json_object_set_new(entry, "status", json_string("refused"));
            json_object_set_new(entry, "message", json_string(err));
            rc = s < 0 ? 3 : 1;
            stopped_at = h[i].name;
            json_decref(out);
            break;
        }
        const char *id = jstr(out, "id");
        json_object_set_new(entry, "deploy", json_string(id));
        json_t *d = NULL;
        if (follow_host(cfg, &h[i], o, id, &d, err) < 0) {
            json_object_set_new(entry, "status", json_string("unknown"));
            json_object_set_new(entry, "message", json_string(err));
            rc = 1;
            stopped_at = h[i].name;
            json_decref(out);
            break;
        }
        const char *status = jstr(d, "status");
        json_object_set_new(entry, "status", json_string(status));
        json_object_set_new(entry, "message", json_string(jstr(d, "message")));
        json_t *after = NULL;
        if (host_status(&h[i], &after, err) == 200)
            json_object_set_new(entry, "digest", json_string(jstr(json_object_get(after, "current"), "digest")));
        say(o, "== %s: %s: %s\n", h[i].name, status, jstr(d, "message"));
        if (strcmp(status, "succeeded") && strcmp(status, "noop")) {
            rc = 1;
            stopped_at = h[i].name;
        } else if (strcmp(jstr(after, "state"), "running")) {
            /* the deploy ended well but the server is not ready now: do not go on */
            json_object_set_new(entry, "status", json_string("not_ready"));
            say(o, "== %s: the deploy succeeded but the host is %s now\n", h[i].name, jstr(after, "state"));
            rc = 1;
            stopped_at = h[i].name;
        }
        json_decref(after);
        json_decref(d);
        json_decref(out);
    }
    if (stopped_at) {
        bool later = false;
        for (size_t i = 0; i < n; i++) {
            if (later) {
                json_array_append_new(report,
                                      json_pack("{s:s,s:s,s:s,s:s}", "host", h[i].name, "url", h[i].url, "status",
                                                "not_touched", "digest",
                                                jstr(json_object_get(before[i], "current"), "digest")));
                say(o, "== %s: not touched (still %s)\n", h[i].name,
                    jstr(json_object_get(before[i], "current"), "digest"));
            }
            if (!strcmp(h[i].name, stopped_at)) later = true;
        }
        say(o, "roll stopped at %s: the hosts after it were not touched\n", stopped_at);
    } else if (rc == 0) {
        say(o, "roll done: %s on every host\n", o->image);
    }
    if (o->json) {
        json_t *doc = json_pack("{s:s,s:s,s:O}", "image", o->image, "status",
                                rc == 0          ? "succeeded"
                                    : stopped_at ? "stopped"
                                                 : "refused",
                                "hosts", report);
        if (stopped_at) json_object_set_new(doc, "stopped_at", json_string(stopped_at));
        char *t = json_dumps(doc, JSON_INDENT(2));
        printf("%s\n", t);
        free(t);
        json_decref(doc);
    }
    for (size_t i = 0; i < n; i++) json_decref(before[i]);
    free(before);
    json_decref(report);
    hosts_free(h, n);
    return rc;
}

int roll_status(const struct ctl_config *cfg, bool json) {
    char err[CTL_ERR_LEN];
    struct host *h = NULL;
    size_t n = 0;
    if (load_hosts(cfg, &h, &n, err) < 0) {
        fprintf(stderr, "beava-control: %s\n", err);
        return 2;
    }
    int rc = 0;
    json_t *all = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *st = NULL;
        long s = host_status(&h[i], &st, err);
        if (s != 200) {
            rc = s < 0 ? 3 : 1;
            json_array_append_new(all, json_pack("{s:s,s:s,s:s}", "host", h[i].name, "url", h[i].url, "error", err));
            if (!json) printf("%-12s %-10s %s\n", h[i].name, "unreachable", err);
        } else {
            json_t *cur = json_object_get(st, "current");
            json_array_append_new(all,
                                  json_pack("{s:s,s:s,s:s,s:s,s:s}", "host", h[i].name, "url", h[i].url, "state",
                                            jstr(st, "state"), "digest", jstr(cur, "digest"), "image",
                                            jstr(cur, "image")));
            if (!json)
                printf("%-12s %-10s %s %s\n", h[i].name, jstr(st, "state"), jstr(cur, "digest"), jstr(cur, "image"));
        }
        json_decref(st);
    }
    if (json) {
        json_t *doc = json_pack("{s:O}", "hosts", all);
        char *t = json_dumps(doc, JSON_INDENT(2));
        printf("%s\n", t);
        free(t);
        json_decref(doc);
    }
    json_decref(all);
    hosts_free(h, n);
    return rc;
}
