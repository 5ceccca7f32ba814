/*
 * cluster_int.h - the cluster module's private state, shared by its files (cluster.c:
 * connection, stream, lifecycle, status and metrics; clpub.c: publishing pushes and
 * registry records; clapply.c: consuming and applying; clread.c: reads from any node;
 * clsnap.c: cluster snapshots and recovery, partition snapshots served to peers;
 * clmember.c: membership through the log, building gained partitions, dropping lost ones).
 * Nothing outside beava/src/cluster/ includes
 * it. cluster.h tells the design and the lock order.
 */
#ifndef BEAVA_CLUSTER_INT_H
#define BEAVA_CLUSTER_INT_H

#include <limits.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "cluster.h"
#include "partmap.h"

#define CLUSTER_PUBLISHERS 4                 /* batches published at once */
#define CLUSTER_MSG_MAX (512u * 1024u)       /* body bytes per message (NATS max_payload is 1 MiB) */
#define CLUSTER_PUBLISH_TRIES 3              /* same message id each time: JetStream de-duplicates */
#define CLUSTER_PREFIX_MAX (CONFIG_CLUSTER_ID_MAX + 16)   /* "beava.<name>", "BEAVA_<name>" */
#define CLUSTER_SUBJECT_MAX (CLUSTER_PREFIX_MAX + 64)
#define CLUSTER_ORIGIN_MAX 128               /* "<node>-<boot ns>" */
#define CLUSTER_ID_MAX (CLUSTER_ORIGIN_MAX + 32)   /* message ids */
#define CLUSTER_URLS_MAX 16
#define CLUSTER_CLOSE_WAIT_MS 5000           /* nats_CloseAndWait at shutdown */
#define CLUSTER_APPLY_ERRORS_LOGGED 10
#define CLUSTER_RPC_QUEUE "get"             /* queue group of a partition's owners */
#define CLUSTER_RESET_TRIES 5                /* a reset refused on a stale base is published again */
#define SNAP_MAGIC "BVCLSN02"
#define SNAP_MAGIC_LEN 8
#define PSNAP_MAGIC "BVCLPS01"                /* a partition snapshot served to a peer */
#define CLUSTER_TARGET_BUILDING UINT64_MAX    /* target[p]/reg_target while built by clmember */
#define MEMBER_RETRY_MS 1000                 /* a failed build is tried again after this */
#define MEMBER_CAS_TRIES 50                  /* membership record: expected-sequence retries */
#define MEMBER_FETCH_TIMEOUT_MS 30000        /* a peer snapshot: per read on the socket */

/* One membership record (the members stream's log subject; each record is the whole
 * state). nnext 0: no change in progress. */
typedef struct mstate {
    uint64_t seq;                 /* its stream sequence */
    uint64_t epoch;
    char **nodes, **next, **ready;
    size_t nnodes, nnext, nready;
} mstate;

typedef struct pub_job {
    engine_batch *b;
    const engine_log_record *recs;
    size_t n;
    struct pub_job *next;
} pub_job;

struct pub_scratch;                  /* clpub.c */

/* Per partition (apply_mu): cluster.subs[p]. */
typedef struct part_sub {
    struct cluster *c;
    unsigned p;
    natsSubscription *sub;
    natsSubscription *rpc;        /* forwarded gets, once caught up and owned in the current epoch */
    uint64_t held;                /* reg_mu: the registry record its next message waits for (0: none) */
    natsSubscription *rpc_draining;   /* lost: the queue group left, requests already queued answered */
    bool applying;                /* sub consumes it: owned now or gained by the pending change */
    bool built;                   /* applying and caught up once (may serve reads, peers' snapshots) */
    int64_t drop_at_ms;           /* lost: stop applying and drop its entities then (0: not lost) */
} part_sub;

struct cluster {
    const bv_config *cfg;
    const bv_log *log;
    _Atomic(partmap *) map;                  /* the current epoch's owners (swapped by clmember) */
    unsigned nparts;
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    char stream[CLUSTER_PREFIX_MAX];
    char prefix[CLUSTER_PREFIX_MAX];         /* "beava.<name>" */
    char origin[CLUSTER_ORIGIN_MAX];             /* "<node>-<boot ns>" */
    engine *eng;
    _Atomic uint64_t msg_counter;

    /* publishers */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    pub_job *q_head, *q_tail;
    bool q_stop;
    struct pub_scratch *pubs;                /* CLUSTER_PUBLISHERS */
    int npubs;                               /* threads started */

