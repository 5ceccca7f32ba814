/*
 * deploy.c — the deploy pipeline, manifest application, verification, rollback, recovery.
 *
 * Every step goes through step_done(), which appends it to the live record (for
 * GET /v1/deploys/<id> and the CLI's progress) and to the fsync'd journal before the next
 * step starts, so the journal always shows how far a deploy got. Recovery after a crash
 * reads exactly those step records.
 */
#include "deploy.h"
#include "beava_api.h"
#include "dlog.h"
#include "manifest.h"
#include "oci.h"
#include "releases.h"
#include "runtime.h"
#include "state.h"
#include "unpack.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GIB (1024.0 * 1024.0 * 1024.0)
#define INSTANCE_EXIT_WAIT_MS 1000 /* how long a dead instance's processes may take to end */

/* ---- records -------------------------------------------------------------------------- */

struct deploy *deploy_new(const char *kind, const char *image, const char *revision, const char *manifests,
                          const char *source) {
    struct deploy *d = ctl_calloc(1, sizeof *d);
    char ts[40];
    int64_t now = ctl_now_ms();
    ctl_iso_time(now, ts, sizeof ts);
    unsigned int rnd = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &rnd, sizeof rnd) != sizeof rnd) rnd = (unsigned)now;
        close(fd);
    }
    /* d-20250101T120000-1a2b3c */
    snprintf(d->id, sizeof d->id, "d-%.4s%.2s%.2sT%.2s%.2s%.2s-%06x", ts, ts + 5, ts + 8, ts + 11, ts + 14, ts + 17,
             rnd & 0xffffff);
    snprintf(d->kind, sizeof d->kind, "%s", kind);
    d->image = image && *image ? ctl_strdup(image) : NULL;
    d->revision = revision && *revision ? ctl_strdup(revision) : NULL;
    d->manifests = manifests && *manifests ? ctl_strdup(manifests) : NULL;
    d->source = ctl_strdup(source ? source : "cli");
    d->rec =
        json_pack("{s:s,s:s,s:s,s:s,s:[]}", "id", d->id, "kind", kind, "status", "queued", "queued_at", ts, "steps");
    if (d->image) json_object_set_new(d->rec, "image", json_string(d->image));
    if (d->revision) json_object_set_new(d->rec, "revision", json_string(d->revision));
    if (d->manifests) json_object_set_new(d->rec, "manifests", json_string(d->manifests));
    json_object_set_new(d->rec, "source", json_string(d->source));
    return d;
}

void deploy_free(struct deploy *d) {
    if (!d) return;
    free(d->image);
    free(d->revision);
    free(d->manifests);
    free(d->source);
    free(d->target);
    json_decref(d->rec);
    free(d);
}

static void journal_rec(struct ctl_ctx *ctx, json_t *rec) {
    char err[CTL_ERR_LEN];
    if (journal_append(ctx->journal, rec, err) < 0)
        fprintf(stderr, "{\"kind\":\"control.journal_error\",\"error\":\"%s\"}\n", err);
}

/* Record one finished step. detail is consumed (may be NULL). */
static void step_done(struct ctl_ctx *ctx, struct deploy *d, const char *name, int64_t t0, bool ok, const char *msg,
                      json_t *detail) {
    json_t *s = json_pack("{s:s,s:b,s:I}", "step", name, "ok", ok, "ms", (json_int_t)(ctl_mono_ms() - t0));
    if (msg) json_object_set_new(s, "message", json_string(msg));
    if (detail) json_object_set_new(s, "detail", detail);
    pthread_mutex_lock(&ctx->mu);
    json_array_append(json_object_get(d->rec, "steps"), s);
    pthread_mutex_unlock(&ctx->mu);
    json_t *j = json_deep_copy(s);
    json_object_set_new(j, "event", json_string("step"));
    json_object_set_new(j, "deploy", json_string(d->id));
    journal_rec(ctx, j);
    json_decref(j);
    json_t *l = json_deep_copy(s);
    json_object_del(json_object_get(l, "detail"), "log_tail");
    json_object_set_new(l, "deploy", json_string(d->id));
    dlog("deploy.step", l);
    json_decref(s);
}

static void deploy_end(struct ctl_ctx *ctx, struct deploy *d, const char *status, const char *msg, json_t *extra) {
    char ts[40];
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    pthread_mutex_lock(&ctx->mu);
    json_object_set_new(d->rec, "status", json_string(status));
    json_object_set_new(d->rec, "message", json_string(msg));
    json_object_set_new(d->rec, "ended", json_string(ts));
    if (extra) json_object_update(d->rec, extra);
    notify_deploy(ctx->notifier, d->rec);
    pthread_mutex_unlock(&ctx->mu);
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:s}", "event", "deploy.end", "deploy", d->id, "status", status, "message", msg);
    if (extra) json_object_update(j, extra);
    journal_rec(ctx, j);
    json_t *l = json_deep_copy(j);
    json_object_del(l, "event");
    json_object_set_new(l, "deploy_kind", json_string(d->kind));
    json_object_set_new(l, "source", json_string(d->source));
    dlog("deploy.end", l);
    json_decref(j);
    json_decref(extra);
}

/* ---- runtime helpers ------------------------------------------------------------------ */

static struct beava_ep endpoint(struct ctl_ctx *ctx) {
    struct beava_ep ep = { .http_addr = ctx->cfg->runtime_http_addr,
                           .admin_addr = ctx->cfg->runtime_admin_addr,
                           .token = ctx->token };
    return ep;
}

static char *image_dir(struct ctl_ctx *ctx, const char *digest) {
    return ctl_asprintf("%s/images/%s", ctx->cfg->state_dir, digest + 7);
}

void deploy_hold_listeners(struct ctl_ctx *ctx) {
    struct ctl_config *cfg = ctx->cfg;
    if (!cfg->hold_sockets || !strcmp(cfg->runtime_kind, "systemd")) return;
    bool all = true;
    for (int i = 0; i < LISTENERS_N; i++) all = all && ctx->listeners.fd[i] >= 0;
    if (all) return;
    json_t *inst = state_load(cfg->state_dir, "instance");
    json_t *report = listeners_acquire(&ctx->listeners, cfg, inst);
    dlog("server.listeners", report);
    json_decref(inst);
}

/* The image's version and revision labels, for the journal (NULL when unknown). */
static json_t *release_labels(struct ctl_ctx *ctx, const char *digest) {
    char *dir = image_dir(ctx, digest);
    json_t *img = state_load(dir, "image");
    free(dir);
    json_t *lb = json_object_get(json_object_get(json_object_get(img, "config"), "config"), "Labels");
    json_t *out = NULL;
    if (json_is_object(lb)) {
        out = json_object();
        const char *keys[] = { "org.opencontainers.image.version", "org.opencontainers.image.revision", NULL };
        for (int i = 0; keys[i]; i++)
            if (json_is_string(json_object_get(lb, keys[i])))
                json_object_set(out, keys[i], json_object_get(lb, keys[i]));
    }
    json_decref(img);
    return out;
}

/* Start the release `digest` with the configured runtime; saves instance.json. *detail
 * (optional, caller owns) gets {pid, log, env_overrides}; each override is logged. */
static int start_release(struct ctl_ctx *ctx, const char *digest, const char *deploy_id, json_t **detail, char *err) {
    struct ctl_config *cfg = ctx->cfg;
    char *dir = image_dir(ctx, digest);
    char *rootfs = NULL, *binary = NULL;
    json_t *imgjs = NULL;
    int rc = -1;
    char ts[40];
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    char *log = ctl_asprintf("%s/logs/%s-%.19s.log", cfg->state_dir, deploy_id, digest + 7);
    if (!strcmp(cfg->runtime_kind, "process")) {
        binary = ctl_asprintf("%s/beava", dir);
        if (access(binary, X_OK) != 0) {
            ctl_errf(err, "release %s is not in the image store (%s)", digest, binary);
            goto out;
        }
    } else {
        rootfs = ctl_asprintf("%s/rootfs", dir);
        char *ij = ctl_asprintf("%s/image.json", dir);
        char *text = NULL;
        size_t len;
        if (ctl_read_file(ij, 16u << 20, &text, &len, err) < 0) {
            free(ij);
            ctl_errf(err, "release %s is not in the image store (%s)", digest, dir);
            goto out;
        }
        free(ij);
        imgjs = json_loadb(text, len, 0, NULL);
        free(text);
        json_t *ep = json_object_get(json_object_get(json_object_get(imgjs, "config"), "config"), "Entrypoint");
        const char *e0 = json_string_value(json_array_get(ep, 0));
        binary = ctl_strdup(e0 && e0[0] == '/' ? e0 : cfg->runtime_image_binary);
    }
    json_t *icfg = json_object_get(json_object_get(imgjs, "config"), "config");
    deploy_hold_listeners(ctx);
    int fds[LISTENERS_N];
    const char *names[LISTENERS_N];
    int nl = 0;
    for (int i = 0; i < LISTENERS_N; i++) {
        if (ctx->listeners.fd[i] >= 0) {
            fds[nl] = ctx->listeners.fd[i];
            names[nl++] = LISTENER_NAMES[i];
        }
    }
    struct rt_start s = { .digest = digest,
                          .rootfs = rootfs,
                          .binary = binary,
                          .image_config = icfg,
                          .log_path = log,
                          .listen_fds = fds,
                          .listen_names = names,
                          .n_listen = nl };
    json_t *inst = NULL;
    if (runtime_start(cfg, &s, &inst, err) < 0) goto out;
    json_object_set_new(inst, "deploy", json_string(deploy_id));
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(inst, "env_overrides"), i, o) {
        json_t *l = json_deep_copy(o);
        json_object_set_new(l, "deploy", json_string(deploy_id));
        json_object_set_new(l, "digest", json_string(digest));
        dlog("server.env_override", l);
    }
    if (detail)
        *detail = json_pack("{s:O?,s:O?,s:O?}", "pid", json_object_get(inst, "pid"), "log",
                            json_object_get(inst, "log"), "env_overrides", json_object_get(inst, "env_overrides"));
    rc = state_save(cfg->state_dir, "instance", inst, err);
    json_decref(inst);
out:
    json_decref(imgjs);
    free(log);
    free(rootfs);
    free(binary);
    free(dir);
    return rc;
}

/* Nothing may run on the data dir once the recorded instance is stopped: a server the
 * daemon started but never recorded (killed between starting it and saving the instance)
 * is killed too (runtime_kill_unrecorded). */
static void stop_stray(struct ctl_ctx *ctx) {
    int n = runtime_kill_unrecorded(ctx->cfg, 0);
    if (n > 0)
        dlog("server.stray_killed", json_pack("{s:i,s:s}", "processes", n, "data_dir", ctx->cfg->runtime_data_dir));
}

static int stop_instance(struct ctl_ctx *ctx, json_t **how, char *err) {
    json_t *inst = state_load(ctx->cfg->state_dir, "instance");
    if (how) *how = NULL;
    bool had = inst != NULL;
    int rc = had ? runtime_stop(ctx->cfg, inst, how, err) : 0;
    json_decref(inst);
    if (rc == 0) stop_stray(ctx);
    if (rc == 0 && had) rc = state_save(ctx->cfg->state_dir, "instance", NULL, err);
    return rc;
}

