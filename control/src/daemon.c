/*
 * daemon.c — listeners, request routing, the queue and the worker thread.
 */
#include "daemon.h"
#include "deploy.h"
#include "dlog.h"
#include "releases.h"
#include "journal.h"
#include "oci.h"
#include "port_guard.h"
#include "runtime.h"
#include "state.h"
#include "trigger.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_KNOWN 200
#define MAX_LOCAL_BODY (1u << 20)

struct daemon {
    struct ctl_ctx ctx;
    pthread_cond_t cv;         /* queue changed / stop (with ctx.mu) */
    struct deploy *queue[256]; /* FIFO */
    size_t qhead, qlen;
    struct deploy *known[MAX_KNOWN]; /* recent deploys, for GET /v1/deploys/<id> */
    size_t nknown;
    struct deploy *running;
    bool stop;
    json_t *supervisor; /* deploy_supervise state */
    json_t *exits;      /* reaped children's wait statuses (worker thread only) */
    unsigned char *secret;
    size_t secret_len;
    struct trigger_seen *seen;
};

struct listener {
    struct daemon *dm;
    bool tcp;
};

struct req {
    char *body;
    size_t len;
    bool too_big;
    unsigned int status; /* the answer given, for the daemon log */
    char reason[256];
};

/* ---- responses -------------------------------------------------------------------------- */

static enum MHD_Result reply(struct req *rq, struct MHD_Connection *c, unsigned int status, json_t *body) {
    rq->status = status;
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(body);
    size_t n = strlen(text);
    text = ctl_realloc(text, n + 2);
    text[n++] = '\n';
    struct MHD_Response *r = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_err(struct req *rq, struct MHD_Connection *c, unsigned int status, const char *code,
                                 const char *msg) {
    snprintf(rq->reason, sizeof rq->reason, "%.40s: %.200s", code, msg); /* the log keeps the head */
    return reply(rq, c, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg));
}

/* ---- queue ------------------------------------------------------------------------------- */

static void remember(struct daemon *dm, struct deploy *d) {
    /* caller holds ctx.mu */
    if (dm->nknown == MAX_KNOWN) {
        /* drop the oldest finished one */
        for (size_t i = 0; i < dm->nknown; i++) {
            const char *st = json_string_value(json_object_get(dm->known[i]->rec, "status"));
            if (st && strcmp(st, "queued") && strcmp(st, "running")) {
                deploy_free(dm->known[i]);
                memmove(dm->known + i, dm->known + i + 1, (dm->nknown - i - 1) * sizeof *dm->known);
                dm->nknown--;
                break;
            }
        }
    }
    if (dm->nknown < MAX_KNOWN) dm->known[dm->nknown++] = d;
}

static int enqueue(struct daemon *dm, struct deploy *d, char *err) {
    pthread_mutex_lock(&dm->ctx.mu);
    if (dm->stop || dm->qlen == sizeof dm->queue / sizeof dm->queue[0] || dm->nknown == MAX_KNOWN) {
        pthread_mutex_unlock(&dm->ctx.mu);
        return ctl_errf(err, dm->stop ? "the daemon is shutting down" : "too many deploys queued");
    }
    dm->queue[(dm->qhead + dm->qlen++) % 256] = d;
    remember(dm, d);
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:s}", "event", "deploy.queued", "deploy", d->id, "kind", d->kind, "source", d->source);
    if (d->image) json_object_set_new(j, "image", json_string(d->image));
    if (d->revision) json_object_set_new(j, "revision", json_string(d->revision));
    if (d->manifests) json_object_set_new(j, "manifests", json_string(d->manifests));
    if (d->target) json_object_set_new(j, "target", json_string(d->target));
    pthread_cond_signal(&dm->cv);
    pthread_mutex_unlock(&dm->ctx.mu);
    char e2[CTL_ERR_LEN];
    journal_append(dm->ctx.journal, j, e2);
    json_decref(j);
    return 0;
}