    /* registry catch-ups of push batches naming an unknown event (clapply.c): one thread,
     * one JetStream request for every batch queued meanwhile, off the I/O threads */
    pthread_mutex_t cu_mu;
    pthread_cond_t cu_cv;
    struct cu_job *cu_head, *cu_tail;
    bool cu_stop, cu_started;
    pthread_t cu_thread;
    _Atomic uint64_t catch_ups, catch_up_batches;

    /* apply (apply_mu) */
    pthread_mutex_t apply_mu;
    pthread_cond_t apply_cv;                 /* a partition's applied sequence moved */
    unsigned cur_part;                       /* the partition being applied (keep_part) */
    engine_logged *recs;                     /* one message's records */
    size_t recs_cap;
    uint64_t *applied;                       /* per partition: last stream sequence applied */
    uint64_t *target;                        /* per partition: the stream's last at start */
    bool *snap_held;                         /* per partition: the local snapshot held it */
    part_sub *subs;                          /* [nparts], indexed by partition */
    size_t nsubs;                            /* = nparts */
    natsSubscription *reg_sub;
    uint64_t applied_since_snap;
    uint64_t apply_errors_logged;
    atomic_bool *ready;
    bool caught_up;

    /* registry (reg_mu) */
    pthread_mutex_t reg_mu;
    pthread_cond_t reg_cv;
    uint64_t reg_applied;                    /* last registry record applied (or skipped as void) here */
    uint64_t reg_target;
    bool own_pending;                        /* a register of ours is being published */
    bool stopping;

    /* snapshots */
    char snap_dir[PATH_MAX];
    int lock_fd;                             /* flock on <snap_dir>/LOCK: one process per data dir */
    uint64_t snap_counter;                   /* apply_mu */
    pthread_t snap_thread;
    bool snap_started;
    pthread_mutex_t snap_mu;
    pthread_cond_t snap_cv;
    bool snap_stop;

    /* membership (clmember.c). member_mu is a leaf; the builder thread alone changes
     * ownership, under apply_mu. */
    char mstream[CLUSTER_PREFIX_MAX + 16];   /* "BEAVA_<name>_MEMBERS" */
    char mprefix[CLUSTER_PREFIX_MAX + 16];   /* "beava-members.<name>" */
    pthread_mutex_t member_mu;
    pthread_cond_t member_cv;
    mstate *mlatest;                         /* newest record seen (member_mu) */
    uint64_t epoch;                          /* of map (member_mu) */
    uint64_t mseq_seen;                      /* the record the builder followed last (builder) */
    partmap *next_map;                       /* the pending change's owners, or NULL (member_mu) */
    partmap **retired;                       /* maps replaced (read lock-free: freed at close) */
    size_t nretired;
    natsSubscription *member_sub;
    pthread_t member_thread;
    bool member_started, member_kick;
    atomic_bool member_stop;
    char build_error[512];                   /* why a partition or the registry cannot be built (member_mu) */
    char admin_addr[CONFIG_ADDR_MAX], data_addr[CONFIG_ADDR_MAX];
    char *admin_token;                       /* sent to peers; NULL = none */
    bool recovered;                          /* a local snapshot was loaded */

    _Atomic uint64_t reads_local, reads_forwarded, reads_served_for_peers, reads_not_caught_up, reads_no_owner;
    _Atomic uint64_t publish_us_sum, publish_batches;   /* batch publish latency (summary) */
    _Atomic uint64_t published_msgs, publish_retries, publish_failures, pushes_acked, pushes_failed, applied_msgs,
        apply_errors, snapshots, snapshot_failures, reg_published, reg_conflicts, peer_snapshots_served,
        peer_snapshots_fetched, peer_snapshot_failures, partitions_dropped, member_changes,
        reg_void;                                /* registry records skipped: stored on a stale base */
};

/* helpers (cluster.c) */
int cl_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline uint64_t cl_relaxed(_Atomic uint64_t *v) { return atomic_load_explicit(v, memory_order_relaxed); }
static inline void cl_bump(_Atomic uint64_t *v) { atomic_fetch_add_explicit(v, 1, memory_order_relaxed); }
const char *cl_nats_why(natsStatus s, jsErrCode jerr, char *buf, size_t n);
void cl_part_subject(const cluster *c, unsigned p, char *out, size_t n);
void cl_reg_subject(const cluster *c, char *out, size_t n);
uint64_t cl_header_u64(natsMsg *m, const char *key);
/* The stream sc describes: its info if it exists, else created (or, if another node
 * created it meanwhile, its info then). *si to destroy on NATS_OK. */
natsStatus cl_stream_open(cluster *c, jsStreamConfig *sc, jsStreamInfo **si, jsErrCode *jerr);
/* Publish m and wait (cluster.publish_timeout_ms) for JetStream's ack: *seq is where it
 * was stored. msgid NULL: no de-duplication id. m stays the caller's. */