static char *progress_text(json_t *p) {
    if (!p) return ctl_strdup("the server reports no recovery progress");
    return ctl_asprintf("phase %s, %lld records and %.1f MiB replayed of a %.1f MiB WAL",
                        json_string_value(json_object_get(p, "phase")) ? json_string_value(json_object_get(p, "phase"))
                                                                       : "?",
                        (long long)json_integer_value(json_object_get(p, "records")),
                        (double)json_integer_value(json_object_get(p, "bytes")) / (1024.0 * 1024.0),
                        (double)json_integer_value(json_object_get(p, "wal_bytes_total")) / (1024.0 * 1024.0));
}

/* The readiness gate: admin /ready 200 and data-plane /ping. It fails, saying which, when
 *  - the server exits ("exited", quoting the server's last error line),
 *  - recovery shows no progress (the "progress" of admin /ready's 503 answer) for
 *    runtime.ready_stall_s, plus ready_s_per_gib per GiB while a snapshot loads ("stalled"),
 *  - the ceiling ready_timeout_s + ready_s_per_gib x data GiB passes ("ceiling"). */
static int probe(struct ctl_ctx *ctx, json_t **detail, char *err) {
    struct ctl_config *cfg = ctx->cfg;
    struct beava_ep ep = endpoint(ctx);
    uint64_t bytes = ctl_tree_bytes(cfg->runtime_data_dir);
    double deadline_s = (double)cfg->ready_timeout_s + (double)cfg->ready_s_per_gib * (double)bytes / GIB;
    int64_t t0 = ctl_mono_ms(), end = t0 + (int64_t)(deadline_s * 1000), last_change = t0;
    char why[CTL_ERR_LEN] = "no answer yet";
    json_t *inst = state_load(cfg->state_dir, "instance");
    const char *log = json_string_value(json_object_get(inst, "log"));
    json_t *last = NULL;
    const char *reason = NULL;
    double stall_s = (double)cfg->ready_stall_s;
    int rc = -1;
    for (;;) {
        if (inst && !runtime_alive(cfg, inst)) {
            ctl_errf(err, "the server exited during startup (%s)", why);
            reason = "exited";
            break;
        }
        json_t *prog = NULL;
        int64_t now = ctl_mono_ms();
        if (beava_ready_progress(&ep, why, sizeof why, &prog)) {
            int64_t v = 0;
            if (beava_ping(&ep, &v, why) == 0) {
                *detail = json_pack("{s:I,s:f,s:I,s:I,s:O?}", "ms", (json_int_t)(ctl_mono_ms() - t0), "deadline_s",
                                    deadline_s, "data_bytes", (json_int_t)bytes, "registry_version", (json_int_t)v,
                                    "progress", last);
                rc = 0;
                break;
            }
            last_change = now;
        } else if (prog && !json_equal(prog, last)) {
            json_decref(last);
            last = json_incref(prog);
            last_change = now;
        }
        json_decref(prog);
        const char *phase = json_string_value(json_object_get(last, "phase"));
        double allow = stall_s;
        if (phase && !strcmp(phase, "snapshot"))
            allow += (double)cfg->ready_s_per_gib *
                (double)json_integer_value(json_object_get(last, "snapshot_bytes")) / GIB;
        if (now - last_change >= (int64_t)(allow * 1000)) {
            char *pt = progress_text(last);
            ctl_errf(err, "recovery stalled: no progress for %.0fs (runtime.ready_stall_s; %s): %s", allow, pt, why);
            free(pt);
            reason = "stalled";
            break;
        }
        if (now >= end) {
            char *pt = progress_text(last);
            ctl_errf(err, "not ready within %.0fs (the ceiling for a data dir of %.1f MiB; %s): %s", deadline_s,
                     (double)bytes / (1024.0 * 1024.0), pt, why);
            free(pt);
            reason = "ceiling";
            break;
        }
        usleep(200000);
    }
    if (rc < 0) {
        char *tail = log ? runtime_log_tail(log, 40) : ctl_strdup("");
        *detail = json_pack("{s:s,s:s,s:f,s:I,s:f,s:O?}", "log_tail", tail, "reason", reason, "deadline_s", deadline_s,
                            "data_bytes", (json_int_t)bytes, "stall_s", stall_s, "progress", last);
        free(tail);
        /* the server's own words, verbatim, into the step, the history and the CLI */
        char *said = log ? runtime_log_last_error(log, json_integer_value(json_object_get(inst, "log_offset"))) : NULL;
        if (said) {
            size_t n = strlen(err);
            snprintf(err + n, CTL_ERR_LEN - n, "; the server said: %s", said);
            json_object_set_new(*detail, "server_error", json_string(said));
            free(said);
        }
    }
    json_decref(last);
    json_decref(inst);
    return rc;
}

/* The cluster gate, after the readiness gate, for a beava cluster node (admin GET /cluster
 * answers 200; 404 = a single server: returns 1 and nothing is checked). The node named by
 * the server must be cluster.node_id when that is set. Then every partition the node owns,
 * and the registry, must have applied the stream up to its last sequence as the gate first
 * saw it (lag 0 against that moment: a node that keeps up with live pushes passes, one that
 * falls behind does not). It fails like the readiness gate: no applied sequence moved for
 * runtime.ready_stall_s ("stalled"), or runtime.ready_timeout_s passed ("ceiling"). */
#define CLUSTER_GATE_POLL_US 200000 /* between two looks at admin GET /cluster */

static uint64_t jseq(json_t *o, const char *k) { return (uint64_t)json_integer_value(json_object_get(o, k)); }

static int cluster_gate(struct ctl_ctx *ctx, json_t **detail, char *err) {
    struct ctl_config *cfg = ctx->cfg;
    struct beava_ep ep = endpoint(ctx);
    int64_t t0 = ctl_mono_ms(), last_change = t0, end = t0 + cfg->ready_timeout_s * 1000;
    json_t *target = NULL; /* partition number (as a string) -> sequence to reach; "registry" too */
    uint64_t progress = 0, lag_at_start = 0, lag = 0;
    size_t owned = 0;
    const char *node = NULL;
    json_t *out = NULL;
    int rc = -1;
    *detail = NULL;
    for (;;) {
        long status = 0;
        json_decref(out);
        out = NULL;
        char e2[CTL_ERR_LEN];
        if (beava_cluster(&ep, &status, &out, e2) < 0) {
            ctl_errf(err, "admin GET /cluster: %.200s", e2);
            break;
        }
        if (status == 404 && !target) {
            rc = 1;
            break;
        }
        if (status != 200 || !json_is_object(out)) {
            ctl_errf(err, "admin GET /cluster: status %ld", status);
            break;
        }
        node = json_string_value(json_object_get(out, "node"));
        if (*cfg->cluster_node_id && (!node || strcmp(node, cfg->cluster_node_id))) {
            ctl_errf(err, "the server runs cluster node '%s'; this host's is '%s' (cluster.node_id)", node ? node : "?",
                     cfg->cluster_node_id);
            break;
        }
        json_t *reg = json_object_get(out, "registry");
        bool first = !target;
        if (first) target = json_object();
        uint64_t sum = jseq(reg, "applied");
        bool done = true;
        lag = 0;
        owned = 0;
        if (first) json_object_set_new(target, "registry", json_integer((json_int_t)jseq(reg, "stream")));
        uint64_t want = (uint64_t)json_integer_value(json_object_get(target, "registry"));
        if (jseq(reg, "applied") < want) done = false, lag += want - jseq(reg, "applied");
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(out, "ownership"), i, p) {
            if (!json_object_get(p, "applied")) continue; /* a partition this node does not own */
            char key[24];
            snprintf(key, sizeof key, "%lld", (long long)json_integer_value(json_object_get(p, "partition")));
            if (first) json_object_set_new(target, key, json_integer((json_int_t)jseq(p, "stream")));
            want = (uint64_t)json_integer_value(json_object_get(target, key));
            owned++;
            sum += jseq(p, "applied");
            if (jseq(p, "applied") < want) done = false, lag += want - jseq(p, "applied");
        }
        if (first) lag_at_start = lag;
        if (done) {
            rc = 0;
            break;
        }
        int64_t now = ctl_mono_ms();
        if (sum != progress) progress = sum, last_change = now;
        if (now - last_change >= cfg->ready_stall_s * 1000) {
            ctl_errf(err,
                     "not caught up: no partition applied anything for %llds (runtime.ready_stall_s), %llu "
                     "stream sequences behind",
                     (long long)cfg->ready_stall_s, (unsigned long long)lag);
            break;
        }
        if (now >= end) {
            ctl_errf(err, "not caught up within %llds (runtime.ready_timeout_s), %llu stream sequences behind",
                     (long long)cfg->ready_timeout_s, (unsigned long long)lag);
            break;
        }
        usleep(CLUSTER_GATE_POLL_US);
    }
    if (rc <= 0)
        *detail =
            json_pack("{s:s?,s:I,s:I,s:I,s:I}", "node", node, "owned_partitions", (json_int_t)owned, "lag_at_start",
                      (json_int_t)lag_at_start, "lag", (json_int_t)lag, "ms", (json_int_t)(ctl_mono_ms() - t0));
    json_decref(out);
    json_decref(target);
    return rc;
}

/* The cluster step as its own journal step (nothing when the server is not a cluster node):
 * 0 passed or skipped, -1 failed (err). */
static int cluster_step(struct ctl_ctx *ctx, struct deploy *d, const char *name, char *err) {
    int64_t t0 = ctl_mono_ms();
    json_t *detail = NULL;
    int cg = cluster_gate(ctx, &detail, err);
    if (cg <= 0)
        step_done(ctx, d, name, t0, cg == 0, cg ? err : "every owned partition caught up with the stream", detail);
    return cg < 0 ? -1 : 0;
}

/* ---- manifests: apply and verify ------------------------------------------------------ */

