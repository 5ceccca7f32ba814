/*
 * deploy.h — one deploy, from trigger to journal, and the recovery after a crash.
 *
 * The pipeline reads top to bottom in deploy.c:
 *   resolve digest -> manifests (load, conflicts) -> no-op check -> pull + verify -> unpack
 *   -> stop old -> backup data dir -> start new -> probe -> apply manifests -> verify
 *   -> commit (current.json) -> journal
 * Any failure after the old server was stopped rolls back to the previous release
 * (restoring the data dir copy when the new version never became ready or a destructive
 * change was applied) and says so in the journal.
 *
 * Kinds: "deploy" (image [+ manifests]), "apply" (manifests only, no restart), "rollback"
 * (to the previous release recorded in current.json, or to any release still in the image
 * store: `target`), "restore" (a backup into the data dir: `target` is its id).
 *
 * Threading: deploy_run runs on the daemon's single worker thread (deploys are serialised
 * there); readers look at d->rec only under ctx->mu.
 */
#ifndef CTL_DEPLOY_H
#define CTL_DEPLOY_H

#include "config.h"
#include "journal.h"
#include "listeners.h"
#include "notify.h"
#include <jansson.h>
#include <pthread.h>

struct ctl_ctx {
    struct ctl_config *cfg;
    struct journal *journal;
    char *token;                    /* admin bearer token, or NULL */
    pthread_mutex_t mu;             /* guards every struct deploy's rec */
    struct ctl_listeners listeners; /* the server's sockets, held across restarts (worker) */
    struct notifier *notifier;      /* the deploy webhook, or NULL */
};

struct deploy {
    char id[64];
    char kind[16];   /* deploy | apply | rollback */
    char *image;     /* deploy: the reference as asked ("local" for the process runtime) */
    char *revision;  /* optional git sha the image must carry */
    char *manifests; /* manifest dir/file (host path) or NULL for the configured default */
    char *source;    /* "cli", "trigger:<delivery>", "recovery" */
    char *target;    /* rollback: the release digest (NULL = previous); restore: backup id */
    bool adopt;      /* apply --adopt: keep descriptors registered by hand */
    json_t *rec;     /* live record: {id, kind, image, status, message, steps[]} */
};

/* Make a deploy (id generated, status "queued"). Strings are copied. */
struct deploy *deploy_new(const char *kind, const char *image, const char *revision, const char *manifests,
                          const char *source);
void deploy_free(struct deploy *d);

/* Run to the end. Final status in rec: succeeded | noop | failed | rolled_back. */
void deploy_run(struct ctl_ctx *ctx, struct deploy *d);

/* After a daemon (re)start: finish or roll back a deploy the journal shows unfinished,
 * cancel deploys that were queued, and record which. */
void deploy_recover(struct ctl_ctx *ctx);

/* Keep the current release running: restart it when its process is gone (bounded
 * backoff kept in *state, an object the caller owns). Called by the idle worker. exits:
 * the caller's reaped wait statuses (runtime_reap), for the restart's history entry. */
void deploy_supervise(struct ctl_ctx *ctx, json_t *state, json_t *exits);

/* Dry run of the manifest set at dir against the live server (nothing changes):
 * {"dir","hash","manifests","nodes","diff":{additive,destructive,already_present},
 *  "resets":[{"table","features"}],"would_apply","refusal"}. NULL with err on failure. */
json_t *deploy_manifests_diff(struct ctl_ctx *ctx, const char *dir, char *err);

/* Hold the server's listening sockets (runtime.hold_sockets, process and bwrap): bind
 * them, or take them back from the running instance. Logs what it did. */
void deploy_hold_listeners(struct ctl_ctx *ctx);

/* Current status document for `status` / GET /v1/status. */
json_t *deploy_status(struct ctl_ctx *ctx);

#endif
