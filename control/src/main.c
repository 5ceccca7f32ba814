/*
 * main.c — beava-control's command line: `serve` runs the daemon; every other command is
 * a client of the daemon's unix socket, except the offline `manifests` and `config`.
 *
 * Exit codes: 0 success (or a no-op), 1 the operation failed / rolled back, 2 usage or
 * configuration error, 3 the daemon cannot be reached.
 */
#include "config.h"
#include "daemon.h"
#include "http.h"
#include "manifest.h"
#include "roll.h"
#include "trigger.h"
#include "util.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef BEAVA_CONTROL_VERSION
#define BEAVA_CONTROL_VERSION "0.0.0"
#endif

static void usage(FILE *f) {
    fprintf(f,
            "usage: beava-control [--config PATH] [--set KEY=VALUE]... [--socket PATH] COMMAND\n"
            "\n"
            "commands:\n"
            "  serve                                   run the control daemon\n"
            "  deploy IMAGE [--manifests DIR] [--revision SHA] [--wait]\n"
            "                                          deploy an image (tag or digest; 'local' for the\n"
            "                                          process runtime); --wait follows it to the end\n"
            "  apply [--adopt] DIR                     apply pipeline manifests to the running server;\n"
            "                                          --adopt keeps descriptors registered by hand\n"
            "  rollback [--to DIGEST|TAG|DEPLOY-ID]    go back to the previous (or the named) release\n"
            "  releases [--json]                       every release the journal knows\n"
            "  backups [--json]                        data dir copies and snapshots taken\n"
            "  restore BACKUP-ID                       put a backup in place (the data dir is moved aside)\n"
            "  status [--json]                         what runs, since when, and whether it is ready\n"
            "  history [-n N] [--json]                 recent deploys with their steps\n"
            "  wait ID                                 follow a deploy to its end\n"
            "  manifests render PATH                   print the register payload of a manifest set\n"
            "  manifests check PATH                    validate a manifest set (conflicts included)\n"
            "  manifests diff PATH                     what applying it would change (dry run on the server)\n"
            "  cluster deploy IMAGE [--manifests DIR] [--revision SHA] [--json]\n"
            "                                          roll IMAGE over cluster.hosts, one host at a time,\n"
            "                                          each gated on readiness and catch-up; stops at the\n"
            "                                          first host that fails (it rolls itself back)\n"
            "  cluster status [--json]                 every host's release and state\n"
            "  config                                  print the effective configuration\n"
            "  sign --secret-file F --delivery ID [--timestamp T] [--method M] [--path P] BODY\n"
            "                                          print trigger headers for BODY (for scripts)\n"
            "  version\n"
            "\n"
            "Settings: --set PATH=VALUE, env BEAVA_CONTROL_<PATH>, or the YAML file (see README).\n");
}

struct cli {
    const char *config;
    const char *socket;
    char **sets;
    int nsets;
    struct ctl_config *cfg;
};

static int load_cfg(struct cli *cl) {
    char err[CTL_ERR_LEN];
    if (cl->socket) {
        char *s = ctl_asprintf("socket=%s", cl->socket);
        cl->sets = ctl_realloc(cl->sets, (size_t)(cl->nsets + 1) * sizeof *cl->sets);
        cl->sets[cl->nsets++] = s;
    }
    if (config_load(cl->config, cl->sets, cl->nsets, &cl->cfg, err) < 0) {
        fprintf(stderr, "beava-control: %s\n", err);
        return -1;
    }
    return 0;
}

/* Call the daemon over the unix socket. Returns the HTTP status, or -1 (printed). */
static long call(struct cli *cl, const char *method, const char *path, json_t *body, json_t **out) {
    char url[512], err[CTL_ERR_LEN];
    long status = 0;
    snprintf(url, sizeof url, "http://localhost%s", path);
    if (http_json(method, url, body, NULL, 30000, config_socket(cl->cfg), &status, out, err) < 0) {
        fprintf(stderr, "beava-control: cannot reach the daemon at %s: %s\n", config_socket(cl->cfg), err);
        return -1;
    }
    return status;
}