static void *worker(void *arg) {
    struct daemon *dm = arg;
    pthread_mutex_lock(&dm->ctx.mu);
    while (!dm->stop) {
        if (dm->qlen) {
            struct deploy *d = dm->queue[dm->qhead];
            dm->qhead = (dm->qhead + 1) % 256;
            dm->qlen--;
            dm->running = d;
            pthread_mutex_unlock(&dm->ctx.mu);
            deploy_run(&dm->ctx, d);
            pthread_mutex_lock(&dm->ctx.mu);
            dm->running = NULL;
            continue;
        }
        pthread_mutex_unlock(&dm->ctx.mu);
        deploy_supervise(&dm->ctx, dm->supervisor, dm->exits);
        runtime_reap(dm->exits);
        if (json_object_size(dm->exits) > 64) json_object_clear(dm->exits);
        pthread_mutex_lock(&dm->ctx.mu);
        if (dm->stop || dm->qlen) continue;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&dm->cv, &dm->ctx.mu, &ts);
    }
    pthread_mutex_unlock(&dm->ctx.mu);
    return NULL;
}

/* ---- routes ------------------------------------------------------------------------------- */

static json_t *find_deploy(struct daemon *dm, const char *id) {
    json_t *out = NULL;
    pthread_mutex_lock(&dm->ctx.mu);
    for (size_t i = 0; i < dm->nknown; i++)
        if (!strcmp(dm->known[i]->id, id)) out = json_deep_copy(dm->known[i]->rec);
    pthread_mutex_unlock(&dm->ctx.mu);
    if (out) return out;
    char path[4096];
    snprintf(path, sizeof path, "%s/journal", dm->ctx.cfg->state_dir);
    json_t *recs = journal_read(path, NULL);
    json_t *hist = journal_history(recs, 1000000);
    size_t i;
    json_t *h;
    json_array_foreach(hist, i, h) {
        if (!strcmp(json_string_value(json_object_get(h, "id")), id)) {
            out = json_incref(h);
            break;
        }
    }
    json_decref(hist);
    json_decref(recs);
    return out;
}

static enum MHD_Result route_status(struct daemon *dm, struct req *r, struct MHD_Connection *c) {
    json_t *s = deploy_status(&dm->ctx);
    pthread_mutex_lock(&dm->ctx.mu);
    json_object_set_new(s, "deploying", dm->running ? json_string(dm->running->id) : json_null());
    if (dm->running) {
        json_t *rec = dm->running->rec;
        json_t *steps = json_object_get(rec, "steps");
        json_t *last = json_array_get(steps, json_array_size(steps) - 1);
        json_t *prog = json_pack("{s:O,s:O,s:O?,s:O?,s:O?,s:O?,s:I}", "id", json_object_get(rec, "id"), "kind",
                                 json_object_get(rec, "kind"), "image", json_object_get(rec, "image"), "started",
                                 json_object_get(rec, "started"), "last_step", json_object_get(last, "step"), "source",
                                 json_object_get(rec, "source"), "steps_done", (json_int_t)json_array_size(steps));
        json_int_t started = json_integer_value(json_object_get(rec, "started_ms"));
        json_object_set_new(prog, "elapsed_ms", json_integer(started ? ctl_now_ms() - started : 0));
        json_object_set_new(s, "deploy_in_progress", prog);
    }
    json_t *q = json_array();
    for (size_t i = 0; i < dm->qlen; i++) json_array_append_new(q, json_string(dm->queue[(dm->qhead + i) % 256]->id));
    json_object_set_new(s, "queue", q);
    if (json_is_true(json_object_get(dm->supervisor, "degraded")))
        json_object_set_new(s, "state", json_string("degraded"));
    json_object_set(s, "supervisor", dm->supervisor);
    pthread_mutex_unlock(&dm->ctx.mu);
    return reply(r, c, 200, s);
}

static enum MHD_Result route_history(struct daemon *dm, struct req *r, struct MHD_Connection *c) {
    const char *lim = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    long n = lim ? strtol(lim, NULL, 10) : 20;
    if (n <= 0 || n > 1000) n = 20;
    char path[4096];
    snprintf(path, sizeof path, "%s/journal", dm->ctx.cfg->state_dir);
    size_t skipped = 0;
    json_t *recs = journal_read(path, &skipped);
    json_t *hist = journal_history(recs, (size_t)n);
    json_decref(recs);
    return reply(r, c, 200, json_pack("{s:o,s:I}", "deploys", hist, "unreadable_lines", (json_int_t)skipped));
}