static char *diff_summary(json_t *diff) {
    json_t *add = json_object_get(diff, "additive"), *des = json_object_get(diff, "destructive");
    char *a = json_dumps(add ? add : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    char *b = json_dumps(des ? des : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    char *s = ctl_asprintf("additive %s, destructive %s", a, b);
    free(a);
    free(b);
    return s;
}

/* Descriptors adopted from a registry filled by hand (registry.json "adopted"): while there
 * are any, every register uses mode merge so they are kept without being declared. */
static json_t *adopted_names(struct ctl_ctx *ctx) {
    json_t *reg = state_load(ctx->cfg->state_dir, "registry");
    json_t *a = json_object_get(reg, "adopted");
    json_t *out = json_is_array(a) ? json_incref(a) : json_array();
    json_decref(reg);
    return out;
}

static const char *register_mode(struct ctl_ctx *ctx) {
    json_t *a = adopted_names(ctx);
    bool merge = json_array_size(a) > 0;
    json_decref(a);
    return merge ? "merge" : NULL;
}

static int dry_run(struct ctl_ctx *ctx, json_t *nodes, json_t **diff, char *err) {
    struct beava_ep ep = endpoint(ctx);
    long status = 0;
    json_t *out = NULL;
    *diff = NULL;
    if (beava_register_mode(&ep, nodes, register_mode(ctx), false, true, &status, &out, err) < 0) return -1;
    if (status != 200 || !json_is_object(json_object_get(out, "diff"))) {
        char *b = out ? json_dumps(out, JSON_COMPACT) : NULL;
        ctl_errf(err, "dry run: status %ld %s", status, b ? b : "");
        free(b);
        json_decref(out);
        return -1;
    }
    if (json_object_get(out, "error")) {
        char *b = json_dumps(json_object_get(out, "error"), JSON_COMPACT);
        ctl_errf(err, "the server would refuse the manifests: %s", b);
        free(b);
        json_decref(out);
        return -1;
    }
    *diff = json_incref(json_object_get(out, "diff"));
    json_decref(out);
    return 0;
}

/* Snapshot now and copy it into state_dir/backups/<id>/. */
static int snapshot_backup(struct ctl_ctx *ctx, struct deploy *d, json_t **detail, char *err) {
    struct beava_ep ep = endpoint(ctx);
    json_t *snap = NULL;
    if (beava_snapshot(&ep, &snap, err) < 0) return -1;
    const char *p = json_string_value(json_object_get(snap, "path"));
    char *host;
    bool sandboxed = strcmp(ctx->cfg->runtime_kind, "process") != 0;
    if (sandboxed && !strncmp(p, "/data/", 6)) host = ctl_asprintf("%s/%s", ctx->cfg->runtime_data_dir, p + 6);
    else if (p[0] != '/') host = ctl_asprintf("%s/%s", ctx->cfg->runtime_data_dir, p);
    else host = ctl_strdup(p);
    const char *base = strrchr(host, '/') ? strrchr(host, '/') + 1 : host;
    char *dir = ctl_asprintf("%s/backups/%s", ctx->cfg->state_dir, d->id);
    char *dst = ctl_asprintf("%s/%s", dir, base);
    int rc = ctl_mkdirs(dir, 0750, err);
    if (rc == 0) rc = ctl_copytree(host, dst, err);
    if (rc == 0) {
        json_t *cur = state_load(ctx->cfg->state_dir, "current");
        *detail = json_pack("{s:O,s:s,s:s,s:I,s:O?}", "lsn", json_object_get(snap, "lsn"), "snapshot", host, "backup",
                            dst, "bytes", (json_int_t)ctl_tree_bytes(dst), "release", json_object_get(cur, "digest"));
        json_decref(cur);
        /* the manifest carry as it was, so a restore of this snapshot restores it too */
        char *src = ctl_asprintf("%s/registry.json", ctx->cfg->state_dir);
        char *rj = ctl_asprintf("%s/registry.json", dir);
        char *text = NULL;
        size_t len;
        char e2[CTL_ERR_LEN];
        if (ctl_read_file(src, 64u << 20, &text, &len, e2) == 0 && access(rj, F_OK) != 0)
            ctl_write_file_atomic(rj, text, len, 0640, e2);
        free(text);
        free(rj);
        free(src);
    }
    free(dir);
    free(dst);
    free(host);
    json_decref(snap);
    return rc;
}

/* Apply the set step by step. *final_nodes (caller owns) is what the registry holds after.
 * *destructive_done is set when a forced register was sent. */
static int apply_manifests(struct ctl_ctx *ctx, struct deploy *d, struct manifest_set *set, json_t **final_nodes,
                           int64_t *version, bool *destructive_done, char *err) {
    struct ctl_config *cfg = ctx->cfg;
    struct beava_ep ep = endpoint(ctx);
    json_t *reg = state_load(cfg->state_dir, "registry");
    json_t *prev = json_object_get(reg, "nodes");
    int rc = -1;
    *final_nodes = NULL;
    *destructive_done = false;
    if (set->n == 0) {
        *final_nodes = json_incref(prev ? prev : json_array());
        json_decref(reg);
        return 0;
    }
    /* Pre-flight: the whole union against the current registry. A destructive change that
     * no manifest allows is refused here, before any step changes anything. */
    int64_t t0 = ctl_mono_ms();
    json_t *full = manifest_step_nodes(set, set->n - 1, prev), *diff = NULL;
    if (dry_run(ctx, full, &diff, err) < 0 ||
        manifest_check_destructive(set, set->n - 1, json_object_get(diff, "destructive"), err) < 0) {
        char *why = ctl_strdup(err);
        step_done(ctx, d, "apply.preflight", t0, false, why, diff ? json_incref(diff) : NULL);
        ctl_errf(err, "%s", why);
        free(why);
        json_decref(diff);
        json_decref(full);
        json_decref(reg);
        return -1;
    }
    step_done(ctx, d, "apply.preflight", t0, true, NULL,
              json_pack("{s:O,s:I}", "diff", diff, "nodes", (json_int_t)json_array_size(full)));
    json_decref(diff);
    json_decref(full);
    for (size_t k = 0; k < set->n; k++) {
        struct manifest *m = &set->m[k];
        char name[300];
        snprintf(name, sizeof name, "apply %s", m->id);
        t0 = ctl_mono_ms();
        json_t *nodes = manifest_step_nodes(set, k, prev);
        diff = NULL;
        if (dry_run(ctx, nodes, &diff, err) < 0) {
            step_done(ctx, d, name, t0, false, err, NULL);
            json_decref(nodes);
            goto out;
        }
        json_t *add = json_object_get(diff, "additive"), *des = json_object_get(diff, "destructive");
        if (json_array_size(add) == 0 && json_array_size(des) == 0) {
            step_done(ctx, d, name, t0, true, "no changes: skipped",
                      json_pack("{s:s,s:O}", "result", "unchanged", "already_present",
                                json_object_get(diff, "already_present")));
            json_decref(diff);
            json_decref(*final_nodes);
            *final_nodes = nodes;
            continue;
        }
        bool force = json_array_size(des) > 0;
        json_t *backup = NULL;
        if (force) {
            if (manifest_check_destructive(set, k, des, err) < 0) {
                step_done(ctx, d, name, t0, false, err, json_incref(diff));
                json_decref(diff);
                json_decref(nodes);
                goto out;
            }
            int64_t tb = ctl_mono_ms();
            if (snapshot_backup(ctx, d, &backup, err) < 0) {
                char *why = ctl_asprintf("no backup, no destructive change: %s", err);
                step_done(ctx, d, "apply.backup", tb, false, why, NULL);
                ctl_errf(err, "%s", why);
                free(why);
                json_decref(diff);
                json_decref(nodes);
                goto out;
            }
            step_done(ctx, d, "apply.backup", tb, true, NULL, backup);
            /* Journalled before the call, so recovery knows state may have been dropped. */
            step_done(ctx, d, "apply.destructive", ctl_mono_ms(), true, m->id, json_incref(des));
            *destructive_done = true;
        }
        long status = 0;
        json_t *out = NULL;
        if (beava_register_mode(&ep, nodes, register_mode(ctx), force, false, &status, &out, err) < 0 ||
            status != 200) {
            if (status) {
                char *b = out ? json_dumps(out, JSON_COMPACT) : NULL;
                ctl_errf(err, "register (%s): status %ld %s", m->id, status, b ? b : "");
                free(b);
            }
            step_done(ctx, d, name, t0, false, err, NULL);
            json_decref(out);
            json_decref(diff);
            json_decref(nodes);
            goto out;
        }
        *version = json_integer_value(json_object_get(out, "registry_version"));
        char *sum = diff_summary(diff);
        step_done(ctx, d, name, t0, true, sum,
                  json_pack("{s:s,s:O,s:O,s:I}", "result", force ? "destructive (forced)" : "additive", "added",
                            json_object_get(out, "added") ? json_object_get(out, "added") : json_null(), "diff", diff,
                            "registry_version", (json_int_t)*version));
        free(sum);
        json_decref(out);
        json_decref(diff);
        json_t *r = json_pack("{s:O,s:s,s:s,s:o}", "nodes", nodes, "manifests_hash", set->hash, "deploy", d->id,
                              "adopted", adopted_names(ctx));
        state_save(cfg->state_dir, "registry", r, err);
        json_decref(r);
        json_decref(*final_nodes);
        *final_nodes = nodes;
    }
    json_t *r = json_pack("{s:O,s:s,s:s,s:o}", "nodes", *final_nodes, "manifests_hash", set->hash, "deploy", d->id,
                          "adopted", adopted_names(ctx));
    rc = state_save(cfg->state_dir, "registry", r, err);
    json_decref(r);
out:
    if (rc < 0) {
        json_decref(*final_nodes);
        *final_nodes = NULL;
    }
    json_decref(reg);
    return rc;
}

/* registry_version (when known), node count, every declared table answers /get. */
static int verify(struct ctl_ctx *ctx, json_t *nodes, int64_t want_version, json_t **detail, char *err) {
    struct beava_ep ep = endpoint(ctx);
    int64_t v = 0, count = 0;
    *detail = NULL;
    if (beava_registry(&ep, &v, &count, err) < 0) return -1;
    json_t *tables = json_array();
    *detail = json_pack("{s:I,s:I,s:o}", "registry_version", (json_int_t)v, "node_count", (json_int_t)count, "tables",
                        tables);
    if (want_version >= 0 && v != want_version)
        return ctl_errf(err, "registry_version is %lld, the last register answered %lld", (long long)v,
                        (long long)want_version);
    json_t *adopted = adopted_names(ctx);
    size_t n_adopted = json_array_size(adopted);
    json_decref(adopted);
    if (nodes && (int64_t)(json_array_size(nodes) + n_adopted) != count)
        return ctl_errf(err, "the server holds %lld descriptors, the manifests declare %zu (and %zu adopted)",
                        (long long)count, json_array_size(nodes), n_adopted);
    json_t *want = manifest_tables(nodes);
    size_t i;
    json_t *t;
    int rc = 0;
    json_array_foreach(want, i, t) {
        const char *table = json_string_value(json_object_get(t, "table"));
        long status = 0;
        json_t *out = NULL;
        char e2[CTL_ERR_LEN];
        int x = beava_get(&ep, table, json_string_value(json_object_get(t, "key")), &status, &out, e2);
        /* A cluster node: the key's partition may be owned by hosts not started yet (the first
         * hosts of a new cluster). The registry check above holds; the table is listed so. */
        const char *code = json_string_value(json_object_get(json_object_get(out, "error"), "code"));
        bool no_owner = x == 0 && status == 503 && code && !strcmp(code, "owner_unavailable");
        json_decref(out);
        json_array_append_new(
            tables,
            json_pack("{s:s,s:I,s:b}", "table", table, "status", (json_int_t)status, "no_live_owner", no_owner));
        if ((x < 0 || status != 200) && !no_owner && rc == 0)
            rc = ctl_errf(err, "table %s does not answer /get (status %ld%s%s)", table, status, x < 0 ? ", " : "",
                          x < 0 ? e2 : "");
    }
    json_decref(want);
    return rc;
}

/* ---- rollback --------------------------------------------------------------------------- */

static int restore_data(struct ctl_ctx *ctx, const char *deploy_id, char *err) {
    char *src = ctl_asprintf("%s/backups/%s/data", ctx->cfg->state_dir, deploy_id);
    struct stat st;
    int rc = 0;
    if (stat(src, &st) == 0) {
        char *tmp = ctl_asprintf("%s.restore", ctx->cfg->runtime_data_dir);
        rc = ctl_rmtree(tmp, err);
        if (rc == 0) rc = ctl_copytree(src, tmp, err);
        if (rc == 0) rc = ctl_rmtree(ctx->cfg->runtime_data_dir, err);
        if (rc == 0 && rename(tmp, ctx->cfg->runtime_data_dir) < 0)
            rc = ctl_errf(err, "rename %s: %s", tmp, strerror(errno));
        free(tmp);
        char *reg = ctl_asprintf("%s/backups/%s/registry.json", ctx->cfg->state_dir, deploy_id);
        char *text = NULL;
        size_t len;
        char e2[CTL_ERR_LEN];
        if (rc == 0 && ctl_read_file(reg, 64u << 20, &text, &len, e2) == 0) {
            char *dst = ctl_asprintf("%s/registry.json", ctx->cfg->state_dir);
            rc = ctl_write_file_atomic(dst, text, len, 0640, err);
            free(dst);
        } else if (rc == 0) {
            state_save(ctx->cfg->state_dir, "registry", NULL, e2);
        }
        free(text);
        free(reg);
    } else {
        rc = ctl_errf(err, "no data dir copy for deploy %s", deploy_id);
    }
    free(src);
    return rc;
}

/* Stop whatever runs, optionally restore the data dir, start `cur` again. Records steps
 * and ends the deploy. */
static void rollback(struct ctl_ctx *ctx, struct deploy *d, json_t *cur, const char *reason, bool restore) {
    char err[CTL_ERR_LEN];
    int64_t t0 = ctl_mono_ms();
    json_t *how = NULL;
    if (stop_instance(ctx, &how, err) < 0) {
        step_done(ctx, d, "rollback.stop", t0, false, err, how);
        char *m = ctl_asprintf("%s; rollback failed: cannot stop the new server: %s", reason, err);
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        return;
    }
    step_done(ctx, d, "rollback.stop", t0, true, NULL, how);
    if (restore) {
        t0 = ctl_mono_ms();
        int x = restore_data(ctx, d->id, err);
        step_done(ctx, d, "rollback.restore-data", t0, x == 0, x ? err : "data dir restored from the pre-deploy copy",
                  NULL);
    }
    const char *digest = json_string_value(json_object_get(cur, "digest"));
    if (!digest) {
        char *m = ctl_asprintf("%s; no previous release to roll back to, nothing runs", reason);
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        return;
    }
    t0 = ctl_mono_ms();
    json_t *sd = NULL;
    if (start_release(ctx, digest, d->id, &sd, err) < 0) {
        step_done(ctx, d, "rollback.start", t0, false, err, NULL);
        char *m = ctl_asprintf("%s; rollback to %s failed: %s", reason, digest, err);
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        return;
    }
    step_done(ctx, d, "rollback.start", t0, true, digest, sd);
    t0 = ctl_mono_ms();
    json_t *detail = NULL;
    int x = probe(ctx, &detail, err);
    step_done(ctx, d, "rollback.probe", t0, x == 0, x ? err : NULL, detail);
    if (x == 0) x = cluster_step(ctx, d, "rollback.cluster", err);
    char *m = x == 0 ? ctl_asprintf("%s; rolled back to %s", reason, digest)
                     : ctl_asprintf("%s; rolled back to %s, but it is not ready: %s", reason, digest, err);
    deploy_end(ctx, d, x == 0 ? "rolled_back" : "failed", m, json_pack("{s:s}", "rolled_back_to", digest));
    free(m);
}

/* ---- housekeeping ------------------------------------------------------------------------ */

struct aged {
    char name[256];
    long long mtime_ns;
    bool pinned;
};

static int cmp_aged(const void *a, const void *b) {
    const struct aged *x = a, *y = b;
    return x->mtime_ns < y->mtime_ns ? 1 : (x->mtime_ns > y->mtime_ns ? -1 : strcmp(x->name, y->name));
}

/* Keep `keep` entries of dir: the pinned ones (names containing one of `pinned`) always,
 * then the newest others; remove the rest. */
static void gc_dir(const char *dir, long keep, const char *const *pinned) {
    DIR *dd = opendir(dir);
    if (!dd) return;
    struct aged *v = NULL;
    size_t n = 0;
    struct dirent *e;
    long kept = 0;
    while ((e = readdir(dd))) {
        if (e->d_name[0] == '.' || strlen(e->d_name) >= 256) continue;
        char *p = ctl_asprintf("%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0) {
            v = ctl_realloc(v, (n + 1) * sizeof *v);
            snprintf(v[n].name, sizeof v[n].name, "%s", e->d_name);
            v[n].mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
            v[n].pinned = false;
            for (const char *const *pp = pinned; *pp; pp++)
                if (strstr(v[n].name, *pp)) v[n].pinned = true;
            kept += v[n].pinned;
            n++;
        }
        free(p);
    }
    closedir(dd);
    if (n) qsort(v, n, sizeof *v, cmp_aged);
    for (size_t i = 0; i < n; i++) {
        if (v[i].pinned) continue;
        if (kept < keep) {
            kept++;
            continue;
        }
        char *p = ctl_asprintf("%s/%s", dir, v[i].name);
        char err[CTL_ERR_LEN];
        ctl_rmtree(p, err);
        free(p);
    }
    free(v);
}

static void housekeeping(struct ctl_ctx *ctx, json_t *cur) {
    const char *a = json_string_value(json_object_get(cur, "digest"));
    const char *b = json_string_value(json_object_get(json_object_get(cur, "previous"), "digest"));
    const char *pinned[3] = { a ? a + 7 : "\x01", b ? b + 7 : "\x01", NULL };
    char *dir = ctl_asprintf("%s/images", ctx->cfg->state_dir);
    gc_dir(dir, ctx->cfg->keep_images, pinned);
    free(dir);
    const char *none[] = { NULL };
    dir = ctl_asprintf("%s/backups", ctx->cfg->state_dir);
    gc_dir(dir, ctx->cfg->keep_backups, none);
    free(dir);
    int n = releases_gc_blobs(ctx->cfg->state_dir);
    if (n > 0)
        dlog("store.gc", json_pack("{s:i,s:I}", "blobs_removed", n, "keep_images", (json_int_t)ctx->cfg->keep_images));
}

/* ---- the pipeline ------------------------------------------------------------------------ */

/* Resolve and fetch the release: fills digest; image store has it afterwards. */
static int fetch_release(struct ctl_ctx *ctx, struct deploy *d, char *digest, char *err) {
    struct ctl_config *cfg = ctx->cfg;
    int64_t t0 = ctl_mono_ms();
    if (!strcmp(cfg->runtime_kind, "process")) {
        /* The process runtime's release is the installed binary, kept by digest so a
         * rollback can run the previous one after a package upgrade replaced it. */
        const char *bin = cfg->runtime_binary;
        char *data = NULL;
        size_t len = 0;
        if (d->image && strcmp(d->image, "local") != 0) {
            ctl_errf(err, "the process runtime deploys the installed binary (%s): use the image name 'local'", bin);
            step_done(ctx, d, "resolve", t0, false, err, NULL);
            return -1;
        }
        if (ctl_read_file(bin, 1u << 30, &data, &len, err) < 0) {
            step_done(ctx, d, "resolve", t0, false, err, NULL);
            return -1;
        }
        ctl_sha256_digest(data, len, digest);
        char *dir = image_dir(ctx, digest);
        char *dst = ctl_asprintf("%s/beava", dir);
        int rc = 0;
        if (access(dst, X_OK) != 0) {
            rc = ctl_mkdirs(dir, 0755, err);
            if (rc == 0) rc = ctl_write_file_atomic(dst, data, len, 0755, err);
        }
        free(data);
        free(dst);
        free(dir);
        step_done(ctx, d, "resolve", t0, rc == 0, rc ? err : NULL,
                  json_pack("{s:s,s:s}", "binary", bin, "digest", digest));
        return rc;
    }
    struct oci_ref ref;
    if (!d->image) {
        step_done(ctx, d, "resolve", t0, false, "no image given", NULL);
        return ctl_errf(err, "no image given");
    }
    if (oci_parse_ref(d->image, &ref, err) < 0) {
        step_done(ctx, d, "resolve", t0, false, err, NULL);
        return -1;
    }
    if (*cfg->registry_repository && !oci_ref_in_repository(&ref, cfg->registry_repository)) {
        ctl_errf(err, "image %s is outside the configured repository %s; refused", d->image, cfg->registry_repository);
        step_done(ctx, d, "resolve", t0, false, err, NULL);
        return -1;
    }
    long waited = 0;
    if (oci_resolve(cfg, &ref, (long)cfg->wait_for_image_s, digest, &waited, err) < 0) {
        step_done(ctx, d, "resolve", t0, false, err, NULL);
        return -1;
    }
    step_done(ctx, d, "resolve", t0, true, digest,
              json_pack("{s:s,s:I}", "digest", digest, "waited_ms", (json_int_t)waited));
    pthread_mutex_lock(&ctx->mu);
    json_object_set_new(d->rec, "digest", json_string(digest));
    pthread_mutex_unlock(&ctx->mu);

    char *dir = image_dir(ctx, digest);
    char *rootfs = ctl_asprintf("%s/rootfs", dir);
    char *ij = ctl_asprintf("%s/image.json", dir);
    int rc = -1;
    struct oci_image img = { 0 };
    struct stat st;
    json_t *cached = NULL;
    t0 = ctl_mono_ms();
    if (stat(rootfs, &st) == 0 && (cached = state_load(dir, "image"))) {
        img.config = json_incref(json_object_get(cached, "config"));
        step_done(ctx, d, "pull", t0, true, "already in the image store", NULL);
    } else {
        if (oci_pull(cfg, &ref, digest, cfg->state_dir, &img, err) < 0) {
            step_done(ctx, d, "pull", t0, false, err, NULL);
            goto out;
        }
        step_done(ctx, d, "pull", t0, true, "every blob verified (sha256)",
                  json_pack("{s:s,s:I,s:I}", "manifest", img.manifest_digest, "bytes_fetched",
                            (json_int_t)img.bytes_fetched, "layers", (json_int_t)json_array_size(img.layers)));
    }
    const char *label = oci_revision_label(img.config);
    if (d->revision) {
        t0 = ctl_mono_ms();
        if (!oci_revision_matches(label, d->revision)) {
            ctl_errf(err, "image %s carries revision label '%s', the deploy asked for %s; refused", digest,
                     label ? label : "(none)", d->revision);
            step_done(ctx, d, "revision", t0, false, err, NULL);
            goto out;
        }
        step_done(ctx, d, "revision", t0, true, label, NULL);
    }
    if (!cached) {
        t0 = ctl_mono_ms();
        const struct unpack_limits lim = { (uint64_t)cfg->unpack_max_layer_bytes,
                                           (uint64_t)cfg->unpack_max_image_bytes };
        if (ctl_mkdirs(dir, 0755, err) < 0 || unpack_image(cfg->state_dir, img.layers, rootfs, &lim, err) < 0) {
            step_done(ctx, d, "unpack", t0, false, err, NULL);
            goto out;
        }
        json_t *blobs = json_array();
        json_array_append_new(blobs, json_string(img.config_digest));
        size_t li;
        json_t *lay;
        json_array_foreach(img.layers, li, lay) json_array_append(blobs, json_object_get(lay, "digest"));
        json_t *meta = json_pack("{s:s,s:s,s:s,s:O,s:o}", "image", d->image, "digest", digest, "manifest",
                                 img.manifest_digest, "config", img.config, "blobs", blobs);
        state_save(dir, "image", meta, err);
        json_decref(meta);
        step_done(ctx, d, "unpack", t0, true, rootfs, NULL);
    }
    rc = 0;
out:
    json_decref(cached);
    oci_image_free(&img);
    free(ij);
    free(rootfs);
    free(dir);
    return rc;
}

static struct manifest_set *load_manifests(struct ctl_ctx *ctx, struct deploy *d, char *err) {
    int64_t t0 = ctl_mono_ms();
    struct manifest_set *set = NULL;
    struct stat st;
    const char *origin = "given";
    if (!d->manifests && !strcmp(d->kind, "deploy")) {
        /* No --manifests: the set applied last, not the configured default, so a redeploy
         * never swaps the pipeline behind the operator's back. */
        json_t *cur = state_load(ctx->cfg->state_dir, "current");
        const char *last = json_string_value(json_object_get(cur, "manifests"));
        if (last && *last && stat(last, &st) == 0) {
            d->manifests = ctl_strdup(last);
            origin = "the set applied last";
        } else if (*ctx->cfg->manifests_dir && stat(ctx->cfg->manifests_dir, &st) == 0) {
            d->manifests = ctl_strdup(ctx->cfg->manifests_dir);
            origin = "manifests.dir (no set applied yet)";
        }
        json_decref(cur);
        if (d->manifests) {
            pthread_mutex_lock(&ctx->mu);
            json_object_set_new(d->rec, "manifests", json_string(d->manifests));
            pthread_mutex_unlock(&ctx->mu);
        }
    }
    const char *dir = d->manifests ? d->manifests : ctx->cfg->manifests_dir;
    if (!d->manifests && (!*dir || stat(dir, &st) != 0)) {
        set = manifest_set_new();
        manifest_set_finish(set, err);
        step_done(ctx, d, "manifests", t0, true, "no manifest directory: registry left as it is",
                  json_pack("{s:s,s:s}", "dir", dir, "hash", set->hash));
        return set;
    }
    if (manifest_load(dir, &set, err) < 0) {
        step_done(ctx, d, "manifests", t0, false, err, NULL);
        return NULL;
    }
    json_t *ids = json_array();
    for (size_t i = 0; i < set->n; i++) json_array_append_new(ids, json_string(set->m[i].id));
    char *msg = ctl_asprintf("%s (%s)", dir, origin);
    step_done(ctx, d, "manifests", t0, true, msg,
              json_pack("{s:s,s:s,s:o,s:I,s:s}", "dir", dir, "hash", set->hash, "order", ids, "nodes",
                        (json_int_t)json_array_size(set->all_nodes), "origin", origin));
    free(msg);
    pthread_mutex_lock(&ctx->mu);
    json_object_set_new(d->rec, "manifests_hash", json_string(set->hash));
    pthread_mutex_unlock(&ctx->mu);
    return set;
}

static bool instance_ready(struct ctl_ctx *ctx, json_t *inst) {
    struct beava_ep ep = endpoint(ctx);
    char why[CTL_ERR_LEN];
    return inst && runtime_alive(ctx->cfg, inst) && beava_ready(&ep, why, sizeof why) &&
        beava_ping(&ep, NULL, why) == 0;
}

static void commit(struct ctl_ctx *ctx, struct deploy *d, json_t *cur, const char *digest, const char *image,
                   const char *revision, const char *mhash, const char *mdir, bool restarted) {
    char ts[40], err[CTL_ERR_LEN];
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    json_t *next = json_pack(
        "{s:s,s:s,s:s,s:s,s:s}", "digest", digest, "runtime", ctx->cfg->runtime_kind, "deploy", d->id, "since",
        restarted || !json_object_get(cur, "since") ? ts : json_string_value(json_object_get(cur, "since")),
        "manifests_hash", mhash ? mhash : "");
    if (image) json_object_set_new(next, "image", json_string(image));
    if (revision) json_object_set_new(next, "revision", json_string(revision));
    if (mdir) json_object_set_new(next, "manifests", json_string(mdir));
    if (cur && restarted) {
        json_t *prev = json_deep_copy(cur);
        json_object_del(prev, "previous");
        json_object_set_new(next, "previous", prev);
    } else if (cur && json_object_get(cur, "previous")) {
        json_object_set(next, "previous", json_object_get(cur, "previous"));
    }
    state_save(ctx->cfg->state_dir, "current", next, err);
    housekeeping(ctx, next);
    json_decref(next);
}

static void run_deploy(struct ctl_ctx *ctx, struct deploy *d) {
    struct ctl_config *cfg = ctx->cfg;
    char err[CTL_ERR_LEN], digest[80] = "";
    json_t *cur = state_load(cfg->state_dir, "current");
    json_t *inst = state_load(cfg->state_dir, "instance");
    struct manifest_set *set = NULL;
    json_t *final_nodes = NULL;
    const char *cur_digest = json_string_value(json_object_get(cur, "digest"));
    char *keep = cur_digest ? ctl_asprintf("%s keeps running", cur_digest) : ctl_strdup("nothing was running");

    /* 1. resolve, pull, verify, unpack — nothing running is touched yet */
    if (fetch_release(ctx, d, digest, err) < 0) {
        char *m = ctl_asprintf("%s; nothing changed, %s", err, keep);
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        goto out;
    }
    if (!(set = load_manifests(ctx, d, err))) {
        char *m = ctl_asprintf("%s; nothing changed, %s", err, keep);
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        goto out;
    }
    const char *mdir = d->manifests;
    /* 2. same release already running and ready: nothing to do */
    bool same_digest = cur_digest && !strcmp(cur_digest, digest);
    bool running = same_digest && instance_ready(ctx, inst);
    const char *cur_hash = json_string_value(json_object_get(cur, "manifests_hash"));
    if (running && cur_hash && !strcmp(cur_hash, set->hash)) {
        char *m = ctl_asprintf("already running %s with manifests %.19s…: no-op", digest, set->hash);
        deploy_end(ctx, d, "noop", m, json_pack("{s:s}", "digest", digest));
        free(m);
        goto out;
    }
    int64_t t0;
    bool restarted = !running;
    bool was_ready = false;
    if (restarted) {
        /* 3. stop old */
        t0 = ctl_mono_ms();
        json_t *how = NULL;
        if (stop_instance(ctx, &how, err) < 0) {
            step_done(ctx, d, "stop", t0, false, err, how);
            rollback(ctx, d, cur, "the old server could not be stopped", false);
            goto out;
        }
        step_done(ctx, d, "stop", t0, true, how ? NULL : "nothing was running", how);
        /* 4. copy the data dir while no server writes to it */
        if (cfg->backup_data_on_deploy) {
            t0 = ctl_mono_ms();
            char *dir = ctl_asprintf("%s/backups/%s", cfg->state_dir, d->id);
            char *dst = ctl_asprintf("%s/data", dir);
            int x = ctl_mkdirs(dir, 0750, err);
            struct stat st;
            if (x == 0 && stat(cfg->runtime_data_dir, &st) == 0) x = ctl_copytree(cfg->runtime_data_dir, dst, err);
            else if (x == 0) x = ctl_mkdirs(dst, 0750, err);
            if (x == 0) {
                char *src = ctl_asprintf("%s/registry.json", cfg->state_dir);
                char *rj = ctl_asprintf("%s/registry.json", dir);
                char *text = NULL;
                size_t len;
                char e2[CTL_ERR_LEN];
                if (ctl_read_file(src, 64u << 20, &text, &len, e2) == 0)
                    x = ctl_write_file_atomic(rj, text, len, 0640, err);
                free(text);
                free(src);
                free(rj);
            }
            step_done(ctx, d, "backup", t0, x == 0, x ? err : dst,
                      x ? NULL
                        : json_pack("{s:s,s:I,s:s?}", "path", dst, "bytes", (json_int_t)ctl_tree_bytes(dst), "release",
                                    cur_digest));
            free(dir);
            free(dst);
            if (x < 0) {
                rollback(ctx, d, cur, "the data dir could not be copied", false);
                goto out;
            }
        }
        /* 5. start new */
        t0 = ctl_mono_ms();
        json_t *sd = NULL;
        if (start_release(ctx, digest, d->id, &sd, err) < 0) {
            step_done(ctx, d, "start", t0, false, err, NULL);
            char *r = ctl_asprintf("the new server did not start: %s", err);
            rollback(ctx, d, cur, r, cfg->backup_data_on_deploy);
            free(r);
            goto out;
        }
        step_done(ctx, d, "start", t0, true, digest, sd);
        /* 6. probe */
        t0 = ctl_mono_ms();
        json_t *detail = NULL;
        if (probe(ctx, &detail, err) < 0) {
            step_done(ctx, d, "probe", t0, false, err, detail);
            char *r = ctl_asprintf("the new server never became ready: %s", err);
            rollback(ctx, d, cur, r, cfg->backup_data_on_deploy);
            free(r);
            goto out;
        }
        step_done(ctx, d, "probe", t0, true, "admin /ready 200 and data-plane /ping", detail);
        /* 6b. a cluster node: its partitions caught up with the stream */
        if (cluster_step(ctx, d, "cluster", err) < 0) {
            char *r = ctl_asprintf("the new cluster node did not catch up: %s", err);
            rollback(ctx, d, cur, r, cfg->backup_data_on_deploy);
            free(r);
            goto out;
        }
        was_ready = true;
    }
    (void)was_ready;
    /* 7. apply manifests, 8. verify */
    int64_t version = -1;
    bool destructive = false;
    if (apply_manifests(ctx, d, set, &final_nodes, &version, &destructive, err) < 0) {
        char *r = ctl_asprintf("manifests not applied: %s", err);
        if (restarted) rollback(ctx, d, cur, r, destructive && cfg->backup_data_on_deploy);
        else {
            char *m = ctl_asprintf("%s; %s", r,
                                   destructive ? "a destructive step was applied (backup kept)"
                                               : "the registry is as it was");
            deploy_end(ctx, d, "failed", m, NULL);
            free(m);
        }
        free(r);
        goto out;
    }
    t0 = ctl_mono_ms();
    json_t *vd = NULL;
    if (verify(ctx, set->n ? final_nodes : NULL, version, &vd, err) < 0) {
        step_done(ctx, d, "verify", t0, false, err, vd);
        char *r = ctl_asprintf("verification failed: %s", err);
        if (restarted) rollback(ctx, d, cur, r, destructive && cfg->backup_data_on_deploy);
        else deploy_end(ctx, d, "failed", r, NULL);
        free(r);
        goto out;
    }
    step_done(ctx, d, "verify", t0, true, NULL, vd);
    /* 9. commit */
    commit(ctx, d, cur, digest, d->image, d->revision, set->hash, mdir, restarted);
    char *m = restarted ? ctl_asprintf("running %s, ready, manifests applied", digest)
                        : ctl_asprintf("%s was already running; manifests applied", digest);
    deploy_end(ctx, d, "succeeded", m,
               json_pack("{s:s,s:s,s:o?}", "digest", digest, "manifests_hash", set->hash, "labels",
                         release_labels(ctx, digest)));
    free(m);
out:
    manifest_set_free(set);
    json_decref(final_nodes);
    json_decref(cur);
    json_decref(inst);
    free(keep);
}

/* apply --adopt: the descriptors the server holds that neither the manifests nor the
 * carry declare are recorded as adopted (kept as they are, registers use mode merge). */
static int adopt_descriptors(struct ctl_ctx *ctx, struct deploy *d, struct manifest_set *set, char *err) {
    int64_t t0 = ctl_mono_ms();
    struct beava_ep ep = endpoint(ctx);
    long status = 0;
    json_t *out = NULL, *none = json_array();
    /* a merge of nothing changes nothing and names every registered descriptor */
    int x = beava_register_mode(&ep, none, "merge", false, false, &status, &out, err);
    json_decref(none);
    if (x == 0 && (status != 200 || !json_is_array(json_object_get(out, "registered_descriptors"))))
        x = ctl_errf(err, "the server did not list its descriptors (status %ld); its register may predate mode merge",
                     status);
    if (x < 0) {
        step_done(ctx, d, "apply.adopt", t0, false, err, NULL);
        json_decref(out);
        return -1;
    }
    json_t *reg = state_load(ctx->cfg->state_dir, "registry");
    json_t *carry = json_object_get(reg, "nodes");
    json_t *adopted = adopted_names(ctx);
    size_t i, j;
    json_t *name, *n;
    json_array_foreach(json_object_get(out, "registered_descriptors"), i, name) {
        const char *nm = json_string_value(name);
        bool declared = false;
        json_array_foreach(set->all_nodes, j, n) declared =
            declared || !strcmp(json_string_value(json_object_get(n, "name")) ?: "", nm);
        json_array_foreach(carry, j, n) declared =
            declared || !strcmp(json_string_value(json_object_get(n, "name")) ?: "", nm);
        json_array_foreach(adopted, j, n) declared = declared || !strcmp(json_string_value(n), nm);
        if (!declared) json_array_append(adopted, name);
    }
    json_t *next = json_pack("{s:O,s:O}", "nodes", carry ? carry : json_array(), "adopted", adopted);
    if (json_object_get(reg, "manifests_hash"))
        json_object_set(next, "manifests_hash", json_object_get(reg, "manifests_hash"));
    x = state_save(ctx->cfg->state_dir, "registry", next, err);
    char *names = json_dumps(adopted, JSON_COMPACT);
    char *msg = ctl_asprintf("%zu descriptor(s) registered by hand adopted as they are: %s (registers use mode "
                             "merge from now on; declare them in a manifest to manage them)",
                             json_array_size(adopted), names);
    step_done(ctx, d, "apply.adopt", t0, x == 0, x ? err : msg, json_pack("{s:O}", "adopted", adopted));
    free(msg);
    free(names);
    json_decref(next);
    json_decref(adopted);
    json_decref(reg);
    json_decref(out);
    return x;
}

static void run_apply(struct ctl_ctx *ctx, struct deploy *d) {
    char err[CTL_ERR_LEN];
    json_t *cur = state_load(ctx->cfg->state_dir, "current");
    json_t *inst = state_load(ctx->cfg->state_dir, "instance");
    struct manifest_set *set = NULL;
    json_t *final_nodes = NULL;
    int64_t t0 = ctl_mono_ms();
    if (!cur || !instance_ready(ctx, inst)) {
        step_done(ctx, d, "probe", t0, false, "no ready server", NULL);
        deploy_end(ctx, d, "failed", "no ready server to apply manifests to; deploy a release first", NULL);
        goto out;
    }
    step_done(ctx, d, "probe", t0, true, json_string_value(json_object_get(cur, "digest")), NULL);
    if (!(set = load_manifests(ctx, d, err))) {
        char *m = ctl_asprintf("%s; nothing changed", err);
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        goto out;
    }
    if (d->adopt && adopt_descriptors(ctx, d, set, err) < 0) {
        char *m = ctl_asprintf("%s; nothing changed", err);
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        goto out;
    }
    int64_t version = -1;
    bool destructive = false;
    if (apply_manifests(ctx, d, set, &final_nodes, &version, &destructive, err) < 0) {
        char *m = ctl_asprintf("%s; %s", err,
                               destructive ? "a destructive step was applied (backup kept)"
                                           : "nothing changed by the refused step");
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        goto out;
    }
    t0 = ctl_mono_ms();
    json_t *vd = NULL;
    if (verify(ctx, final_nodes, version, &vd, err) < 0) {
        step_done(ctx, d, "verify", t0, false, err, vd);
        deploy_end(ctx, d, "failed", err, NULL);
        goto out;
    }
    step_done(ctx, d, "verify", t0, true, NULL, vd);
    const char *digest = json_string_value(json_object_get(cur, "digest"));
    commit(ctx, d, cur, digest, json_string_value(json_object_get(cur, "image")),
           json_string_value(json_object_get(cur, "revision")), set->hash, d->manifests, false);
    deploy_end(ctx, d, "succeeded", "manifests applied", json_pack("{s:s}", "manifests_hash", set->hash));
out:
    manifest_set_free(set);
    json_decref(final_nodes);
    json_decref(cur);
    json_decref(inst);
}

/* What current.json says about `digest` once it runs again: the previous release's
 * record, or one rebuilt from the releases the journal knows. */
static json_t *release_record(struct ctl_ctx *ctx, json_t *cur, const char *digest) {
    json_t *prev = json_object_get(cur, "previous");
    const char *pd = json_string_value(json_object_get(prev, "digest"));
    if (pd && !strcmp(pd, digest)) return json_deep_copy(prev);
    json_t *rec = json_pack("{s:s,s:s}", "digest", digest, "runtime", ctx->cfg->runtime_kind);
    json_t *all = releases_list(ctx->cfg->state_dir);
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "digest")), digest)) continue;
        if (json_is_string(json_object_get(e, "image"))) json_object_set(rec, "image", json_object_get(e, "image"));
        if (json_is_string(json_object_get(e, "revision")))
            json_object_set(rec, "revision", json_object_get(e, "revision"));
    }
    json_decref(all);
    /* the registry is not changed by a rollback: the manifest set stays */
    if (json_object_get(cur, "manifests_hash"))
        json_object_set(rec, "manifests_hash", json_object_get(cur, "manifests_hash"));
    if (json_object_get(cur, "manifests")) json_object_set(rec, "manifests", json_object_get(cur, "manifests"));
    return rec;
}