static void human_bytes(json_int_t b, char *buf, size_t len) {
    if (b >= 1 << 30) snprintf(buf, len, "%.1f GiB", (double)b / (1 << 30));
    else if (b >= 1 << 20) snprintf(buf, len, "%.1f MiB", (double)b / (1 << 20));
    else if (b >= 1 << 10) snprintf(buf, len, "%.1f KiB", (double)b / (1 << 10));
    else snprintf(buf, len, "%lld B", (long long)b);
}

/* The one-line detail of a step, as a person reads it ("" when there is none). */
static void step_detail(const char *name, json_t *d, char *out, size_t len) {
    char b1[32];
    out[0] = 0;
    if (!json_is_object(d)) return;
    json_int_t bytes = json_integer_value(json_object_get(d, "bytes"));
    human_bytes(bytes, b1, sizeof b1);
    if (!strcmp(name, "backup") || !strcmp(name, "restore.backup")) {
        snprintf(out, len, "%s (%s)", json_string_value(json_object_get(d, "path")) ?: "", b1);
    } else if (!strcmp(name, "apply.backup")) {
        snprintf(out, len, "snapshot at LSN %lld -> %s (%s)", (long long)json_integer_value(json_object_get(d, "lsn")),
                 json_string_value(json_object_get(d, "backup")) ?: "", b1);
    } else if (!strcmp(name, "apply.preflight")) {
        json_t *diff = json_object_get(d, "diff");
        snprintf(out, len, "%lld node(s) declared: %zu to add, %zu destructive, %zu already present",
                 (long long)json_integer_value(json_object_get(d, "nodes")),
                 json_array_size(json_object_get(diff, "additive")),
                 json_array_size(json_object_get(diff, "destructive")),
                 json_array_size(json_object_get(diff, "already_present")));
    } else if (!strcmp(name, "cluster") || !strcmp(name, "rollback.cluster")) {
        snprintf(out, len, "node %s: %lld partition(s) owned, %lld stream sequence(s) behind at start, %lld now",
                 json_string_value(json_object_get(d, "node")) ?: "?",
                 (long long)json_integer_value(json_object_get(d, "owned_partitions")),
                 (long long)json_integer_value(json_object_get(d, "lag_at_start")),
                 (long long)json_integer_value(json_object_get(d, "lag")));
    } else if (!strcmp(name, "verify")) {
        size_t i, bad = 0;
        json_t *t;
        json_array_foreach(json_object_get(d, "tables"), i, t) bad +=
            json_integer_value(json_object_get(t, "status")) != 200;
        snprintf(out, len, "registry version %lld, %lld descriptor(s), %zu table(s) answer /get%s",
                 (long long)json_integer_value(json_object_get(d, "registry_version")),
                 (long long)json_integer_value(json_object_get(d, "node_count")),
                 json_array_size(json_object_get(d, "tables")) - bad, bad ? " (some do NOT)" : "");
    } else if (!strcmp(name, "stop") || !strcmp(name, "rollback.stop")) {
        if (json_object_get(d, "via")) snprintf(out, len, "%s", json_string_value(json_object_get(d, "via")));
    } else if (!strcmp(name, "start") || !strcmp(name, "rollback.start")) {
        size_t n = json_array_size(json_object_get(d, "env_overrides"));
        snprintf(out, len, "pid %lld%s", (long long)json_integer_value(json_object_get(d, "pid")),
                 n ? ", image environment overridden:" : "");
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(d, "env_overrides"), i, o) {
            size_t l = strlen(out);
            snprintf(out + l, len - l, " %s (by %s)", json_string_value(json_object_get(o, "key")) ?: "?",
                     json_string_value(json_object_get(o, "by")) ?: "?");
        }
    } else if (!strcmp(name, "probe") || !strcmp(name, "rollback.probe")) {
        json_t *p = json_object_get(d, "progress");
        const char *why = json_string_value(json_object_get(d, "reason"));
        if (why) snprintf(out, len, "gate failed: %s", why);
        else if (p)
            snprintf(out, len, "recovery replayed %lld records",
                     (long long)json_integer_value(json_object_get(p, "records")));
    } else if (!strcmp(name, "manifests")) {
        snprintf(out, len, "%s", json_string_value(json_object_get(d, "dir")) ?: "");
    }
}