/* Validate a manifests name from a trigger: relative, below manifests.root. */
static char *trigger_manifests(struct daemon *dm, const char *name, char *err) {
    if (!*name || name[0] == '/' || strstr(name, "..") || strlen(name) > 200) {
        ctl_errf(err, "manifests must be a directory name below %s (no '/' prefix, no '..')",
                 dm->ctx.cfg->manifests_root);
        return NULL;
    }
    char *p = ctl_asprintf("%s/%s", dm->ctx.cfg->manifests_root, name);
    struct stat st;
    if (stat(p, &st) != 0) {
        ctl_errf(err, "manifests %s does not exist on this host", p);
        free(p);
        return NULL;
    }
    return p;
}

static enum MHD_Result route_post(struct daemon *dm, struct listener *l, struct MHD_Connection *c, const char *url,
                                  struct req *r) {
    char err[CTL_ERR_LEN];
    json_error_t je;
    json_t *body = r->len ? json_loadb(r->body, r->len, 0, &je) : json_object();
    if (!json_is_object(body)) {
        json_decref(body);
        return reply_err(r, c, 400, "bad_json", "the body must be a JSON object");
    }
    struct deploy *d = NULL;
    const char *image = json_string_value(json_object_get(body, "image"));
    const char *revision = json_string_value(json_object_get(body, "revision"));
    json_t *mj = json_object_get(body, "manifests");
    const char *manifests = json_string_value(mj);
    char *mpath = NULL;
    enum MHD_Result rc;
    if ((mj && !json_is_string(mj) && !json_is_null(mj)) || (json_object_get(body, "image") && !image) ||
        (json_object_get(body, "revision") && !revision && !json_is_null(json_object_get(body, "revision")))) {
        json_decref(body);
        return reply_err(r, c, 400, "bad_request", "image, revision and manifests must be strings");
    }
    if (manifests && *manifests) {
        if (l->tcp) {
            if (!(mpath = trigger_manifests(dm, manifests, err))) {
                json_decref(body);
                return reply_err(r, c, 400, "bad_manifests", err);
            }
        } else {
            if (manifests[0] != '/') {
                json_decref(body);
                return reply_err(r, c, 400, "bad_manifests", "manifests must be an absolute path");
            }
            mpath = ctl_strdup(manifests);
        }
    }
    if (!strcmp(url, "/v1/deploys")) {
        if (!image || !*image) {
            free(mpath);
            json_decref(body);
            return reply_err(r, c, 400, "bad_request", "image is required");
        }
        if (strcmp(dm->ctx.cfg->runtime_kind, "process") != 0 || strcmp(image, "local") != 0) {
            struct oci_ref ref;
            if (oci_parse_ref(image, &ref, err) < 0) {
                free(mpath);
                json_decref(body);
                return reply_err(r, c, 400, "bad_image", err);
            }
            const char *repo = dm->ctx.cfg->registry_repository;
            if ((l->tcp && !*repo) || (*repo && !oci_ref_in_repository(&ref, repo))) {
                snprintf(err, sizeof err, "image %s is outside the configured repository '%s'; refused", image, repo);
                free(mpath);
                json_decref(body);
                return reply_err(r, c, 403, "image_outside_repository", err);
            }
        }
        char src[200];
        const char *delivery = MHD_lookup_connection_value(c, MHD_HEADER_KIND, TRIGGER_HDR_DELIVERY);
        snprintf(src, sizeof src, "%s%s%s", l->tcp ? "trigger" : "cli", l->tcp ? ":" : "", l->tcp ? delivery : "");
        d = deploy_new("deploy", image, revision, mpath, src);
    } else if (!l->tcp && !strcmp(url, "/v1/apply")) {
        if (!mpath) {
            json_decref(body);
            return reply_err(r, c, 400, "bad_request", "manifests (an absolute path) is required");
        }
        d = deploy_new("apply", NULL, NULL, mpath, "cli");
        d->adopt = json_is_true(json_object_get(body, "adopt"));
        if (d->adopt) json_object_set_new(d->rec, "adopt", json_true());
    } else if (!l->tcp && !strcmp(url, "/v1/rollback")) {
        const char *to = json_string_value(json_object_get(body, "to"));
        char digest[80] = "";
        if (to && *to && releases_resolve(dm->ctx.cfg->state_dir, to, digest, err) < 0) {
            json_decref(body);
            return reply_err(r, c, 400, "unknown_release", err);
        }
        d = deploy_new("rollback", *digest ? digest : NULL, NULL, NULL, "cli");
        if (*digest) d->target = ctl_strdup(digest);
    } else if (!l->tcp && !strcmp(url, "/v1/restore")) {
        const char *id = json_string_value(json_object_get(body, "backup"));
        json_t *all = backups_list(dm->ctx.cfg->state_dir);
        bool found = false;
        size_t i;
        json_t *b;
        json_array_foreach(all, i, b) found = found ||
            (id && !strcmp(json_string_value(json_object_get(b, "id")), id) &&
             json_is_true(json_object_get(b, "exists")));
        json_decref(all);
        if (!found) {
            snprintf(err, CTL_ERR_LEN, "no backup '%s' on disk (see `beava-control backups`)", id ? id : "");
            json_decref(body);
            return reply_err(r, c, 400, "unknown_backup", err);
        }
        d = deploy_new("restore", NULL, NULL, NULL, "cli");
        d->target = ctl_strdup(id);
        json_object_set_new(d->rec, "backup", json_string(id));
    } else {
        free(mpath);
        json_decref(body);
        return reply_err(r, c, 404, "not_found", "no such route");
    }
    free(mpath);
    json_decref(body);
    if (enqueue(dm, d, err) < 0) {
        deploy_free(d);
        return reply_err(r, c, 503, "unavailable", err);
    }
    if (l->tcp && d->image) {
        /* remembered only once queued: a refused trigger does not block a corrected one */
        const char *delivery = MHD_lookup_connection_value(c, MHD_HEADER_KIND, TRIGGER_HDR_DELIVERY);
        pthread_mutex_lock(&dm->ctx.mu);
        int x = trigger_seen_body_add(dm->seen, d->image, d->revision, delivery, ctl_now_ms() / 1000, err);
        pthread_mutex_unlock(&dm->ctx.mu);
        if (x < 0) { /* the deploy is queued already; say why a replay of it may pass */
            json_t *j = json_pack("{s:s,s:s}", "kind", "control.replay_guard_error", "message", err);
            char *t = json_dumps(j, JSON_COMPACT);
            fprintf(stdout, "%s\n", t);
            fflush(stdout);
            free(t);
            json_decref(j);
        }
    }
    char loc[128];
    snprintf(loc, sizeof loc, "/v1/deploys/%s", d->id);
    rc = reply(r, c, 202, json_pack("{s:s,s:s,s:s}", "id", d->id, "status", "queued", "url", loc));
    return rc;
}