static void run_rollback(struct ctl_ctx *ctx, struct deploy *d) {
    char err[CTL_ERR_LEN];
    json_t *cur = state_load(ctx->cfg->state_dir, "current");
    json_t *prev = json_object_get(cur, "previous");
    const char *target = d->target ? d->target : json_string_value(json_object_get(prev, "digest"));
    int64_t t0 = ctl_mono_ms();
    if (!target) {
        deploy_end(ctx, d, "failed", "no previous release recorded: nothing to roll back to", NULL);
        json_decref(cur);
        return;
    }
    {
        char *dir = image_dir(ctx, target);
        struct stat st;
        bool have = stat(dir, &st) == 0;
        free(dir);
        step_done(ctx, d, "release", t0, have, have ? target : "not in the image store",
                  json_pack("{s:s,s:b}", "digest", target, "in_store", have));
        if (!have) {
            char *m = ctl_asprintf("release %s is no longer in the image store (deploy.keep_images); deploy it "
                                   "again by digest (beava-control deploy REPOSITORY@%s); nothing changed",
                                   target, target);
            deploy_end(ctx, d, "failed", m, NULL);
            free(m);
            json_decref(cur);
            return;
        }
        t0 = ctl_mono_ms();
    }
    json_t *how = NULL;
    if (stop_instance(ctx, &how, err) < 0) {
        step_done(ctx, d, "stop", t0, false, err, how);
        deploy_end(ctx, d, "failed", err, NULL);
        json_decref(cur);
        return;
    }
    step_done(ctx, d, "stop", t0, true, NULL, how);
    t0 = ctl_mono_ms();
    json_t *detail = NULL;
    json_t *sd = NULL;
    int x = start_release(ctx, target, d->id, &sd, err);
    step_done(ctx, d, "start", t0, x == 0, x ? err : target, sd);
    if (x == 0) {
        t0 = ctl_mono_ms();
        x = probe(ctx, &detail, err);
        step_done(ctx, d, "probe", t0, x == 0, x ? err : NULL, detail);
    }
    if (x == 0) x = cluster_step(ctx, d, "cluster", err);
    if (x < 0) {
        /* The previous release does not come up: go back to what ran. */
        rollback(ctx, d, cur, "the previous release did not become ready", false);
        json_decref(cur);
        return;
    }
    char ts[40];
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    json_t *next = release_record(ctx, cur, target);
    json_t *old = json_deep_copy(cur);
    json_object_del(old, "previous");
    json_object_set_new(next, "previous", old);
    json_object_set_new(next, "since", json_string(ts));
    json_object_set_new(next, "deploy", json_string(d->id));
    state_save(ctx->cfg->state_dir, "current", next, err);
    json_decref(next);
    char *m = ctl_asprintf("rolled back to %s", target);
    deploy_end(ctx, d, "succeeded", m,
               json_pack("{s:s,s:o?}", "digest", target, "labels", release_labels(ctx, target)));
    free(m);
    json_decref(cur);
}