static void print_step(json_t *s) {
    const char *name = json_string_value(json_object_get(s, "step"));
    bool ok = json_is_true(json_object_get(s, "ok"));
    double secs = (double)json_integer_value(json_object_get(s, "ms")) / 1000.0;
    const char *msg = json_string_value(json_object_get(s, "message"));
    char det[1024];
    step_detail(name ? name : "", json_object_get(s, "detail"), det, sizeof det);
    printf("  %-4s %-28s %8.2fs  %s\n", ok ? "ok" : "FAIL", name ? name : "?", secs, msg ? msg : "");
    if (*det) printf("       %-28s            %s\n", "", det);
    json_t *tail = json_object_get(json_object_get(s, "detail"), "log_tail");
    if (!ok && json_is_string(tail) && *json_string_value(tail))
        printf("       server log (last lines):\n%s\n", json_string_value(tail));
}

static int follow(struct cli *cl, const char *id) {
    char path[200];
    snprintf(path, sizeof path, "/v1/deploys/%s", id);
    size_t printed = 0;
    for (;;) {
        json_t *d = NULL;
        long st = call(cl, "GET", path, NULL, &d);
        if (st < 0) return 3;
        if (st != 200) {
            fprintf(stderr, "beava-control: deploy %s: status %ld\n", id, st);
            json_decref(d);
            return 1;
        }
        json_t *steps = json_object_get(d, "steps");
        for (; printed < json_array_size(steps); printed++) print_step(json_array_get(steps, printed));
        const char *status = json_string_value(json_object_get(d, "status"));
        if (status && strcmp(status, "queued") && strcmp(status, "running")) {
            const char *msg = json_string_value(json_object_get(d, "message"));
            printf("%s %s: %s\n", id, status, msg ? msg : "");
            int rc = (!strcmp(status, "succeeded") || !strcmp(status, "noop")) ? 0 : 1;
            json_decref(d);
            return rc;
        }
        json_decref(d);
        usleep(250000);
    }
}

static int submit(struct cli *cl, const char *path, json_t *body, bool wait) {
    json_t *out = NULL;
    long st = call(cl, "POST", path, body, &out);
    json_decref(body);
    if (st < 0) return 3;
    if (st != 202) {
        const char *m = json_string_value(json_object_get(json_object_get(out, "error"), "message"));
        fprintf(stderr, "beava-control: refused (%ld): %s\n", st, m ? m : "");
        json_decref(out);
        return st == 400 || st == 403 ? 2 : 1;
    }
    const char *id = json_string_value(json_object_get(out, "id"));
    printf("%s queued\n", id);
    fflush(stdout);
    int rc = wait ? follow(cl, id) : 0;
    json_decref(out);
    return rc;
}

static char *abspath(const char *p) {
    char *r = realpath(p, NULL);
    return r ? r : ctl_strdup(p);
}

/* "tag@sha256:0123456789ab" from an image reference and a digest. */
static void short_image(const char *image, const char *digest, char *out, size_t len) {
    char ref[512];
    snprintf(ref, sizeof ref, "%s", image ? image : "");
    char *at = strchr(ref, '@');
    if (at) *at = 0;
    const char *name = strrchr(ref, '/') ? strrchr(ref, '/') + 1 : ref;
    if (digest && !strncmp(digest, "sha256:", 7)) snprintf(out, len, "%.200s%s%.19s", name, *name ? "@" : "", digest);
    else snprintf(out, len, "%.200s", *name ? name : "-");
}

/* Seconds between two RFC 3339 UTC timestamps written by the daemon (-1 if unknown). */
static double iso_diff(const char *a, const char *b) {
    struct tm ta = { 0 }, tb = { 0 };
    int ma = 0, mb = 0;
    if (!a || !b ||
        sscanf(a, "%d-%d-%dT%d:%d:%d.%dZ", &ta.tm_year, &ta.tm_mon, &ta.tm_mday, &ta.tm_hour, &ta.tm_min, &ta.tm_sec,
               &ma) < 6 ||
        sscanf(b, "%d-%d-%dT%d:%d:%d.%dZ", &tb.tm_year, &tb.tm_mon, &tb.tm_mday, &tb.tm_hour, &tb.tm_min, &tb.tm_sec,
               &mb) < 6)
        return -1;
    ta.tm_year -= 1900, tb.tm_year -= 1900, ta.tm_mon--, tb.tm_mon--;
    return difftime(timegm(&tb), timegm(&ta)) + (mb - ma) / 1000.0;
}

