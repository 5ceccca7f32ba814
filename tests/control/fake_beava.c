/*
 * fake_beava.c — a stand-in for the beava server, for testing beava-control before (and
 * independently of) the real server. It speaks the contract beava-control relies on:
 * BEAVA_LISTEN_ADDR / BEAVA_ADMIN_ADDR, --data-dir, admin GET /ready /registry,
 * POST /snapshot, data POST /ping /register (dry_run, force, 409 force_required) /get /push.
 * State (registry nodes, version, per-table event counts) persists in DATA/fake-state.json,
 * so a recreated server "keeps its data". It is deliberately simple: the diff treats any
 * changed descriptor as destructive, and every table has one feature `count`.
 * FAKE_BEAVA_READY_AFTER_MS delays readiness. FAKE_BEAVA_CLUSTER_NODE=<id> makes it a cluster
 * node answering admin GET /cluster (otherwise 404, as a single server): it owns partitions 0
 * and 2 of 4, each FAKE_BEAVA_CLUSTER_LAG (default 0) stream sequences behind at start, and
 * each GET /cluster applies FAKE_BEAVA_CLUSTER_STEP (default 1; 0 = stuck) more per partition.
 */
#include <jansson.h>
#include <microhttpd.h>
#include <systemd/sd-daemon.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static json_t *st;          /* {"version":N,"nodes":[...],"counts":{}} */
static char statepath[4200], datadir[4096];
static long long ready_at;
static volatile sig_atomic_t stop_flag;
static const char *cl_node;           /* FAKE_BEAVA_CLUSTER_NODE, or NULL: not a cluster node */
static long long cl_applied, cl_step; /* per owned partition; the stream is at CL_STREAM_LAST */
#define CL_STREAM_LAST 1000

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

static void save(void)
{
    json_dump_file(st, statepath, JSON_COMPACT);
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned code, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static json_t *find(json_t *nodes, const char *name)
{
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n) if (!strcmp(json_string_value(json_object_get(n, "name")), name)) return n;
    return NULL;
}

static json_t *diff(json_t *payload)
{
    json_t *add = json_array(), *des = json_array(), *same = json_array();
    json_t *cur = json_object_get(st, "nodes");
    size_t i;
    json_t *n;
    json_array_foreach(payload, i, n) {
        const char *name = json_string_value(json_object_get(n, "name"));
        json_t *o = find(cur, name);
        if (!o)
            json_array_append_new(add, json_pack("{s:s,s:s,s:s}", "kind", "new_descriptor", "descriptor_kind",
                                                 json_string_value(json_object_get(n, "kind")), "name", name));
        else if (!json_equal(o, n))
            json_array_append_new(des, json_pack("{s:s,s:s}", "kind", "descriptor_change", "name", name));
        else
            json_array_append_new(same, json_string(name));
    }
    json_array_foreach(cur, i, n) {
        const char *name = json_string_value(json_object_get(n, "name"));
        if (!find(payload, name))
            json_array_append_new(des, json_pack("{s:s,s:s,s:s}", "kind", "agg_removal", "table", name, "agg", ""));
    }
    return json_pack("{s:o,s:o,s:o}", "additive", add, "destructive", des, "already_present", same);
}