/* ---- manifests diff (dry run) ------------------------------------------------------------ */

json_t *deploy_manifests_diff(struct ctl_ctx *ctx, const char *dir, char *err) {
    struct manifest_set *set = NULL;
    if (manifest_load(dir, &set, err) < 0) return NULL;
    json_t *reg = state_load(ctx->cfg->state_dir, "registry");
    json_t *full = manifest_step_nodes(set, set->n ? set->n - 1 : 0, json_object_get(reg, "nodes"));
    json_t *diff = NULL, *out = NULL;
    if (dry_run(ctx, full, &diff, err) == 0) {
        char why[CTL_ERR_LEN] = "";
        bool refused =
            set->n && manifest_check_destructive(set, set->n - 1, json_object_get(diff, "destructive"), why) < 0;
        /* tables a forced register would reset: every table a destructive entry is about */
        json_t *resets = json_array(), *tables = manifest_tables(full);
        size_t i, j;
        json_t *e, *t;
        json_array_foreach(json_object_get(diff, "destructive"), i, e) {
            char owner[256];
            manifest_entry_owner(e, owner, sizeof owner);
            json_array_foreach(tables, j, t) {
                if (strcmp(json_string_value(json_object_get(t, "table")), owner)) continue;
                size_t nf = 0, k;
                json_t *n;
                json_array_foreach(full, k, n) {
                    if (!strcmp(json_string_value(json_object_get(n, "name")) ?: "", owner)) {
                        json_t *ops = json_object_get(n, "ops"), *op;
                        size_t q;
                        json_array_foreach(ops, q, op) nf += json_object_size(json_object_get(op, "agg"));
                    }
                }
                bool dup = false;
                json_t *r;
                json_array_foreach(resets, k, r) dup =
                    dup || !strcmp(json_string_value(json_object_get(r, "table")), owner);
                if (!dup)
                    json_array_append_new(resets, json_pack("{s:s,s:I}", "table", owner, "features", (json_int_t)nf));
            }
        }
        json_decref(tables);
        json_t *ids = json_array();
        for (size_t k = 0; k < set->n; k++) json_array_append_new(ids, json_string(set->m[k].id));
        out = json_pack("{s:s,s:s,s:o,s:I,s:O,s:o,s:b,s:s?}", "dir", dir, "hash", set->hash, "manifests", ids, "nodes",
                        (json_int_t)json_array_size(full), "diff", diff, "resets", resets, "would_apply", !refused,
                        "refusal", refused ? why : NULL);
    }
    json_decref(diff);
    json_decref(full);
    json_decref(reg);
    manifest_set_free(set);
    return out;
}