static const char *jstr(json_t *o, const char *k) {
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "-";
}

static void print_json(json_t *j) {
    char *t = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    printf("%s\n", t);
    free(t);
}

static int cmd_status(struct cli *cl, bool as_json) {
    json_t *s = NULL;
    long st = call(cl, "GET", "/v1/status", NULL, &s);
    if (st < 0) return 3;
    if (as_json) {
        print_json(s);
        json_decref(s);
        return 0;
    }
    json_t *cur = json_object_get(s, "current");
    json_t *inst = json_object_get(s, "instance");
    json_t *lb = json_object_get(s, "labels");
    printf("state:       %s (runtime %s)\n", jstr(s, "state"), jstr(s, "runtime"));
    if (json_is_object(cur)) {
        printf("release:     %s\n", jstr(cur, "digest"));
        printf("  image:     %s\n", jstr(cur, "image"));
        printf("  version:   %s   revision: %s\n", jstr(lb, "org.opencontainers.image.version"), jstr(cur, "revision"));
        printf("  since:     %s (deploy %s)\n", jstr(cur, "since"), jstr(cur, "deploy"));
        printf("  manifests: %s (hash %.19s)\n", jstr(cur, "manifests"), jstr(cur, "manifests_hash"));
        printf("  previous:  %s\n", jstr(json_object_get(cur, "previous"), "digest"));
    } else {
        printf("release:     none deployed yet\n");
    }
    if (json_is_object(inst)) {
        bool mine = json_is_true(json_object_get(s, "instance_is_current"));
        printf("server:      pid %lld, %s, %s%s%s\n", (long long)json_integer_value(json_object_get(inst, "pid")),
               json_is_true(json_object_get(inst, "alive")) ? "alive" : "not running",
               json_is_true(json_object_get(inst, "ready")) ? "ready" : "not ready", mine ? "" : " — release ",
               mine ? "" : jstr(inst, "digest"));
    }
    json_t *dp = json_object_get(s, "deploy_in_progress");
    if (json_is_object(dp)) {
        printf("deploy in progress:\n");
        printf("  id:        %s (%s, from %s)\n", jstr(dp, "id"), jstr(dp, "kind"), jstr(dp, "source"));
        printf("  image:     %s\n", jstr(dp, "image"));
        printf("  step:      %s done (%lld step(s)), %.1fs elapsed\n", jstr(dp, "last_step"),
               (long long)json_integer_value(json_object_get(dp, "steps_done")),
               (double)json_integer_value(json_object_get(dp, "elapsed_ms")) / 1000.0);
    } else {
        printf("deploying:   -\n");
    }
    size_t q = json_array_size(json_object_get(s, "queue"));
    if (q) printf("queued:      %zu deploy(s)\n", q);
    json_decref(s);
    return 0;
}