natsStatus cl_js_publish(cluster *c, natsMsg *m, const char *msgid, uint64_t *seq, jsErrCode *jerr);

/* publishing (clpub.c) */
int clpub_start(cluster *c, char *err, size_t errlen);
void clpub_stop(cluster *c);      /* answers what is queued, joins the threads */
void clpub_free(cluster *c);
void clpub_publish(void *ctx, engine_batch *b, const engine_log_record *recs, size_t n);
int clpub_reg_append(void *ctx, int kind, const void *payload, size_t len, uint64_t *lsn, char *reason, size_t rlen);
int clpub_reg_wait(void *ctx, uint64_t lsn, char *reason, size_t rlen);
int clpub_reset(void *ctx, bv_buf *out);          /* engine_log_backend.reset */
/* The reset markers of registry record `reset` on the partitions (all, or this node's):
 * one message each, its message id fixed by (reset, partition), so JetStream stores each
 * once however many nodes publish it. Returns how many were not acknowledged. */
size_t clpub_reset_markers(cluster *c, uint64_t reset, bool owned_only);

/* consuming (clapply.c) */
bool clapply_keep_part(void *ctx, const char *table, const char *key, size_t klen);
void clapply_check_caught_up(cluster *c);
void clapply_reg_catch_up(void *ctx);    /* engine_log_backend.registry_catch_up */
void clapply_reg_catch_up_push(void *ctx, engine_batch *b);   /* engine_log_backend.registry_catch_up_push */
int clapply_catch_up_start(cluster *c, char *err, size_t errlen);
void clapply_catch_up_stop(cluster *c);  /* resumes what is queued, joins the thread */
void clapply_reg_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure);
void clapply_part_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure);
int clapply_subscribe_from(cluster *c, const char *subj, uint64_t after, natsMsgHandler cb, void *closure,
                           natsSubscription **sub, char *err, size_t errlen);
/* The stream's last sequence on a subject now (0: none). */
uint64_t cl_last_seq(cluster *c, const char *subj);
uint64_t cl_last_seq_within(cluster *c, const char *subj, unsigned wait_ms);   /* 0 = publish_timeout_ms */
/* An absolute CLOCK_REALTIME deadline (for pthread_cond_timedwait) cluster.read_wait_ms from now. */
void cl_read_deadline(const cluster *c, struct timespec *dl);

/* reads (clread.c) */
int clread_get(void *ctx, engine_transport t, const json_t *req, bv_buf *out);
void clread_batch_get(void *ctx, const json_t *reqs, char **fwd);
void clread_subscribe(cluster *c);
/* The error envelope ({"error":{"code","reason"}}, jsonw_error) in out; returns status. */
int cl_error(bv_buf *out, int status, const char *code, const char *reason);
static inline int cl_read_error(bv_buf *out, const char *code, const char *reason) {
    return cl_error(out, 503, code, reason);
}

/* snapshots (clsnap.c) */
int clsnap_take(cluster *c, char *err, size_t errlen);
void *clsnap_main(void *arg);
/* Admin GET /cluster/snapshot?parts=1,2: the partitions' entities, the registry and their
 * applied sequences, CRC-32C (PSNAP_MAGIC). Returns the status. */
int clsnap_serve(cluster *c, const char *query, bv_buf *out, const char **ctype);
/* Fetch partitions `parts` (in[p] set) from the peer at addr and merge them into the
 * engine; then applied[p] is the peer's. 0, or -1 with why. */
int clsnap_fetch(cluster *c, const bool *in, const char *peer, const char *addr, char *why, size_t wl);
/* The stream's first sequence now (everything from it on is still stored); 0 = unknown. */
uint64_t cl_stream_first_seq(cluster *c);
/* Does the stream still hold every message of subj after `applied` (first: the stream's
 * first sequence): consuming from there loses nothing. An emptied subject counts as
 * covered only when `held` (the local snapshot held that partition, or the registry). */
bool cl_covered(cluster *c, uint64_t applied, const char *subj, uint64_t first, bool held);

/* membership (clmember.c) */
int clmember_open(cluster *c, char *err, size_t errlen);   /* the map from the log (or seed it) */
int clmember_start(cluster *c, char *err, size_t errlen);  /* watcher and builder threads */
void clmember_stop(cluster *c);
void clmember_free(cluster *c);
/* Does this node apply p: owned in the current epoch or gained by the pending change. */
bool clmember_wants(cluster *c, unsigned p);
void clmember_status(cluster *c, bv_buf *out);              /* GET /cluster members */
int clmember_request(cluster *c, const char *body, size_t len, bv_buf *out);   /* POST /cluster/members */

#endif