/* Image and revision of a trigger body (borrowed from *doc, which the caller frees). */
static void body_image_revision(const struct req *r, json_t **doc, const char **image, const char **revision) {
    *doc = r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    *image = json_string_value(json_object_get(*doc, "image"));
    *revision = json_string_value(json_object_get(*doc, "revision"));
}

/* Was this image + revision deployed from another delivery within the replay window? */
static bool replayed_body(struct daemon *dm, const struct req *r, int64_t now, char *err) {
    json_t *doc;
    const char *image, *revision;
    body_image_revision(r, &doc, &image, &revision);
    pthread_mutex_lock(&dm->ctx.mu);
    int x =
        image ? trigger_seen_body_check(dm->seen, image, revision, now, dm->ctx.cfg->trigger_replay_window_s, err) : 0;
    pthread_mutex_unlock(&dm->ctx.mu);
    json_decref(doc);
    return x < 0;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    struct listener *l = cls;
    struct daemon *dm = l->dm;
    (void)version;
    struct req *r = *con_cls;
    if (!r) {
        r = ctl_calloc(1, sizeof *r);
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t cap = l->tcp ? (size_t)dm->ctx.cfg->trigger_max_body : MAX_LOCAL_BODY;
        if (r->len + *upload_size > cap) {
            r->too_big = true;
        } else {
            r->body = ctl_realloc(r->body, r->len + *upload_size + 1);
            memcpy(r->body + r->len, upload, *upload_size);
            r->len += *upload_size;
            r->body[r->len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (l->tcp) port_guard_request_read(c);
    if (r->too_big) return reply_err(r, c, 413, "body_too_large", "request body over the limit");
    bool post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
    if (l->tcp) {
        char err[CTL_ERR_LEN];
        const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, TRIGGER_HDR_TS);
        const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, TRIGGER_HDR_SIG);
        const char *del = MHD_lookup_connection_value(c, MHD_HEADER_KIND, TRIGGER_HDR_DELIVERY);
        int64_t now = ctl_now_ms() / 1000, window = dm->ctx.cfg->trigger_replay_window_s;
        const struct trigger_req tr = { .method = method,
                                        .path = url,
                                        .timestamp = ts,
                                        .delivery = del,
                                        .body = r->body ? r->body : "",
                                        .body_len = r->len };
        if (trigger_verify(dm->secret, dm->secret_len, &tr, sig, now, window, err) < 0)
            return reply_err(r, c, 401, "unauthorized", err);
        if (post) {
            pthread_mutex_lock(&dm->ctx.mu);
            int x = trigger_seen_check_add(dm->seen, del, now, window, err);
            pthread_mutex_unlock(&dm->ctx.mu);
            if (x < 0) return reply_err(r, c, 401, "unauthorized", err);
            if (replayed_body(dm, r, now, err)) return reply_err(r, c, 409, "replayed_trigger", err);
        }
    }
    if (get && !strcmp(url, "/v1/status")) return route_status(dm, r, c);
    if (get && !strcmp(url, "/v1/history")) return route_history(dm, r, c);
    if (post && !l->tcp && !strcmp(url, "/v1/manifests/diff")) {
        char err[CTL_ERR_LEN];
        json_t *body = r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
        const char *dir = json_string_value(json_object_get(body, "manifests"));
        json_t *out = dir && dir[0] == '/' ? deploy_manifests_diff(&dm->ctx, dir, err) : NULL;
        if (!dir || dir[0] != '/') snprintf(err, sizeof err, "manifests (an absolute path) is required");
        json_decref(body);
        return out ? reply(r, c, 200, out) : reply_err(r, c, 400, "diff_failed", err);
    }
    if (get && !l->tcp && !strcmp(url, "/v1/releases"))
        return reply(r, c, 200, json_pack("{s:o}", "releases", releases_list(dm->ctx.cfg->state_dir)));
    if (get && !l->tcp && !strcmp(url, "/v1/backups"))
        return reply(r, c, 200, json_pack("{s:o}", "backups", backups_list(dm->ctx.cfg->state_dir)));
    if (get && !strncmp(url, "/v1/deploys/", 12)) {
        json_t *d = find_deploy(dm, url + 12);
        if (!d) return reply_err(r, c, 404, "not_found", "no such deploy");
        return reply(r, c, 200, d);
    }
    if (post && !strncmp(url, "/v1/", 4)) return route_post(dm, l, c, url, r);
    if (!strncmp(url, "/v1/", 4)) return reply_err(r, c, 405, "method_not_allowed", "wrong method or unknown route");
    return reply_err(r, c, 404, "not_found", "no such route");
}

/* One daemon-log line per request on the control port: the CI trigger audit trail. */
static void audit(struct MHD_Connection *c, const struct req *r) {
    char addr[INET6_ADDRSTRLEN + 8] = "?";
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *sa = (const struct sockaddr_in *)ci->client_addr;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof ip);
        snprintf(addr, sizeof addr, "%s:%u", ip, ntohs(sa->sin_port));
    }
    const char *delivery = MHD_lookup_connection_value(c, MHD_HEADER_KIND, TRIGGER_HDR_DELIVERY);
    bool ok = r->status >= 200 && r->status < 300;
    dlog(ok ? "trigger.accepted" : "trigger.rejected",
         json_pack("{s:i,s:s,s:s,s:s?}", "status", (int)r->status, "reason",
                   r->reason[0] ? r->reason : (ok ? "ok" : "?"), "remote_addr", addr, "delivery", delivery));
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t) {
    (void)t;
    if (cls) /* the control port: the next request on this connection gets a fresh deadline */
        port_guard_request_done(c);
    struct req *r = *con_cls;
    if (cls && r && r->status) /* only the control port has a guard: the CI trigger audit */
        audit(c, r);
    if (r) {
        free(r->body);
        free(r);
    }
    *con_cls = NULL;
}