/* ---- restore ---------------------------------------------------------------------------- */

/* Install backup b into an empty data dir: a data dir copy is copied whole; a snapshot
 * goes into <data>/snapshots/ (the server recovers from it, with an empty WAL). */
static int install_backup(struct ctl_ctx *ctx, json_t *b, char *err) {
    const char *data = ctx->cfg->runtime_data_dir;
    const char *path = json_string_value(json_object_get(b, "path"));
    const char *kind = json_string_value(json_object_get(b, "kind"));
    if (!strcmp(kind, "data")) return ctl_copytree(path, data, err);
    char *snapdir = ctl_asprintf("%s/snapshots", data);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char *dst = ctl_asprintf("%s/%s", snapdir, base);
    int rc = ctl_mkdirs(snapdir, 0750, err);
    if (rc == 0) rc = ctl_copytree(path, dst, err);
    free(dst);
    free(snapdir);
    return rc;
}

/* The backup's registry.json (the manifest carry as it was), or NULL. */
static char *backup_registry(struct ctl_ctx *ctx, const char *id, size_t *len) {
    char *p = ctl_asprintf("%s/backups/%s/registry.json", ctx->cfg->state_dir, id);
    char *text = NULL, e2[CTL_ERR_LEN];
    if (ctl_read_file(p, 64u << 20, &text, len, e2) < 0) text = NULL;
    free(p);
    return text;
}