static int cmd_history(struct cli *cl, int n, bool as_json) {
    char path[64];
    snprintf(path, sizeof path, "/v1/history?limit=%d", n);
    json_t *h = NULL;
    if (call(cl, "GET", path, NULL, &h) < 0) return 3;
    if (as_json) {
        print_json(h);
        json_decref(h);
        return 0;
    }
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(h, "deploys"), i, d) {
        char img[300], when[40] = "-";
        const char *digest = json_string_value(json_object_get(d, "digest"));
        if (!digest) digest = json_string_value(json_object_get(d, "rolled_back_to"));
        short_image(json_string_value(json_object_get(d, "image")), digest, img, sizeof img);
        const char *started = json_string_value(json_object_get(d, "started"));
        if (!started) started = json_string_value(json_object_get(d, "queued_at"));
        if (started) snprintf(when, sizeof when, "%.10s %.8s", started, started + 11);
        double dur = iso_diff(started, json_string_value(json_object_get(d, "ended")));
        const char *src = jstr(d, "source");
        char source[40];
        snprintf(source, sizeof source, "%s", !strncmp(src, "trigger", 7) ? "ci" : src);
        json_t *lb = json_object_get(d, "labels");
        const char *rev = json_string_value(json_object_get(lb, "org.opencontainers.image.revision"));
        if (!rev) rev = json_string_value(json_object_get(d, "revision"));
        printf("%s  %s  %6.1fs  %-10s %-8s %-11s %s  version %s revision %.12s\n", jstr(d, "id"), when,
               dur < 0 ? 0.0 : dur, source, jstr(d, "kind"), jstr(d, "status"), img,
               jstr(lb, "org.opencontainers.image.version"), rev ? rev : "-");
        const char *status = jstr(d, "status");
        bool bad = strcmp(status, "succeeded") && strcmp(status, "noop") && strcmp(status, "running") &&
            strcmp(status, "queued");
        json_t *steps = json_object_get(d, "steps"), *s;
        size_t k;
        if (bad) {
            json_array_foreach(steps, k, s) {
                if (!json_is_true(json_object_get(s, "ok"))) {
                    printf("    failed at %s: %s\n", jstr(s, "step"), jstr(s, "message"));
                    break;
                }
            }
        }
        printf("    %s\n", jstr(d, "message"));
        if (json_object_get(d, "exit")) printf("    %s\n", jstr(d, "exit"));
        json_t *tail = json_object_get(d, "log_tail");
        if (json_is_string(tail) && *json_string_value(tail))
            printf("    server log (last lines):\n%s\n", json_string_value(tail));
        json_array_foreach(steps, k, s) print_step(s);
    }
    json_decref(h);
    return 0;
}

static int cmd_releases(struct cli *cl, bool as_json) {
    json_t *r = NULL;
    if (call(cl, "GET", "/v1/releases", NULL, &r) < 0) return 3;
    if (as_json) {
        print_json(r);
        json_decref(r);
        return 0;
    }
    printf("%-3s %-19s  %-40s %-9s %-12s %-20s %-20s %s\n", "", "DIGEST", "IMAGE", "VERSION", "REVISION",
           "FIRST DEPLOYED", "LAST DEPLOYED", "IN STORE");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r, "releases"), i, e) {
        const char *mark = json_is_true(json_object_get(e, "running")) ? "*"
            : json_is_true(json_object_get(e, "previous"))             ? "p"
                                                                       : "";
        printf("%-3s %.19s  %-40.40s %-9s %-12.12s %-20.19s %-20.19s %s\n", mark, jstr(e, "digest"), jstr(e, "image"),
               jstr(e, "version"), jstr(e, "revision"), jstr(e, "first_deployed"), jstr(e, "last_deployed"),
               json_is_true(json_object_get(e, "in_store")) ? "yes" : "no (removed by retention)");
    }
    printf("(* running, p previous; `rollback --to DIGEST|TAG|DEPLOY-ID` runs one still in the store)\n");
    json_decref(r);
    return 0;
}

static int cmd_backups(struct cli *cl, bool as_json) {
    json_t *r = NULL;
    if (call(cl, "GET", "/v1/backups", NULL, &r) < 0) return 3;
    if (as_json) {
        print_json(r);
        json_decref(r);
        return 0;
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r, "backups"), i, e) {
        char b[32];
        human_bytes(json_integer_value(json_object_get(e, "bytes")), b, sizeof b);
        char lsn[32] = "-";
        if (json_is_integer(json_object_get(e, "lsn")))
            snprintf(lsn, sizeof lsn, "%lld", (long long)json_integer_value(json_object_get(e, "lsn")));
        printf("%s  %.19s  %-8s %9s  LSN %-8s release %.19s%s\n    %s\n    %s\n", jstr(e, "id"), jstr(e, "when"),
               jstr(e, "kind"), b, lsn, jstr(e, "release"),
               json_is_true(json_object_get(e, "exists")) ? "" : "  (removed)", jstr(e, "why"), jstr(e, "path"));
    }
    if (!json_array_size(json_object_get(r, "backups"))) printf("no backups recorded\n");
    json_decref(r);
    return 0;
}