/* ---- listeners ---------------------------------------------------------------------------- */

static int unix_listener(const struct ctl_config *cfg, int *fd_out, char *err) {
    const char *path = config_socket(cfg);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) return ctl_errf(err, "socket path %s is too long", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ctl_errf(err, "socket: %s", strerror(errno));
    unlink(path);
    mode_t old = umask(0117);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0 || chmod(path, 0660) < 0) {
        close(fd);
        return ctl_errf(err, "bind %s: %s", path, strerror(errno));
    }
    if (*cfg->socket_group) {
        struct group *g = getgrnam(cfg->socket_group);
        if (!g || chown(path, (uid_t)-1, g->gr_gid) < 0) {
            close(fd);
            return ctl_errf(err, "socket_group %s: %s", cfg->socket_group, g ? strerror(errno) : "no such group");
        }
    }
    if (listen(fd, 64) < 0) {
        close(fd);
        return ctl_errf(err, "listen %s: %s", path, strerror(errno));
    }
    *fd_out = fd;
    return 0;
}

static int parse_addr(const char *addr, struct sockaddr_in *sa, char *err) {
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return ctl_errf(err, "listen_addr '%s': expected IP:PORT", addr);
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    long port = strtol(colon + 1, NULL, 10);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1 || port <= 0 || port > 65535)
        return ctl_errf(err, "listen_addr '%s': expected IPv4:PORT", addr);
    sa->sin_port = htons((uint16_t)port);
    return 0;
}

