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
#include "trigger.h"
#include "util.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef BEAVA_CONTROL_VERSION
#define BEAVA_CONTROL_VERSION "0.0.0"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: beava-control [--config PATH] [--set KEY=VALUE]... [--socket PATH] COMMAND\n"
            "\n"
            "commands:\n"
            "  serve                                   run the control daemon\n"
            "  deploy IMAGE [--manifests DIR] [--revision SHA] [--wait]\n"
            "                                          deploy an image (tag or digest; 'local' for the\n"
            "                                          process runtime); --wait follows it to the end\n"
            "  apply DIR                               apply pipeline manifests to the running server\n"
            "  rollback                                go back to the previous release\n"
            "  status [--json]                         what runs, since when, and whether it is ready\n"
            "  history [-n N] [--json]                 recent deploys with their steps\n"
            "  wait ID                                 follow a deploy to its end\n"
            "  manifests render PATH                   print the register payload of a manifest set\n"
            "  manifests check PATH                    validate a manifest set (conflicts included)\n"
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

static int load_cfg(struct cli *cl)
{
    char err[CTL_ERR_LEN];
    if (cl->socket) {
        char *s = ctl_asprintf("socket=%s", cl->socket);
        cl->sets = realloc(cl->sets, (size_t)(cl->nsets + 1) * sizeof *cl->sets);
        cl->sets[cl->nsets++] = s;
    }
    if (config_load(cl->config, cl->sets, cl->nsets, &cl->cfg, err) < 0) {
        fprintf(stderr, "beava-control: %s\n", err);
        return -1;
    }
    return 0;
}

/* Call the daemon over the unix socket. Returns the HTTP status, or -1 (printed). */
static long call(struct cli *cl, const char *method, const char *path, json_t *body, json_t **out)
{
    char url[512], err[CTL_ERR_LEN];
    long status = 0;
    snprintf(url, sizeof url, "http://localhost%s", path);
    if (http_json(method, url, body, NULL, 30000, config_socket(cl->cfg), &status, out, err) < 0) {
        fprintf(stderr, "beava-control: cannot reach the daemon at %s: %s\n", config_socket(cl->cfg), err);
        return -1;
    }
    return status;
}

static void print_step(json_t *s)
{
    const char *name = json_string_value(json_object_get(s, "step"));
    bool ok = json_is_true(json_object_get(s, "ok"));
    double secs = (double)json_integer_value(json_object_get(s, "ms")) / 1000.0;
    const char *msg = json_string_value(json_object_get(s, "message"));
    printf("  %-4s %-28s %8.2fs  %s\n", ok ? "ok" : "FAIL", name ? name : "?", secs, msg ? msg : "");
    json_t *tail = json_object_get(json_object_get(s, "detail"), "log_tail");
    if (!ok && json_is_string(tail) && *json_string_value(tail))
        printf("       server log (last lines):\n%s\n", json_string_value(tail));
}