/* Stop, move the data dir aside (never deleted), install the backup, start the running
 * release, gate, verify the registry against the restored manifest carry. A failure puts
 * the moved data dir back and starts the release on it again. */
static void run_restore(struct ctl_ctx *ctx, struct deploy *d) {
    struct ctl_config *cfg = ctx->cfg;
    char err[CTL_ERR_LEN];
    json_t *cur = state_load(cfg->state_dir, "current");
    const char *digest = json_string_value(json_object_get(cur, "digest"));
    json_t *all = backups_list(cfg->state_dir), *b = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e) {
        if (!b && !strcmp(json_string_value(json_object_get(e, "id")), d->target) &&
            json_is_true(json_object_get(e, "exists")))
            b = json_incref(e);
    }
    json_decref(all);
    int64_t t0 = ctl_mono_ms();
    char *aside = ctl_asprintf("%s.before-restore-%s", cfg->runtime_data_dir, d->id);
    char *failed = ctl_asprintf("%s.failed-restore-%s", cfg->runtime_data_dir, d->id);
    char *reg_aside = ctl_asprintf("%s/backups/%s/registry.json", cfg->state_dir, d->id);
    char *bdir = ctl_asprintf("%s/backups/%s", cfg->state_dir, d->id);
    char *reg_now = NULL;
    size_t reg_now_len = 0;
    bool moved = false;
    if (!b || !digest) {
        char *m = !b ? ctl_asprintf("no backup '%s' on disk (see `beava-control backups`); nothing changed", d->target)
                     : ctl_strdup("no release is running to restore under; deploy one first; nothing changed");
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        goto out;
    }
    step_done(ctx, d, "restore.select", t0, true, json_string_value(json_object_get(b, "path")), json_incref(b));
    /* 1. stop */
    t0 = ctl_mono_ms();
    json_t *how = NULL;
    if (stop_instance(ctx, &how, err) < 0) {
        step_done(ctx, d, "stop", t0, false, err, how);
        char *m = ctl_asprintf("cannot stop the server: %s; nothing changed", err);
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        goto out;
    }
    step_done(ctx, d, "stop", t0, true, NULL, how);
    /* 2. move the data dir aside, with the manifest carry */
    t0 = ctl_mono_ms();
    {
        char *rp = ctl_asprintf("%s/registry.json", cfg->state_dir);
        char e2[CTL_ERR_LEN];
        if (ctl_read_file(rp, 64u << 20, &reg_now, &reg_now_len, e2) < 0) reg_now = NULL;
        free(rp);
    }
    int x = ctl_mkdirs(bdir, 0750, err);
    if (x == 0 && reg_now) x = ctl_write_file_atomic(reg_aside, reg_now, reg_now_len, 0640, err);
    if (x == 0 && rename(cfg->runtime_data_dir, aside) < 0 && errno != ENOENT)
        x = ctl_errf(err, "rename %s -> %s: %s", cfg->runtime_data_dir, aside, strerror(errno));
    moved = x == 0;
    step_done(
        ctx, d, "restore.backup", t0, x == 0, x ? err : aside,
        x ? NULL
          : json_pack("{s:s,s:I,s:s}", "path", aside, "bytes", (json_int_t)ctl_tree_bytes(aside), "release", digest));
    if (x < 0) goto fail;
    /* 3. install */
    t0 = ctl_mono_ms();
    x = install_backup(ctx, b, err);
    size_t rl = 0;
    char *reg = x == 0 ? backup_registry(ctx, d->target, &rl) : NULL;
    if (x == 0) {
        char *rp = ctl_asprintf("%s/registry.json", cfg->state_dir);
        if (reg) x = ctl_write_file_atomic(rp, reg, rl, 0640, err);
        free(rp);
    }
    step_done(ctx, d, "restore.install", t0, x == 0, x ? err : cfg->runtime_data_dir,
              x ? NULL
                : json_pack("{s:s,s:I,s:b}", "kind", json_string_value(json_object_get(b, "kind")), "bytes",
                            (json_int_t)ctl_tree_bytes(cfg->runtime_data_dir), "registry_restored", reg != NULL));
    free(reg);
    if (x < 0) goto fail;
    /* 4. start, gate, verify */
    t0 = ctl_mono_ms();
    json_t *sd = NULL;
    x = start_release(ctx, digest, d->id, &sd, err);
    step_done(ctx, d, "start", t0, x == 0, x ? err : digest, sd);
    if (x < 0) goto fail;
    t0 = ctl_mono_ms();
    json_t *detail = NULL;
    x = probe(ctx, &detail, err);
    step_done(ctx, d, "probe", t0, x == 0, x ? err : "admin /ready 200 and data-plane /ping", detail);
    if (x < 0) goto fail;
    if (cluster_step(ctx, d, "cluster", err) < 0) goto fail;
    t0 = ctl_mono_ms();
    json_t *regj = state_load(cfg->state_dir, "registry");
    json_t *vd = NULL;
    x = verify(ctx, json_object_get(regj, "nodes"), -1, &vd, err);
    json_decref(regj);
    step_done(ctx, d, "verify", t0, x == 0, x ? err : NULL, vd);
    if (x < 0) goto fail;
    {
        char *m = ctl_asprintf("restored backup %s (%s) under %s; the data dir before is kept at %s", d->target,
                               json_string_value(json_object_get(b, "kind")), digest, aside);
        deploy_end(ctx, d, "succeeded", m,
                   json_pack("{s:s,s:s,s:s}", "digest", digest, "restored", d->target, "kept", aside));
        free(m);
    }
    goto out;
fail : {
    char *why = ctl_strdup(err);
    char e2[CTL_ERR_LEN] = "";
    int64_t tp = ctl_mono_ms();
    int y = stop_instance(ctx, NULL, e2);
    if (y == 0 && moved) {
        struct stat st;
        if (stat(cfg->runtime_data_dir, &st) == 0 && rename(cfg->runtime_data_dir, failed) < 0)
            y = ctl_errf(e2, "rename %s: %s", cfg->runtime_data_dir, strerror(errno));
        if (y == 0 && stat(aside, &st) == 0 && rename(aside, cfg->runtime_data_dir) < 0)
            y = ctl_errf(e2, "rename %s back: %s", aside, strerror(errno));
        char *rp = ctl_asprintf("%s/registry.json", cfg->state_dir);
        if (y == 0 && reg_now) y = ctl_write_file_atomic(rp, reg_now, reg_now_len, 0640, e2);
        free(rp);
    }
    step_done(ctx, d, "restore.put-back", tp, y == 0, y ? e2 : "the data dir is back as it was",
              y ? NULL : json_pack("{s:s,s:s}", "data_dir", cfg->runtime_data_dir, "failed_copy", failed));
    int z = -1;
    if (y == 0) {
        tp = ctl_mono_ms();
        json_t *sd2 = NULL, *pd = NULL;
        z = start_release(ctx, digest, d->id, &sd2, e2);
        step_done(ctx, d, "rollback.start", tp, z == 0, z ? e2 : digest, sd2);
        if (z == 0) {
            tp = ctl_mono_ms();
            z = probe(ctx, &pd, e2);
            step_done(ctx, d, "rollback.probe", tp, z == 0, z ? e2 : NULL, pd);
        }
    }
    char *m = z == 0
        ? ctl_asprintf("restore failed: %s; the data dir was put back and %s runs on it", why, digest)
        : ctl_asprintf("restore failed: %s; putting the data back failed too: %s (moved data: %s)", why, e2, aside);
    deploy_end(ctx, d, z == 0 ? "rolled_back" : "failed", m, json_pack("{s:s}", "rolled_back_to", digest));
    free(m);
    free(why);
}
out:
    json_decref(b);
    json_decref(cur);
    free(reg_now);
    free(bdir);
    free(reg_aside);
    free(failed);
    free(aside);
}

void deploy_run(struct ctl_ctx *ctx, struct deploy *d) {
    char ts[40];
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    pthread_mutex_lock(&ctx->mu);
    json_object_set_new(d->rec, "status", json_string("running"));
    json_object_set_new(d->rec, "started", json_string(ts));
    json_object_set_new(d->rec, "started_ms", json_integer(ctl_now_ms()));
    pthread_mutex_unlock(&ctx->mu);
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:s}", "event", "deploy.start", "deploy", d->id, "kind", d->kind, "source", d->source);
    if (d->image) json_object_set_new(j, "image", json_string(d->image));
    if (d->revision) json_object_set_new(j, "revision", json_string(d->revision));
    if (d->manifests) json_object_set_new(j, "manifests", json_string(d->manifests));
    if (d->target) json_object_set_new(j, "target", json_string(d->target));
    journal_rec(ctx, j);
    dlog("deploy.start", json_deep_copy(j));
    json_decref(j);
    if (!strcmp(d->kind, "apply")) run_apply(ctx, d);
    else if (!strcmp(d->kind, "rollback")) run_rollback(ctx, d);
    else if (!strcmp(d->kind, "restore")) run_restore(ctx, d);
    else run_deploy(ctx, d);
}

/* ---- recovery and supervision -------------------------------------------------------------- */

/* A restore the daemon did not finish: put the moved data dir (and the manifest carry) back
 * and start the current release on it. */
static void recover_restore(struct ctl_ctx *ctx, struct deploy *d, json_t *steps, json_t *cur) {
    struct ctl_config *cfg = ctx->cfg;
    char err[CTL_ERR_LEN] = "";
    const char *aside = NULL;
    size_t k;
    json_t *st;
    json_array_foreach(steps, k, st) {
        const char *n = json_string_value(json_object_get(st, "step"));
        if (n && !strcmp(n, "restore.backup") && json_is_true(json_object_get(st, "ok")))
            aside = json_string_value(json_object_get(json_object_get(st, "detail"), "path"));
    }
    struct stat sb;
    if (!aside || stat(aside, &sb) != 0) {
        rollback(ctx, d, cur, "the daemon restarted during a restore, before the data dir was moved", false);
        return;
    }
    int64_t t0 = ctl_mono_ms();
    int x = stop_instance(ctx, NULL, err);
    char *failed = ctl_asprintf("%s.failed-restore-%s", cfg->runtime_data_dir, d->id);
    if (x == 0 && stat(cfg->runtime_data_dir, &sb) == 0 && rename(cfg->runtime_data_dir, failed) < 0)
        x = ctl_errf(err, "rename %s: %s", cfg->runtime_data_dir, strerror(errno));
    if (x == 0 && rename(aside, cfg->runtime_data_dir) < 0)
        x = ctl_errf(err, "rename %s back: %s", aside, strerror(errno));
    size_t rl = 0;
    char *reg = x == 0 ? backup_registry(ctx, d->id, &rl) : NULL;
    if (reg) {
        char *rp = ctl_asprintf("%s/registry.json", cfg->state_dir);
        x = ctl_write_file_atomic(rp, reg, rl, 0640, err);
        free(rp);
        free(reg);
    }
    step_done(ctx, d, "restore.put-back", t0, x == 0, x ? err : "the data dir is back as it was",
              json_pack("{s:s,s:s}", "data_dir", cfg->runtime_data_dir, "failed_copy", failed));
    free(failed);
    if (x < 0) {
        char *m = ctl_asprintf("the daemon restarted during a restore and could not put the data back: %s (moved "
                               "data: %s)",
                               err, aside);
        deploy_end(ctx, d, "failed", m, NULL);
        free(m);
        return;
    }
    rollback(ctx, d, cur, "the daemon restarted during a restore; the data dir was put back", false);
}