static enum MHD_Result data_route(struct MHD_Connection *c, const char *url, json_t *body)
{
    if (!strcmp(url, "/ping"))
        return send_json(c, 200, json_pack("{s:b,s:O}", "pong", 1, "registry_version", json_object_get(st, "version")));
    if (!strcmp(url, "/register")) {
        json_t *nodes = json_object_get(body, "nodes");
        if (!json_is_array(nodes))
            return send_json(c, 400, json_pack("{s:{s:s}}", "error", "code", "invalid_registration"));
        json_t *d = diff(nodes);
        if (json_is_true(json_object_get(body, "dry_run")))
            return send_json(c, 200, json_pack("{s:o,s:b}", "diff", d, "would_apply", 0));
        bool destructive = json_array_size(json_object_get(d, "destructive")) > 0;
        if (destructive && !json_is_true(json_object_get(body, "force")))
            return send_json(c, 409, json_pack("{s:{s:s,s:o},s:O}", "error", "code", "force_required", "diff", d,
                                               "registry_version", json_object_get(st, "version")));
        bool changed = destructive || json_array_size(json_object_get(d, "additive")) > 0;
        if (changed) {
            json_t *counts = json_object_get(st, "counts");
            size_t i;
            json_t *e;
            json_array_foreach(json_object_get(d, "destructive"), i, e) {
                const char *nm = json_string_value(json_object_get(e, "name"));
                if (!nm)
                    nm = json_string_value(json_object_get(e, "table"));
                json_object_del(counts, nm);
            }
            json_object_set(st, "nodes", nodes);
            json_object_set_new(st, "version", json_integer(json_integer_value(json_object_get(st, "version")) + 1));
            save();
        }
        json_t *added = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(d, "additive"), i, e) json_array_append(added, json_object_get(e, "name"));
        json_t *r = json_pack("{s:o,s:O,s:O,s:s}", "added", added, "already_present",
                              json_object_get(d, "already_present"), "registry_version", json_object_get(st, "version"),
                              "status", "ok");
        json_decref(d);
        return send_json(c, 200, r);
    }
    if (!strcmp(url, "/get")) {
        const char *t = json_string_value(json_object_get(body, "table"));
        json_t *n = t ? find(json_object_get(st, "nodes"), t) : NULL;
        if (!n || strcmp(json_string_value(json_object_get(n, "kind")), "derivation"))
            return send_json(c, 404, json_pack("{s:{s:s}}", "error", "code", "unknown_table"));
        json_t *cnt = json_object_get(json_object_get(st, "counts"), t);
        return send_json(c, 200, cnt ? json_pack("{s:O}", "count", cnt) : json_object());
    }
    if (!strncmp(url, "/push", 5)) {
        const char *ev = !strncmp(url, "/push/", 6) ? url + 6 : json_string_value(json_object_get(body, "event"));
        if (!ev || !find(json_object_get(st, "nodes"), ev))
            return send_json(c, 404, json_pack("{s:{s:s}}", "error", "code", "event_not_found"));
        size_t i;
        json_t *n;
        json_t *counts = json_object_get(st, "counts");
        json_array_foreach(json_object_get(st, "nodes"), i, n) {
            const char *up = json_string_value(json_array_get(json_object_get(n, "upstreams"), 0));
            if (up && !strcmp(up, ev)) {
                const char *name = json_string_value(json_object_get(n, "name"));
                json_object_set_new(counts, name, json_integer(json_integer_value(json_object_get(counts, name)) + 1));
            }
        }
        save();
        return send_json(c, 200, json_pack("{s:i,s:O}", "ack_lsn", 1, "registry_version", json_object_get(st, "version")));
    }
    return send_json(c, 404, json_pack("{s:{s:s}}", "error", "code", "not_found"));
}

static enum MHD_Result admin_route(struct MHD_Connection *c, const char *url)
{
    if (!strcmp(url, "/ready")) {
        if (now_ms() < ready_at)
            return send_json(c, 503, json_pack("{s:s}", "status", "recovering"));
        return send_json(c, 200, json_pack("{s:s}", "status", "ready"));
    }
    if (!strcmp(url, "/cluster") && cl_node) {
        json_t *own = json_array();
        for (int p = 0; p < 4; p++) {
            json_t *e = json_pack("{s:i,s:[s]}", "partition", p, "owners", p % 2 ? "other" : cl_node);
            if (p % 2 == 0) {
                json_object_set_new(e, "applied", json_integer(cl_applied));
                json_object_set_new(e, "stream", json_integer(CL_STREAM_LAST));
                json_object_set_new(e, "lag", json_integer(CL_STREAM_LAST - cl_applied));
            }
            json_array_append_new(own, e);
        }
        json_t *r = json_pack("{s:s,s:{s:i,s:i},s:b,s:o}", "node", cl_node, "registry", "applied", 1, "stream", 1,
                              "caught_up", cl_applied >= CL_STREAM_LAST, "ownership", own);
        cl_applied = cl_applied + cl_step > CL_STREAM_LAST ? CL_STREAM_LAST : cl_applied + cl_step;
        return send_json(c, 200, r);
    }
    if (!strcmp(url, "/registry"))
        return send_json(c, 200, json_pack("{s:O,s:I}", "version", json_object_get(st, "version"), "node_count",
                                           (json_int_t)json_array_size(json_object_get(st, "nodes"))));
    if (!strcmp(url, "/snapshot")) {
        char dir[4200], path[4400];
        snprintf(dir, sizeof dir, "%s/snapshots", datadir);
        mkdir(dir, 0755);
        long long v = json_integer_value(json_object_get(st, "version"));
        snprintf(path, sizeof path, "%s/snap-%lld.json", dir, v);
        json_dump_file(st, path, JSON_COMPACT);
        return send_json(c, 200, json_pack("{s:I,s:s}", "lsn", (json_int_t)v, "path", path));
    }
    return send_json(c, 404, json_object());
}