static int follow(struct cli *cl, const char *id)
{
    char path[200];
    snprintf(path, sizeof path, "/v1/deploys/%s", id);
    size_t printed = 0;
    for (;;) {
        json_t *d = NULL;
        long st = call(cl, "GET", path, NULL, &d);
        if (st < 0)
            return 3;
        if (st != 200) {
            fprintf(stderr, "beava-control: deploy %s: status %ld\n", id, st);
            json_decref(d);
            return 1;
        }
        json_t *steps = json_object_get(d, "steps");
        for (; printed < json_array_size(steps); printed++)
            print_step(json_array_get(steps, printed));
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

static int submit(struct cli *cl, const char *path, json_t *body, bool wait)
{
    json_t *out = NULL;
    long st = call(cl, "POST", path, body, &out);
    json_decref(body);
    if (st < 0)
        return 3;
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

static char *abspath(const char *p)
{
    char *r = realpath(p, NULL);
    return r ? r : ctl_strdup(p);
}

static int cmd_status(struct cli *cl, bool as_json)
{
    json_t *s = NULL;
    long st = call(cl, "GET", "/v1/status", NULL, &s);
    if (st < 0)
        return 3;
    if (as_json) {
        char *t = json_dumps(s, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("%s\n", t);
        free(t);
    } else {
        json_t *cur = json_object_get(s, "current");
        json_t *inst = json_object_get(s, "instance");
        printf("state:      %s\n", json_string_value(json_object_get(s, "state")));
        printf("runtime:    %s\n", json_string_value(json_object_get(s, "runtime")));
        if (json_is_object(cur)) {
            const char *keys[] = {"digest", "image", "revision", "manifests_hash", "since", "deploy", NULL};
            for (int i = 0; keys[i]; i++) {
                const char *v = json_string_value(json_object_get(cur, keys[i]));
                printf("%-11s %s\n", keys[i], v ? v : "-");
            }
            const char *pd = json_string_value(json_object_get(json_object_get(cur, "previous"), "digest"));
            printf("previous    %s\n", pd ? pd : "-");
        }
        if (json_is_object(inst))
            printf("server:     pid %lld, %s, %s\n", (long long)json_integer_value(json_object_get(inst, "pid")),
                   json_is_true(json_object_get(inst, "alive")) ? "alive" : "not running",
                   json_is_true(json_object_get(inst, "ready")) ? "ready" : "not ready");
        const char *dep = json_string_value(json_object_get(s, "deploying"));
        printf("deploying:  %s\n", dep ? dep : "-");
    }
    json_decref(s);
    return 0;
}

static int cmd_history(struct cli *cl, int n, bool as_json)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/history?limit=%d", n);
    json_t *h = NULL;
    if (call(cl, "GET", path, NULL, &h) < 0)
        return 3;
    if (as_json) {
        char *t = json_dumps(h, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("%s\n", t);
        free(t);
    } else {
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(h, "deploys"), i, d) {
            const char *img = json_string_value(json_object_get(d, "image"));
            printf("%s  %-8s %-11s %s %s\n", json_string_value(json_object_get(d, "id")),
                   json_string_value(json_object_get(d, "kind")) ? json_string_value(json_object_get(d, "kind")) : "?",
                   json_string_value(json_object_get(d, "status")), img ? img : "",
                   json_string_value(json_object_get(d, "message")) ? json_string_value(json_object_get(d, "message")) : "");
            size_t k;
            json_t *s;
            json_array_foreach(json_object_get(d, "steps"), k, s) print_step(s);
        }
    }
    json_decref(h);
    return 0;
}

static int cmd_manifests(const char *what, const char *path)
{
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
static int cmd_sign(int argc, char **argv)
{
    const char *secret_file = NULL, *ts = NULL, *delivery = NULL, *method = "POST", *path = "/v1/deploys";
    static const struct option opts[] = {{"secret-file", required_argument, 0, 's'},
                                         {"timestamp", required_argument, 0, 't'},
                                         {"delivery", required_argument, 0, 'd'},
                                         {"method", required_argument, 0, 'm'},
                                         {"path", required_argument, 0, 'p'}, {0, 0, 0, 0}};
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+s:t:d:m:p:", opts, NULL)) != -1) {
        if (c == 's')
            secret_file = optarg;
        else if (c == 't')
            ts = optarg;
        else if (c == 'd')
            delivery = optarg;
        else if (c == 'm')
            method = optarg;
        else if (c == 'p')
            path = optarg;
        else
            return 2;
    }
    if (!secret_file || optind != argc - 1 || (!strcmp(method, "POST") && !delivery)) {
        fprintf(stderr, "usage: beava-control sign --secret-file F --delivery ID [--timestamp T] [--method M] "
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
    while (len && (secret[len - 1] == '\n' || secret[len - 1] == '\r'))
        secret[--len] = 0;
    if (!ts) {
        snprintf(tsbuf, sizeof tsbuf, "%lld", (long long)(ctl_now_ms() / 1000));
        ts = tsbuf;
    }
    const struct trigger_req r = {.method = method, .path = path, .timestamp = ts, .delivery = delivery,
                                  .body = argv[optind], .body_len = strlen(argv[optind])};
    trigger_sign(secret, len, &r, sig);
    printf("%s: %s\n%s: %s\n", TRIGGER_HDR_TS, ts, TRIGGER_HDR_SIG, sig);
    if (delivery)
        printf("%s: %s\n", TRIGGER_HDR_DELIVERY, delivery);
    free(secret);
    return 0;
}

int main(int argc, char **argv)
{
    struct cli cl = {0};
    static const struct option gopts[] = {{"config", required_argument, 0, 'c'},
                                          {"set", required_argument, 0, 'S'},
                                          {"socket", required_argument, 0, 'k'},
                                          {"help", no_argument, 0, 'h'},
                                          {"version", no_argument, 0, 'V'},
                                          {0, 0, 0, 0}};
    int c, rc = 2;
    while ((c = getopt_long(argc, argv, "+c:h", gopts, NULL)) != -1) {
        switch (c) {
        case 'c': cl.config = optarg; break;
        case 'S':
            cl.sets = realloc(cl.sets, (size_t)(cl.nsets + 1) * sizeof *cl.sets);
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
        static const struct option o[] = {{"manifests", required_argument, 0, 'm'},
                                          {"revision", required_argument, 0, 'r'},
                                          {"wait", no_argument, 0, 'w'}, {0, 0, 0, 0}};
        const char *manifests = NULL, *revision = NULL, *image = NULL;
        bool wait = false, bad = false;
        optind = 0;
        while ((c = getopt_long(sargc, sargv, "m:r:w", o, NULL)) != -1) {
            if (c == 'm')
                manifests = optarg;
            else if (c == 'r')
                revision = optarg;
            else if (c == 'w')
                wait = true;
            else
                bad = true;
        }
        if (optind == sargc - 1)
            image = sargv[optind];
        if (bad || !image) {
            fprintf(stderr, "usage: beava-control deploy IMAGE [--manifests DIR] [--revision SHA] [--wait]\n");
        } else {
            json_t *body = json_pack("{s:s}", "image", image);
            if (revision)
                json_object_set_new(body, "revision", json_string(revision));
            if (manifests) {
                char *p = abspath(manifests);
                json_object_set_new(body, "manifests", json_string(p));
                free(p);
            }
            rc = submit(&cl, "/v1/deploys", body, wait);
        }
    } else if (!strcmp(cmd, "apply")) {
        if (sargc != 2) {
            fprintf(stderr, "usage: beava-control apply DIR\n");
        } else {
            char *p = abspath(sargv[1]);
            rc = submit(&cl, "/v1/apply", json_pack("{s:s}", "manifests", p), true);
            free(p);
        }
    } else if (!strcmp(cmd, "rollback")) {
        rc = submit(&cl, "/v1/rollback", json_object(), true);
    } else if (!strcmp(cmd, "wait")) {
        rc = sargc == 2 ? follow(&cl, sargv[1]) : 2;
    } else if (!strcmp(cmd, "status")) {
        rc = cmd_status(&cl, sargc > 1 && !strcmp(sargv[1], "--json"));
    } else if (!strcmp(cmd, "history")) {
        int n = 20;
        bool js = false;
        for (int i = 1; i < sargc; i++) {
            if (!strcmp(sargv[i], "--json"))
                js = true;
            else if (!strcmp(sargv[i], "-n") && i + 1 < sargc)
                n = atoi(sargv[++i]);
        }
        rc = cmd_history(&cl, n, js);
    } else {
        fprintf(stderr, "beava-control: unknown command '%s'\n", cmd);
        usage(stderr);
    }
    config_free(cl.cfg);
    for (int i = 0; i < cl.nsets; i++)
        free(cl.sets[i]);
    free(cl.sets);
    curl_global_cleanup();
    return rc;
}