static int cmd_manifests(const char *what, const char *path) {
    char err[CTL_ERR_LEN];
    struct manifest_set *s = NULL;
    if (manifest_load(path, &s, err) < 0) {
        fprintf(stderr, "beava-control: %s\n", err);
        return 1;
    }
    if (!strcmp(what, "render")) {
        json_t *p = json_pack("{s:O}", "nodes", s->all_nodes);
        char *t = json_dumps(p, JSON_INDENT(2));
        printf("%s\n", t);
        free(t);
        json_decref(p);
    } else {
        printf("ok: %zu manifest(s), %zu node(s), hash %s\n", s->n, json_array_size(s->all_nodes), s->hash);
        for (size_t i = 0; i < s->n; i++)
            printf("  %zu. %s%s\n", i + 1, s->m[i].id, s->m[i].allow_destructive ? " (allow_destructive)" : "");
    }
    manifest_set_free(s);
    return 0;
}

/* Headers of a signed trigger (the signing string is in trigger.h and control/README.md). */
static int cmd_manifests_diff(struct cli *cl, const char *dir) {
    char *p = abspath(dir);
    json_t *out = NULL;
    long st = call(cl, "POST", "/v1/manifests/diff", json_pack("{s:s}", "manifests", p), &out);
    free(p);
    if (st < 0) return 3;
    if (st != 200) {
        fprintf(stderr, "beava-control: %s\n", jstr(json_object_get(out, "error"), "message"));
        json_decref(out);
        return 1;
    }
    json_t *diff = json_object_get(out, "diff");
    printf("manifests %s: %zu file(s), %lld descriptor(s) after apply (hash %.19s)\n", jstr(out, "dir"),
           json_array_size(json_object_get(out, "manifests")),
           (long long)json_integer_value(json_object_get(out, "nodes")), jstr(out, "hash"));
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(diff, "additive"), i, e)
        printf("  + add      %s %s\n", jstr(e, "descriptor_kind"), jstr(e, "name"));
    json_array_foreach(json_object_get(diff, "destructive"), i, e) {
        char *t = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
        printf("  ! change   %s\n", t);
        free(t);
    }
    printf("  = keep     %zu descriptor(s) unchanged\n", json_array_size(json_object_get(diff, "already_present")));
    json_array_foreach(json_object_get(out, "resets"), i, e)
        printf("  force will reset table %s: %lld features, all of its entities (their state starts empty)\n",
               jstr(e, "table"), (long long)json_integer_value(json_object_get(e, "features")));
    int rc = 0;
    if (json_is_true(json_object_get(out, "would_apply"))) {
        printf("apply would %s\n",
               json_array_size(json_object_get(diff, "additive")) ||
                       json_array_size(json_object_get(diff, "destructive"))
                   ? "succeed"
                   : "change nothing");
    } else {
        printf("apply would be REFUSED: %s\n", jstr(out, "refusal"));
        rc = 1;
    }
    json_decref(out);
    return rc;
}

static int cmd_sign(int argc, char **argv) {
    const char *secret_file = NULL, *ts = NULL, *delivery = NULL, *method = "POST", *path = "/v1/deploys";
    static const struct option opts[] = {
        { "secret-file", required_argument, 0, 's' }, { "timestamp", required_argument, 0, 't' },
        { "delivery", required_argument, 0, 'd' },    { "method", required_argument, 0, 'm' },
        { "path", required_argument, 0, 'p' },        { 0, 0, 0, 0 }
    };
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+s:t:d:m:p:", opts, NULL)) != -1) {
        if (c == 's') secret_file = optarg;
        else if (c == 't') ts = optarg;
        else if (c == 'd') delivery = optarg;
        else if (c == 'm') method = optarg;
        else if (c == 'p') path = optarg;
        else return 2;
    }
    if (!secret_file || optind != argc - 1 || (!strcmp(method, "POST") && !delivery)) {
        fprintf(stderr,
                "usage: beava-control sign --secret-file F --delivery ID [--timestamp T] [--method M] "
                "[--path P] BODY\n       (--delivery is required for POST, the default method)\n");
        return 2;
    }
    char err[CTL_ERR_LEN], tsbuf[32], sig[80];
    char *secret = NULL;
    size_t len = 0;
    if (ctl_read_file(secret_file, 4096, &secret, &len, err) < 0) {
        fprintf(stderr, "beava-control: %s\n", err);
        return 2;
    }
    while (len && (secret[len - 1] == '\n' || secret[len - 1] == '\r')) secret[--len] = 0;
    if (!ts) {
        snprintf(tsbuf, sizeof tsbuf, "%lld", (long long)(ctl_now_ms() / 1000));
        ts = tsbuf;
    }
    const struct trigger_req r = { .method = method,
                                   .path = path,
                                   .timestamp = ts,
                                   .delivery = delivery,
                                   .body = argv[optind],
                                   .body_len = strlen(argv[optind]) };
    trigger_sign(secret, len, &r, sig);
    printf("%s: %s\n%s: %s\n", TRIGGER_HDR_TS, ts, TRIGGER_HDR_SIG, sig);
    if (delivery) printf("%s: %s\n", TRIGGER_HDR_DELIVERY, delivery);
    free(secret);
    return 0;
}