void deploy_recover(struct ctl_ctx *ctx) {
    char path[4096], err[CTL_ERR_LEN];
    snprintf(path, sizeof path, "%s/journal", ctx->cfg->state_dir);
    json_t *recs = journal_read(path, NULL);
    json_t *hist = journal_history(recs, 1000000);
    json_decref(recs);
    size_t i;
    json_t *h;
    /* history is newest first; at most one deploy can have been running */
    json_array_foreach(hist, i, h) {
        const char *status = json_string_value(json_object_get(h, "status"));
        const char *id = json_string_value(json_object_get(h, "id"));
        if (!status || !id || json_object_get(h, "ended")) continue;
        const char *kind = json_string_value(json_object_get(h, "kind"));
        struct deploy *d =
            deploy_new(kind ? kind : "deploy", json_string_value(json_object_get(h, "image")), NULL, NULL, "recovery");
        snprintf(d->id, sizeof d->id, "%s", id);
        if (!strcmp(status, "queued")) {
            deploy_end(ctx, d, "cancelled", "the daemon restarted before this deploy started; send it again", NULL);
            deploy_free(d);
            continue;
        }
        /* It was running: finish it if it had verified, else roll back. */
        json_t *steps = json_object_get(h, "steps");
        bool verified = false, ready = false, destructive = false, backup = false;
        const char *last = "start";
        const char *digest = NULL, *mhash = NULL;
        size_t k;
        json_t *s;
        json_array_foreach(steps, k, s) {
            const char *n = json_string_value(json_object_get(s, "step"));
            bool ok = json_is_true(json_object_get(s, "ok"));
            last = n ? n : last;
            if (!n || !ok) continue;
            if (!strcmp(n, "verify")) verified = true;
            if (!strcmp(n, "probe")) ready = true;
            if (!strcmp(n, "backup")) backup = true;
            if (!strcmp(n, "apply.destructive")) destructive = true;
            if (!strcmp(n, "resolve"))
                digest = json_string_value(json_object_get(json_object_get(s, "detail"), "digest"));
            if (!strcmp(n, "manifests"))
                mhash = json_string_value(json_object_get(json_object_get(s, "detail"), "hash"));
        }
        json_t *cur = state_load(ctx->cfg->state_dir, "current");
        json_t *rec = json_pack("{s:s,s:s,s:s}", "event", "recovery", "deploy", id, "interrupted_at", last);
        journal_rec(ctx, rec);
        json_decref(rec);
        json_t *inst = state_load(ctx->cfg->state_dir, "instance");
        if (verified && digest && !strcmp(d->kind, "deploy") && instance_ready(ctx, inst)) {
            bool restarted = !json_object_get(cur, "digest") ||
                strcmp(json_string_value(json_object_get(cur, "digest")), digest) != 0;
            commit(ctx, d, cur, digest, d->image, NULL, mhash, NULL, restarted);
            deploy_end(ctx, d, "succeeded", "the daemon restarted after verification; finished", NULL);
        } else if (!strcmp(d->kind, "restore")) {
            recover_restore(ctx, d, steps, cur);
        } else if (!strcmp(d->kind, "apply")) {
            deploy_end(ctx, d, "failed",
                       destructive
                           ? "the daemon restarted during apply; a destructive step may have been applied (backup kept)"
                           : "the daemon restarted during apply; run apply again",
                       NULL);
        } else {
            char *why = ctl_asprintf("the daemon restarted during step '%s'", last);
            json_t *running = state_load(ctx->cfg->state_dir, "instance");
            const char *rd = json_string_value(json_object_get(running, "digest"));
            const char *cd = json_string_value(json_object_get(cur, "digest"));
            if (cd && rd && !strcmp(cd, rd) && instance_ready(ctx, running) && !destructive) {
                deploy_end(ctx, d, "rolled_back", why, json_pack("{s:s}", "rolled_back_to", cd));
            } else {
                rollback(ctx, d, cur, why, backup && (!ready || destructive));
            }
            json_decref(running);
            free(why);
        }
        json_decref(inst);
        json_decref(cur);
        deploy_free(d);
    }
    json_decref(hist);
    (void)err;
}

/* The exit status of a dead instance: reaped already into exits, or reaped here (the
 * server, or bwrap's monitor which exits with its child's status) once its processes have
 * ended (runtime_wait_ended: a pidfd, up to INSTANCE_EXIT_WAIT_MS). NULL when unknown (a
 * server started by an earlier daemon is not our child). */
static char *instance_exit(json_t *inst, json_t *exits) {
    const char *keys[] = { "monitor_pid", "pid" };
    runtime_wait_ended(inst, INSTANCE_EXIT_WAIT_MS);
    runtime_reap(exits);
    for (int k = 0; k < 2; k++) {
        json_int_t pid = json_integer_value(json_object_get(inst, keys[k]));
        if (pid <= 0) continue;
        char key[24];
        snprintf(key, sizeof key, "%lld", (long long)pid);
        json_t *st = json_object_get(exits, key);
        if (!st) continue;
        int ws = (int)json_integer_value(st);
        /* bwrap's monitor exits with 128 + N when its child was killed by signal N */
        char *t = k == 0 && WIFEXITED(ws) && WEXITSTATUS(ws) > 128
            ? ctl_asprintf("killed by signal %d (%s)", WEXITSTATUS(ws) - 128, strsignal(WEXITSTATUS(ws) - 128))
            : runtime_exit_text(ws);
        json_object_del(exits, key);
        return t;
    }
    return NULL;
}

void deploy_supervise(struct ctl_ctx *ctx, json_t *state, json_t *exits) {
    json_t *cur = state_load(ctx->cfg->state_dir, "current");
    const char *digest = json_string_value(json_object_get(cur, "digest"));
    if (!digest) {
        json_decref(cur);
        return;
    }
    json_t *inst = state_load(ctx->cfg->state_dir, "instance");
    if (inst && runtime_alive(ctx->cfg, inst)) {
        if (json_integer_value(json_object_get(state, "restarts")) &&
            ctl_mono_ms() - json_integer_value(json_object_get(state, "last")) > 600000)
            json_object_set_new(state, "restarts", json_integer(0));
        json_decref(inst);
        json_decref(cur);
        return;
    }
    int64_t now = ctl_mono_ms();
    json_int_t restarts = json_integer_value(json_object_get(state, "restarts"));
    json_int_t backoff = restarts >= 6 ? 60000 : (1000LL << restarts);
    if (now - json_integer_value(json_object_get(state, "last")) < backoff) {
        json_decref(inst);
        json_decref(cur);
        return;
    }
    char err[CTL_ERR_LEN];
    const char *log = json_string_value(json_object_get(inst, "log"));
    char *tail = log ? runtime_log_tail(log, 20) : ctl_strdup("");
    char *exit_text = inst ? instance_exit(inst, exits) : NULL;
    char id[64], ts[40];
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    /* r-20250101T120000-<ms>: the restart's own history entry */
    snprintf(id, sizeof id, "r-%.4s%.2s%.2sT%.2s%.2s%.2s-%03lld", ts, ts + 5, ts + 8, ts + 11, ts + 14, ts + 17,
             (long long)(ctl_now_ms() % 1000));
    int64_t t0 = ctl_mono_ms();
    json_t *sd = NULL;
    int rc = start_release(ctx, digest, id, &sd, err);
    json_t *rec = json_pack("{s:s,s:s,s:s,s:b,s:I,s:s,s:s,s:I,s:O?,s:O?}", "event", "supervisor.restart", "deploy", id,
                            "digest", digest, "ok", rc == 0, "restarts", restarts + 1, "log_tail", tail, "exit",
                            exit_text ? exit_text : "unknown (not a child of this daemon)", "ms",
                            (json_int_t)(ctl_mono_ms() - t0), "old_pid", json_object_get(inst, "pid"), "new_pid",
                            json_object_get(sd, "pid"));
    if (json_object_get(cur, "image")) json_object_set(rec, "image", json_object_get(cur, "image"));
    if (rc < 0) json_object_set_new(rec, "message", json_string(err));
    journal_rec(ctx, rec);
    json_t *l = json_deep_copy(rec);
    json_object_del(l, "event");
    dlog("supervisor.restart", l);
    json_decref(rec);
    json_decref(sd);
    free(exit_text);
    free(tail);
    json_object_set_new(state, "restarts", json_integer(restarts + 1));
    json_object_set_new(state, "last", json_integer(now));
    json_object_set_new(state, "degraded", json_boolean(restarts + 1 >= 5));
    json_decref(inst);
    json_decref(cur);
}

json_t *deploy_status(struct ctl_ctx *ctx) {
    json_t *cur = state_load(ctx->cfg->state_dir, "current");
    json_t *inst = state_load(ctx->cfg->state_dir, "instance");
    json_t *out = json_object();
    json_object_set_new(out, "current", cur ? cur : json_null());
    bool alive = inst && runtime_alive(ctx->cfg, inst);
    struct beava_ep ep = endpoint(ctx);
    char why[CTL_ERR_LEN] = "";
    bool ready = alive && beava_ready(&ep, why, sizeof why);
    if (inst) {
        json_object_set_new(inst, "alive", json_boolean(alive));
        json_object_set_new(inst, "ready", json_boolean(ready));
        if (!ready && *why) json_object_set_new(inst, "not_ready", json_string(why));
    }
    const char *cd = json_string_value(json_object_get(cur, "digest"));
    const char *id = json_string_value(json_object_get(inst, "digest"));
    if (cd) {
        json_t *lb = release_labels(ctx, cd);
        json_object_set_new(out, "labels", lb ? lb : json_object());
        const char *rev = json_string_value(json_object_get(lb, "org.opencontainers.image.revision"));
        if (rev && !json_object_get(cur, "revision")) json_object_set_new(cur, "revision", json_string(rev));
    }
    /* During a deploy the instance may be the new release's: say so instead of mixing it
     * with the current release. */
    json_object_set_new(out, "instance_is_current", json_boolean(inst && cd && id && !strcmp(cd, id)));
    json_object_set_new(out, "instance", inst ? inst : json_null());
    json_object_set_new(out, "runtime", json_string(ctx->cfg->runtime_kind));
    json_object_set_new(out, "state", json_string(!cur ? "empty" : ready ? "running" : alive ? "starting" : "down"));
    return out;
}