int daemon_serve(struct ctl_config *cfg, char *err) {
    struct daemon *dm = ctl_calloc(1, sizeof *dm);
    struct listener lu = { .dm = dm, .tcp = false }, lt = { .dm = dm, .tcp = true };
    struct MHD_Daemon *mu = NULL, *mt = NULL;
    struct port_guard *guard = NULL;
    int lockfd = -1, ufd = -1, rc = -1;
    pthread_t wt;
    bool worker_started = false;
    dm->ctx.cfg = cfg;
    listeners_init(&dm->ctx.listeners);
    dm->supervisor = json_object();
    dm->exits = json_object();
    pthread_mutex_init(&dm->ctx.mu, NULL);
    pthread_cond_init(&dm->cv, NULL);
    if (state_init(cfg->state_dir, err) < 0 || state_lock(cfg->state_dir, &lockfd, err) < 0) goto out;
    char *jp = ctl_asprintf("%s/journal", cfg->state_dir);
    int x = journal_open(jp, &dm->ctx.journal, err);
    free(jp);
    if (x < 0) goto out;
    if (*cfg->admin_token_file) {
        size_t len;
        if (ctl_read_file(cfg->admin_token_file, 4096, &dm->ctx.token, &len, err) < 0) goto out;
        while (len && (dm->ctx.token[len - 1] == '\n' || dm->ctx.token[len - 1] == '\r')) dm->ctx.token[--len] = 0;
    }
    if (*cfg->listen_addr) {
        char *s = NULL;
        size_t len = 0;
        if (ctl_read_file(cfg->trigger_secret_file, 4096, &s, &len, err) < 0) {
            ctl_errf(err, "listen_addr is set but the trigger secret cannot be read: %s", err);
            goto out;
        }
        while (len && (s[len - 1] == '\n' || s[len - 1] == '\r')) s[--len] = 0;
        if (len < 16) {
            free(s);
            ctl_errf(err, "%s: the trigger secret must be at least 16 bytes", cfg->trigger_secret_file);
            goto out;
        }
        dm->secret = (unsigned char *)s;
        dm->secret_len = len;
        char *sp = ctl_asprintf("%s/deliveries.json", cfg->state_dir);
        x = trigger_seen_open(sp, &dm->seen, err);
        free(sp);
        if (x < 0) goto out;
    }
    /* Signals are taken by sigwait below; every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (notify_start(cfg, &dm->ctx.notifier, err) < 0) goto out;
    dlog("control.recovering", NULL);
    deploy_hold_listeners(&dm->ctx);
    deploy_recover(&dm->ctx);

    if (unix_listener(cfg, &ufd, err) < 0) goto out;
    mu = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, handler, &lu, MHD_OPTION_LISTEN_SOCKET, ufd,
                          MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60,
                          MHD_OPTION_END);
    if (!mu) {
        ctl_errf(err, "cannot serve the unix socket %s", config_socket(cfg));
        goto out;
    }
    ufd = -1;
    if (*cfg->listen_addr) {
        struct sockaddr_in sa;
        if (parse_addr(cfg->listen_addr, &sa, err) < 0) goto out;
        /* A request must be read within trigger.request_deadline_s (port_guard), no
         * address may hold more than trigger.max_connections_per_ip, so a flood of
         * half-sent requests from one address cannot keep a signed trigger out. */
        if (!(guard = port_guard_new(cfg->trigger_request_deadline_s * 1000))) {
            ctl_errf(err, "cannot start the control port's deadline thread");
            goto out;
        }
        mt = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, handler, &lt, MHD_OPTION_SOCK_ADDR,
                              (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, completed, guard,
                              MHD_OPTION_NOTIFY_CONNECTION, port_guard_notify, guard, MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned int)cfg->trigger_request_deadline_s, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned int)cfg->trigger_max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                              (unsigned int)cfg->trigger_max_connections_per_ip, MHD_OPTION_END);
        if (!mt) {
            ctl_errf(err, "cannot listen on %s (in use?)", cfg->listen_addr);
            goto out;
        }
    }
    if (pthread_create(&wt, NULL, worker, dm) != 0) {
        ctl_errf(err, "cannot start the worker thread");
        goto out;
    }
    worker_started = true;
    dlog("control.ready",
         json_pack("{s:s,s:s,s:s}", "socket", config_socket(cfg), "listen_addr", cfg->listen_addr, "runtime",
                   cfg->runtime_kind));
    int sig = 0;
    sigwait(&set, &sig);
    dlog("control.stopping", json_pack("{s:i}", "signal", sig));
    rc = 0;
out:
    if (mt) MHD_stop_daemon(mt);
    port_guard_free(guard);
    if (mu) MHD_stop_daemon(mu);
    if (ufd >= 0) close(ufd);
    pthread_mutex_lock(&dm->ctx.mu);
    dm->stop = true;
    pthread_cond_broadcast(&dm->cv);
    pthread_mutex_unlock(&dm->ctx.mu);
    if (worker_started) pthread_join(wt, NULL);
    if (rc == 0) unlink(config_socket(cfg));
    for (size_t i = 0; i < dm->nknown; i++) deploy_free(dm->known[i]);
    journal_close(dm->ctx.journal);
    trigger_seen_close(dm->seen);
    json_decref(dm->supervisor);
    json_decref(dm->exits);
    listeners_close(&dm->ctx.listeners);
    notify_stop(dm->ctx.notifier);
    free(dm->secret);
    free(dm->ctx.token);
    if (lockfd >= 0) close(lockfd);
    pthread_mutex_destroy(&dm->ctx.mu);
    pthread_cond_destroy(&dm->cv);
    free(dm);
    return rc;
}