int main(int argc, char **argv) {
    struct cli cl = { 0 };
    static const struct option gopts[] = {
        { "config", required_argument, 0, 'c' }, { "set", required_argument, 0, 'S' },
        { "socket", required_argument, 0, 'k' }, { "help", no_argument, 0, 'h' },
        { "version", no_argument, 0, 'V' },      { 0, 0, 0, 0 }
    };
    int c, rc = 2;
    while ((c = getopt_long(argc, argv, "+c:h", gopts, NULL)) != -1) {
        switch (c) {
        case 'c': cl.config = optarg; break;
        case 'S':
            cl.sets = ctl_realloc(cl.sets, (size_t)(cl.nsets + 1) * sizeof *cl.sets);
            cl.sets[cl.nsets++] = ctl_strdup(optarg);
            break;
        case 'k': cl.socket = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("beava-control %s\n", BEAVA_CONTROL_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[optind];
    int sargc = argc - optind;
    char **sargv = argv + optind;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!strcmp(cmd, "version")) {
        printf("beava-control %s\n", BEAVA_CONTROL_VERSION);
        rc = 0;
    } else if (!strcmp(cmd, "manifests") && sargc == 3 && !strcmp(sargv[1], "diff")) {
        rc = load_cfg(&cl) < 0 ? 2 : cmd_manifests_diff(&cl, sargv[2]);
    } else if (!strcmp(cmd, "manifests")) {
        if (sargc != 3 || (strcmp(sargv[1], "render") && strcmp(sargv[1], "check"))) {
            fprintf(stderr, "usage: beava-control manifests render|check PATH\n");
        } else {
            rc = cmd_manifests(sargv[1], sargv[2]);
        }
    } else if (!strcmp(cmd, "sign")) {
        rc = cmd_sign(sargc, sargv);
    } else if (load_cfg(&cl) < 0) {
        rc = 2;
    } else if (!strcmp(cmd, "config")) {
        json_t *j = config_to_json(cl.cfg);
        char *t = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("%s\n", t);
        free(t);
        json_decref(j);
        rc = 0;
    } else if (!strcmp(cmd, "serve")) {
        char err[CTL_ERR_LEN];
        if (daemon_serve(cl.cfg, err) < 0) {
            fprintf(stderr, "beava-control: %s\n", err);
            rc = 1;
        } else {
            rc = 0;
        }
    } else if (!strcmp(cmd, "deploy")) {
        static const struct option o[] = { { "manifests", required_argument, 0, 'm' },
                                           { "revision", required_argument, 0, 'r' },
                                           { "wait", no_argument, 0, 'w' },
                                           { 0, 0, 0, 0 } };
        const char *manifests = NULL, *revision = NULL, *image = NULL;
        bool wait = false, bad = false;
        optind = 0;
        while ((c = getopt_long(sargc, sargv, "m:r:w", o, NULL)) != -1) {
            if (c == 'm') manifests = optarg;
            else if (c == 'r') revision = optarg;
            else if (c == 'w') wait = true;
            else bad = true;
        }
        if (optind == sargc - 1) image = sargv[optind];
        if (bad || !image) {
            fprintf(stderr, "usage: beava-control deploy IMAGE [--manifests DIR] [--revision SHA] [--wait]\n");
        } else {
            json_t *body = json_pack("{s:s}", "image", image);
            if (revision) json_object_set_new(body, "revision", json_string(revision));
            if (manifests) {
                char *p = abspath(manifests);
                json_object_set_new(body, "manifests", json_string(p));
                free(p);
            }
            rc = submit(&cl, "/v1/deploys", body, wait);
        }
    } else if (!strcmp(cmd, "cluster") && sargc >= 2 && !strcmp(sargv[1], "status")) {
        rc = roll_status(cl.cfg, sargc > 2 && !strcmp(sargv[2], "--json"));
    } else if (!strcmp(cmd, "cluster") && sargc >= 2 && !strcmp(sargv[1], "deploy")) {
        static const struct option o[] = { { "manifests", required_argument, 0, 'm' },
                                           { "revision", required_argument, 0, 'r' },
                                           { "json", no_argument, 0, 'j' },
                                           { 0, 0, 0, 0 } };
        struct roll_opts ro = { .print_step = print_step };
        bool bad = false;
        optind = 0;
        while ((c = getopt_long(sargc - 1, sargv + 1, "m:r:j", o, NULL)) != -1) {
            if (c == 'm') ro.manifests = optarg;
            else if (c == 'r') ro.revision = optarg;
            else if (c == 'j') ro.json = true;
            else bad = true;
        }
        if (optind == sargc - 2) ro.image = sargv[1 + optind];
        if (bad || !ro.image)
            fprintf(stderr, "usage: beava-control cluster deploy IMAGE [--manifests DIR] [--revision SHA] [--json]\n");
        else rc = roll_deploy(cl.cfg, &ro);
    } else if (!strcmp(cmd, "cluster")) {
        fprintf(stderr,
                "usage: beava-control cluster deploy IMAGE [--manifests DIR] [--revision SHA] [--json]\n"
                "       beava-control cluster status [--json]\n");
    } else if (!strcmp(cmd, "apply")) {
        bool adopt = sargc == 3 && !strcmp(sargv[1], "--adopt");
        if (sargc != 2 && !adopt) {
            fprintf(stderr, "usage: beava-control apply [--adopt] DIR\n");
        } else {
            char *p = abspath(sargv[sargc - 1]);
            rc = submit(&cl, "/v1/apply", json_pack("{s:s,s:b}", "manifests", p, "adopt", adopt), true);
            free(p);
        }
    } else if (!strcmp(cmd, "rollback")) {
        if (sargc == 3 && !strcmp(sargv[1], "--to"))
            rc = submit(&cl, "/v1/rollback", json_pack("{s:s}", "to", sargv[2]), true);
        else if (sargc == 1) rc = submit(&cl, "/v1/rollback", json_object(), true);
        else fprintf(stderr, "usage: beava-control rollback [--to DIGEST|TAG|DEPLOY-ID]\n");
    } else if (!strcmp(cmd, "restore")) {
        if (sargc != 2) fprintf(stderr, "usage: beava-control restore BACKUP-ID   (see `beava-control backups`)\n");
        else rc = submit(&cl, "/v1/restore", json_pack("{s:s}", "backup", sargv[1]), true);
    } else if (!strcmp(cmd, "releases")) {
        rc = cmd_releases(&cl, sargc > 1 && !strcmp(sargv[1], "--json"));
    } else if (!strcmp(cmd, "backups")) {
        rc = cmd_backups(&cl, sargc > 1 && !strcmp(sargv[1], "--json"));
    } else if (!strcmp(cmd, "wait")) {
        rc = sargc == 2 ? follow(&cl, sargv[1]) : 2;
    } else if (!strcmp(cmd, "status")) {
        rc = cmd_status(&cl, sargc > 1 && !strcmp(sargv[1], "--json"));
    } else if (!strcmp(cmd, "history")) {
        int n = 20;
        bool js = false;
        for (int i = 1; i < sargc; i++) {
            if (!strcmp(sargv[i], "--json")) js = true;
            else if (!strcmp(sargv[i], "-n") && i + 1 < sargc) n = atoi(sargv[++i]);
        }
        rc = cmd_history(&cl, n, js);
    } else {
        fprintf(stderr, "beava-control: unknown command '%s'\n", cmd);
        usage(stderr);
    }
    config_free(cl.cfg);
    for (int i = 0; i < cl.nsets; i++) free(cl.sets[i]);
    free(cl.sets);
    curl_global_cleanup();
    return rc;
}