struct body {
    char *p;
    size_t n;
};

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *ver, const char *up, size_t *upsz, void **cc)
{
    (void)ver;
    (void)method;
    struct body *b = *cc;
    if (!b) {
        *cc = calloc(1, sizeof *b);
        return MHD_YES;
    }
    if (*upsz) {
        b->p = realloc(b->p, b->n + *upsz + 1);
        memcpy(b->p + b->n, up, *upsz);
        b->n += *upsz;
        b->p[b->n] = 0;
        *upsz = 0;
        return MHD_YES;
    }
    json_t *body = b->n ? json_loadb(b->p, b->n, 0, NULL) : NULL;
    pthread_mutex_lock(&mu);
    enum MHD_Result rc = cls ? admin_route(c, url) : data_route(c, url, body);
    pthread_mutex_unlock(&mu);
    json_decref(body);
    return rc;
}

static void done(void *cls, struct MHD_Connection *c, void **cc, enum MHD_RequestTerminationCode t)
{
    (void)cls;
    (void)c;
    (void)t;
    struct body *b = *cc;
    if (b)
        free(b->p);
    free(b);
}

/* A listening socket passed the systemd way (LISTEN_FDS/LISTEN_FDNAMES), as beava-control
 * passes them: the inherited socket called name, or -1. */
static int inherited(const char *name)
{
    char **names = NULL;
    int n = sd_listen_fds_with_names(0, &names), fd = -1;
    for (int i = 0; i < n; i++) {
        if (fd < 0 && names && names[i] && !strcmp(names[i], name))
            fd = SD_LISTEN_FDS_START + i;
        if (names)
            free(names[i]);
    }
    free(names);
    return fd;
}

static struct MHD_Daemon *listen_on(const char *addr, void *cls, const char *name)
{
    int fd = inherited(name);
    if (fd >= 0)
        return MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC, 0, NULL, NULL, handler, cls, MHD_OPTION_LISTEN_SOCKET,
                                fd, MHD_OPTION_NOTIFY_COMPLETED, done, NULL, MHD_OPTION_END);
    char host[64];
    const char *colon = strrchr(addr, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    return MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, handler, cls, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_NOTIFY_COMPLETED, done, NULL, MHD_OPTION_END);
}

static void on_term(int s)
{
    (void)s;
    stop_flag = 1;
}

int main(int argc, char **argv)
{
    snprintf(datadir, sizeof datadir, ".");
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--data-dir"))
            snprintf(datadir, sizeof datadir, "%s", argv[i + 1]);
    if (argc > 1 && !strcmp(argv[1], "--version")) {
        printf("fake-beava 0\n");
        return 0;
    }
    snprintf(statepath, sizeof statepath, "%s/fake-state.json", datadir);
    st = json_load_file(statepath, 0, NULL);
    if (!st)
        st = json_pack("{s:i,s:[],s:{}}", "version", 0, "nodes", "counts");
    const char *ra = getenv("FAKE_BEAVA_READY_AFTER_MS");
    ready_at = now_ms() + (ra ? atoll(ra) : 300);
    cl_node = getenv("FAKE_BEAVA_CLUSTER_NODE");
    const char *lag = getenv("FAKE_BEAVA_CLUSTER_LAG"), *step = getenv("FAKE_BEAVA_CLUSTER_STEP");
    cl_applied = CL_STREAM_LAST - (lag ? atoll(lag) : 0);
    cl_step = step ? atoll(step) : 1;
    const char *la = getenv("BEAVA_LISTEN_ADDR") ? getenv("BEAVA_LISTEN_ADDR") : "127.0.0.1:8080";
    const char *aa = getenv("BEAVA_ADMIN_ADDR") ? getenv("BEAVA_ADMIN_ADDR") : "127.0.0.1:8090";
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    struct MHD_Daemon *d = listen_on(la, NULL, "http"), *a = listen_on(aa, (void *)1, "admin");
    if (!d || !a) {
        /* the server's shape of a start failure: a JSON line at level error, then stderr */
        printf("{\"kind\":\"server.start_failed\",\"level\":\"error\",\"msg\":\"cannot listen on %s / %s\"}\n", la, aa);
        fflush(stdout);
        fprintf(stderr, "fake-beava: cannot listen on %s / %s\n", la, aa);
        return 1;
    }
    printf("{\"kind\":\"server.http_bound\",\"addr\":\"%s\"}\n{\"kind\":\"server.admin_bound\",\"addr\":\"%s\"}\n", la, aa);
    fflush(stdout);
    while (!stop_flag)
        usleep(50000);
    /* quiesce first: stopping a daemon shuts its listening socket down, and an inherited
     * one is shared with the supervisor and the next server */
    MHD_socket ld = MHD_quiesce_daemon(d), la2 = MHD_quiesce_daemon(a);
    MHD_stop_daemon(d);
    MHD_stop_daemon(a);
    if (ld != MHD_INVALID_SOCKET)
        close(ld);
    if (la2 != MHD_INVALID_SOCKET)
        close(la2);
    pthread_mutex_lock(&mu);
    save();
    json_decref(st);
    return 0;
}
