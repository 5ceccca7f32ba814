/*
 * cluster.c - the cluster on NATS JetStream (see cluster.h for the design).
 *
 * Threads: CLUSTER_PUBLISHERS publisher threads (a push batch each at a time: all its
 * messages published at once, their JetStream acks collected on the thread's inbox),
 * the NATS library's delivery threads (one per subscription: the registry, each owned
 * partition and, once caught up, each owned partition's forwarded reads), and the
 * snapshot timer.
 *
 * Message body of a partition message: records, each u32 length (little-endian) then
 * an event record (evrec). Headers: Beava-Reg (registry sequence the records were
 * validated against). Registry message: the register body (or empty for a reset),
 * headers Beava-Kind (REC_REGISTER / REC_RESET) and Beava-Origin (node id and boot
 * time: the publishing process skips it, it applied the record when it published it).
 *
 * Known limits of this first slice (README "Cluster"): the node list is fixed (no
 * rebalancing), get and batch_get are forwarded but not the legacy reads, the dedupe
 * by event key is not applied, a reset is not ordered with the events published before
 * it, and a node with a lost data dir rebuilds from the stream alone.
 */
#include "cluster.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "crc32c.h"
#include "fsutil.h"
#include "partmap.h"
#include "store.h"

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
#define SNAP_MAGIC "BVCLSN01"
#define SNAP_MAGIC_LEN 8

typedef struct pub_job {
    engine_batch *b;
    const engine_log_record *recs;
    size_t n;
    struct pub_job *next;
} pub_job;

struct pub_scratch;

typedef struct part_sub {
    struct cluster *c;
    unsigned p;
    natsSubscription *sub;
    natsSubscription *rpc;        /* forwarded gets, once caught up */
} part_sub;

struct cluster {
    const bv_config *cfg;
    const bv_log *log;
    partmap *map;
    size_t self;
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

    /* apply (apply_mu) */
    pthread_mutex_t apply_mu;
    pthread_cond_t apply_cv;                 /* a partition's applied sequence moved */
    unsigned cur_part;                       /* the partition being applied (keep_part) */
    engine_logged *recs;                     /* one message's records */
    size_t recs_cap;
    uint64_t *applied;                       /* per partition: last stream sequence applied */
    uint64_t *target;                        /* per partition: the stream's last at start */
    part_sub *subs;
    size_t nsubs;
    natsSubscription *reg_sub;
    uint64_t applied_since_snap;
    uint64_t apply_errors_logged;
    atomic_bool *ready;
    bool caught_up;

    /* registry (reg_mu) */
    pthread_mutex_t reg_mu;
    pthread_cond_t reg_cv;
    uint64_t reg_applied;                    /* last registry record applied here */
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

    _Atomic uint64_t reads_local, reads_forwarded, reads_served_for_peers, reads_not_caught_up, reads_no_owner;
    _Atomic uint64_t published_msgs, publish_retries, publish_failures, pushes_acked, pushes_failed, applied_msgs,
        apply_errors, snapshots, snapshot_failures, reg_published, reg_conflicts;
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static uint64_t relaxed(_Atomic uint64_t *v) { return atomic_load_explicit(v, memory_order_relaxed); }
static void bump(_Atomic uint64_t *v) { atomic_fetch_add_explicit(v, 1, memory_order_relaxed); }

static const char *nats_why(natsStatus s, jsErrCode jerr, char *buf, size_t n) {
    const char *last = nats_GetLastError(NULL);
    snprintf(buf, n, "%s (js error %d)%s%s", natsStatus_GetText(s), (int)jerr, last && *last ? ": " : "",
             last ? last : "");
    return buf;
}

static void part_subject(const cluster *c, unsigned p, char *out, size_t n) {
    snprintf(out, n, "%s.p.%u", c->prefix, p);
}

static void reg_subject(const cluster *c, char *out, size_t n) {
    snprintf(out, n, "%s.reg", c->prefix);
}

static uint64_t msg_stream_seq(natsMsg *m) {
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, m) != NATS_OK || !meta) return 0;
    uint64_t s = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
    return s;
}

static uint64_t header_u64(natsMsg *m, const char *key) {
    const char *v = NULL;
    if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v) return 0;
    return strtoull(v, NULL, 10);
}

/* ---- connection and stream ------------------------------------------------------------ */

static int connect_nats(cluster *c, char *err, size_t errlen) {
    const bv_config *cfg = c->cfg;
    char why[512];
    natsStatus s = natsOptions_Create(&c->opts);
    if (s != NATS_OK) return fail(err, errlen, "cluster: NATS options: %s", natsStatus_GetText(s));
    char urls[CONFIG_CLUSTER_URL_MAX];
    snprintf(urls, sizeof urls, "%s", cfg->cluster_nats_url);
    const char *list[CLUSTER_URLS_MAX];
    int n = 0;
    for (char *save = NULL, *u = strtok_r(urls, ",", &save); u && n < CLUSTER_URLS_MAX; u = strtok_r(NULL, ",", &save))
        list[n++] = u;
    if (n == 0) return fail(err, errlen, "cluster.nats_url: no URL in '%s'", cfg->cluster_nats_url);
    s = natsOptions_SetServers(c->opts, list, n);
    if (s == NATS_OK) s = natsOptions_SetName(c->opts, cfg->cluster_node_id);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(c->opts, -1);   /* keep trying: NATS restarts */
    if (s == NATS_OK) s = natsOptions_SetSendAsap(c->opts, true);     /* no flusher delay on a read's round trip */
    if (s == NATS_OK && cfg->cluster_creds_file[0])
        s = natsOptions_SetUserCredentialsFromFiles(c->opts, cfg->cluster_creds_file, NULL);
    if (s == NATS_OK && cfg->cluster_tls_ca_file[0]) s = natsOptions_LoadCATrustedCertificates(c->opts, cfg->cluster_tls_ca_file);
    if (s != NATS_OK) return fail(err, errlen, "cluster: NATS options: %s", nats_why(s, 0, why, sizeof why));
    s = natsConnection_Connect(&c->nc, c->opts);
    if (s != NATS_OK)
        return fail(err, errlen, "cluster: cannot connect to NATS at %s: %s", cfg->cluster_nats_url,
                    nats_why(s, 0, why, sizeof why));
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = cfg->cluster_publish_timeout_ms;
    s = natsConnection_JetStream(&c->js, c->nc, &jo);
    if (s != NATS_OK) return fail(err, errlen, "cluster: JetStream context: %s", nats_why(s, 0, why, sizeof why));
    return 0;
}

/* Create the cluster's stream, or check the existing one was made for the same
 * partition count (its description says it). */
static int ensure_stream(cluster *c, char *err, size_t errlen) {
    char subj[CLUSTER_SUBJECT_MAX + 4], desc[128], why[512];
    snprintf(subj, sizeof subj, "%s.>", c->prefix);
    snprintf(desc, sizeof desc, "beava cluster %s: partitions=%u", c->cfg->cluster_name, c->nparts);
    const char *subjects[1] = { subj };
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = c->stream;
    sc.Description = desc;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = c->cfg->cluster_stream_replicas;
    sc.MaxAge = (int64_t)(c->cfg->cluster_stream_max_age_s * 1000000000ull);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, c->js, c->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND) {
        jerr = 0;
        s = js_AddStream(&si, c->js, &sc, NULL, &jerr);
        if (s != NATS_OK) {              /* another node may have created it meanwhile */
            jerr = 0;
            s = js_GetStreamInfo(&si, c->js, c->stream, NULL, &jerr);
        }
    }
    if (s != NATS_OK)
        return fail(err, errlen, "cluster: stream %s: %s (is JetStream enabled on the NATS server?)", c->stream,
                    nats_why(s, jerr, why, sizeof why));
    int rc = 0;
    if (!si->Config || !si->Config->Description || strcmp(si->Config->Description, desc) != 0)
        rc = fail(err, errlen, "cluster: stream %s was made for another configuration ('%s', this node: '%s'); "
                               "cluster.partitions is fixed when the cluster is created",
                  c->stream, si->Config && si->Config->Description ? si->Config->Description : "", desc);
    jsStreamInfo_Destroy(si);
    return rc;
}

cluster *cluster_open(const bv_config *cfg, const bv_log *log, char *err, size_t errlen) {
    cluster *c = calloc(1, sizeof *c);
    if (!c) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    c->cfg = cfg;
    c->log = log;
    c->lock_fd = -1;
    pthread_mutex_init(&c->q_mu, NULL);
    pthread_cond_init(&c->q_cv, NULL);
    pthread_mutex_init(&c->apply_mu, NULL);
    pthread_cond_init(&c->apply_cv, NULL);
    pthread_mutex_init(&c->reg_mu, NULL);
    pthread_cond_init(&c->reg_cv, NULL);
    pthread_mutex_init(&c->snap_mu, NULL);
    pthread_cond_init(&c->snap_cv, NULL);
    c->nparts = cfg->cluster_partitions;
    c->map = partmap_new(cfg->cluster_nodes, cfg->ncluster_nodes, cfg->cluster_partitions, cfg->cluster_replicas);
    c->applied = calloc(c->nparts, sizeof *c->applied);
    c->target = calloc(c->nparts, sizeof *c->target);
    c->subs = calloc(c->nparts, sizeof *c->subs);
    if (!c->map || !c->applied || !c->target || !c->subs) {
        fail(err, errlen, "cluster: cannot build the partition map (partitions %u, replicas %u, %zu nodes)",
             cfg->cluster_partitions, cfg->cluster_replicas, cfg->ncluster_nodes);
        goto err;
    }
    c->self = (size_t)partmap_node_index(c->map, cfg->cluster_node_id);
    snprintf(c->stream, sizeof c->stream, "BEAVA_%s", cfg->cluster_name);
    snprintf(c->prefix, sizeof c->prefix, "beava.%s", cfg->cluster_name);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(c->origin, sizeof c->origin, "%s-%lld%09ld", cfg->cluster_node_id, (long long)ts.tv_sec, ts.tv_nsec);
    if (snprintf(c->snap_dir, sizeof c->snap_dir, "%s/cluster", cfg->data_dir) >= (int)sizeof c->snap_dir) {
        fail(err, errlen, "cluster: data dir path too long");
        goto err;
    }
    if (bv_mkdir_p(c->snap_dir, NULL) != 0) {
        fail(err, errlen, "cluster: cannot create %s: %s", c->snap_dir, strerror(errno));
        goto err;
    }
    char lock[PATH_MAX + 8];
    snprintf(lock, sizeof lock, "%s/LOCK", c->snap_dir);
    c->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (c->lock_fd < 0 || flock(c->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        fail(err, errlen, "cluster: %s: %s (another beava uses this data dir?)", lock, strerror(errno));
        goto err;
    }
    if (connect_nats(c, err, errlen) != 0 || ensure_stream(c, err, errlen) != 0) goto err;
    bv_log_msg(log, LOG_INFO, "cluster.connected", "node %s of %zu, stream %s, %u partitions, replicas %u",
               cfg->cluster_node_id, cfg->ncluster_nodes, c->stream, c->nparts, cfg->cluster_replicas);
    return c;
err:
    cluster_close(c);
    return NULL;
}

/* ---- publishing pushes ------------------------------------------------------------------- */

/* A publisher thread takes one batch at a time: its records are grouped into one message
 * per partition (split at CLUSTER_MSG_MAX), every message is published at once with a
 * reply subject on the thread's own inbox ("<inbox>.<round>.<k>"), then the JetStream
 * acknowledgements are collected (their order is free). Messages left unacknowledged
 * when publish_timeout_ms runs out are published again, same message id (JetStream
 * stores each once), in a new round; late answers of an old round are ignored. */

typedef struct pub_msg {
    unsigned p;
    bv_buf body;
    size_t *items;                /* record indexes in this message */
    size_t nitems, cap;
    char msgid[CLUSTER_ID_MAX];
    uint64_t seq;                 /* its stream sequence once acknowledged */
    bool done, failed;
} pub_msg;

typedef struct pub_scratch {
    struct cluster *c;
    pthread_t thread;
    pub_msg *msgs;                /* this batch's messages; bodies and item arrays reused */
    size_t nmsgs, msgs_cap;
    int *open;                    /* per partition: index of its message being filled, or -1 */
    uint64_t *item_seq;
    bool *item_fail;
    size_t item_cap;
    natsInbox *inbox;
    natsSubscription *acks;       /* SubscribeSync on "<inbox>.>" */
    uint64_t round;
} pub_scratch;

static void msg_add_item(pub_msg *m, size_t i) {
    if (m->nitems && m->items[m->nitems - 1] == i) return;
    if (m->nitems == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        size_t *p = realloc(m->items, cap * sizeof *p);
        if (!p) abort();
        m->items = p;
        m->cap = cap;
    }
    m->items[m->nitems++] = i;
}

static pub_msg *msg_new(cluster *c, pub_scratch *sc, unsigned p) {
    if (sc->nmsgs == sc->msgs_cap) {
        size_t cap = sc->msgs_cap ? sc->msgs_cap * 2 : 32;
        pub_msg *m = realloc(sc->msgs, cap * sizeof *m);
        if (!m) abort();
        memset(m + sc->msgs_cap, 0, (cap - sc->msgs_cap) * sizeof *m);
        for (size_t i = sc->msgs_cap; i < cap; i++) bv_buf_init(&m[i].body);
        sc->msgs = m;
        sc->msgs_cap = cap;
    }
    pub_msg *m = &sc->msgs[sc->nmsgs];
    sc->open[p] = (int)sc->nmsgs++;
    m->p = p;
    m->body.len = 0;
    m->nitems = 0;
    m->seq = 0;
    m->done = m->failed = false;
    snprintf(m->msgid, sizeof m->msgid, "%s-%" PRIu64, c->origin, atomic_fetch_add(&c->msg_counter, 1));
    return m;
}

/* Send every message not yet acknowledged, as round sc->round. */
static void send_round(cluster *c, pub_scratch *sc, uint64_t reg_seq) {
    char subj[CLUSTER_SUBJECT_MAX], reply[CLUSTER_SUBJECT_MAX + 48], regv[32];
    snprintf(regv, sizeof regv, "%" PRIu64, reg_seq);
    for (size_t k = 0; k < sc->nmsgs; k++) {
        pub_msg *pm = &sc->msgs[k];
        if (pm->done) continue;
        part_subject(c, pm->p, subj, sizeof subj);
        snprintf(reply, sizeof reply, "%s.%" PRIu64 ".%zu", sc->inbox, sc->round, k);
        natsMsg *m = NULL;
        if (natsMsg_Create(&m, subj, reply, pm->body.data, (int)pm->body.len) == NATS_OK &&
            natsMsgHeader_Set(m, "Nats-Msg-Id", pm->msgid) == NATS_OK &&
            natsMsgHeader_Set(m, "Beava-Reg", regv) == NATS_OK)
            natsConnection_PublishMsg(c->nc, m);   /* a lost publish is simply not acknowledged */
        natsMsg_Destroy(m);
    }
}

/* One acknowledgement: {"stream":S,"seq":N[,"duplicate":true]} or {"error":{...}}. Returns
 * 1 acknowledged, 0 refused by the stream (why filled), -1 not an answer to count. */
static int parse_ack(natsMsg *r, uint64_t *seq, char *why, size_t wl) {
    if (natsMsg_IsNoResponders(r)) return -1;      /* no JetStream yet: retried */
    json_error_t jerr;
    json_t *j = json_loadb(natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r), 0, &jerr);
    if (!j) return -1;
    int rc = -1;
    json_t *s = json_object_get(j, "seq"), *e = json_object_get(j, "error");
    if (json_is_integer(s) && !e) {
        *seq = (uint64_t)json_integer_value(s);
        rc = 1;
    } else if (json_is_object(e)) {
        const char *d = json_string_value(json_object_get(e, "description"));
        snprintf(why, wl, "JetStream refused the message: %s (code %lld)", d ? d : "?",
                 (long long)json_integer_value(json_object_get(e, "err_code")));
        rc = 0;
    }
    json_decref(j);
    return rc;
}

/* Collect this round's acknowledgements until all are in or the timeout. Returns how
 * many are still outstanding. */
static size_t collect_round(cluster *c, pub_scratch *sc, size_t outstanding, char *why, size_t wl) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int64_t end_ms = (int64_t)t0.tv_sec * 1000 + t0.tv_nsec / 1000000 + c->cfg->cluster_publish_timeout_ms;
    size_t plen = strlen(sc->inbox);
    while (outstanding > 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left = end_ms - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        if (left <= 0) break;
        natsMsg *r = NULL;
        if (natsSubscription_NextMsg(&r, sc->acks, left) != NATS_OK) break;
        const char *subj = natsMsg_GetSubject(r);
        unsigned long long rnd = 0;
        size_t k = 0;
        if (strncmp(subj, sc->inbox, plen) == 0 && sscanf(subj + plen, ".%llu.%zu", &rnd, &k) == 2 &&
            rnd == sc->round && k < sc->nmsgs && !sc->msgs[k].done) {
            uint64_t seq = 0;
            int a = parse_ack(r, &seq, why, wl);
            if (a >= 0) {
                sc->msgs[k].done = true;
                sc->msgs[k].failed = a == 0;
                sc->msgs[k].seq = seq;
                outstanding--;
                if (a == 1) bump(&c->published_msgs);
                else bump(&c->publish_failures);
            }
        }
        natsMsg_Destroy(r);
    }
    return outstanding;
}

static void pub_run(cluster *c, pub_scratch *sc, pub_job *job) {
    if (job->n > sc->item_cap) {
        free(sc->item_seq);
        free(sc->item_fail);
        sc->item_seq = malloc(job->n * sizeof *sc->item_seq);
        sc->item_fail = malloc(job->n * sizeof *sc->item_fail);
        if (!sc->item_seq || !sc->item_fail) abort();
        sc->item_cap = job->n;
    }
    memset(sc->item_seq, 0, job->n * sizeof *sc->item_seq);
    memset(sc->item_fail, 0, job->n * sizeof *sc->item_fail);
    pthread_mutex_lock(&c->reg_mu);
    uint64_t reg_seq = c->reg_applied;    /* at least what the records were validated against */
    pthread_mutex_unlock(&c->reg_mu);
    /* group the records by partition */
    sc->nmsgs = 0;
    for (size_t i = 0; i < job->n; i++) {
        const engine_log_record *r = &job->recs[i];
        for (size_t k = 0; k < r->nparts; k++) {
            unsigned p = partmap_partition(c->map, r->parts[k].table, r->parts[k].key, r->parts[k].klen);
            pub_msg *m = sc->open[p] >= 0 ? &sc->msgs[sc->open[p]] : NULL;
            if (m && m->nitems && m->items[m->nitems - 1] == i) continue;   /* this record is in already */
            if (!m || m->body.len + 4 + r->len > CLUSTER_MSG_MAX) m = msg_new(c, sc, p);
            unsigned char lenb[4];
            codec_put32(lenb, (uint32_t)r->len);
            bv_buf_put(&m->body, lenb, 4);
            bv_buf_put(&m->body, r->payload, r->len);
            msg_add_item(m, i);
        }
    }
    for (size_t k = 0; k < sc->nmsgs; k++) sc->open[sc->msgs[k].p] = -1;
    /* publish them all, collect the acknowledgements, retry the silent ones */
    char why[512] = "no acknowledgement within cluster.publish_timeout_ms";
    size_t outstanding = sc->nmsgs;
    for (int t = 0; t < CLUSTER_PUBLISH_TRIES && outstanding > 0; t++) {
        sc->round++;
        if (t > 0) atomic_fetch_add_explicit(&c->publish_retries, outstanding, memory_order_relaxed);
        send_round(c, sc, reg_seq);
        outstanding = collect_round(c, sc, outstanding, why, sizeof why);
    }
    for (size_t k = 0; k < sc->nmsgs; k++) {
        pub_msg *m = &sc->msgs[k];
        if (!m->done) bump(&c->publish_failures);
        for (size_t q = 0; q < m->nitems; q++) {
            size_t i = m->items[q];
            if (!m->done || m->failed) sc->item_fail[i] = true;
            else if (m->seq > sc->item_seq[i]) sc->item_seq[i] = m->seq;
        }
    }
    uint64_t version = engine_registry_version(c->eng);
    for (size_t i = 0; i < job->n; i++) {
        push_result *res = &job->b->items[job->recs[i].item].res;
        if (sc->item_fail[i]) {
            res->status = 503;
            snprintf(res->code, sizeof res->code, "cluster_unavailable");
            snprintf(res->reason, sizeof res->reason,
                     "the cluster's log did not acknowledge the event; it may or may not be applied: %.150s", why);
            bump(&c->pushes_failed);
        } else {
            res->status = 200;
            res->ack_lsn = sc->item_seq[i];
            res->registry_version = version;
            bump(&c->pushes_acked);
        }
    }
    job->b->done(job->b);
}

/* A publisher's inbox subscription and partition index (before its thread starts). */
static int pub_scratch_init(cluster *c, pub_scratch *sc, char *err, size_t errlen) {
    sc->c = c;
    sc->open = malloc(c->nparts * sizeof *sc->open);
    if (!sc->open) return fail(err, errlen, "out of memory");
    for (unsigned p = 0; p < c->nparts; p++) sc->open[p] = -1;
    char wild[CLUSTER_SUBJECT_MAX], why[512];
    natsStatus s = natsInbox_Create(&sc->inbox);
    if (s == NATS_OK) {
        snprintf(wild, sizeof wild, "%s.>", sc->inbox);
        s = natsConnection_SubscribeSync(&sc->acks, c->nc, wild);
    }
    if (s != NATS_OK) return fail(err, errlen, "cluster: publisher inbox: %s", nats_why(s, 0, why, sizeof why));
    return 0;
}

static void pub_scratch_free(pub_scratch *sc) {
    if (sc->acks) natsSubscription_Unsubscribe(sc->acks);
    natsSubscription_Destroy(sc->acks);
    natsInbox_Destroy(sc->inbox);
    for (size_t k = 0; k < sc->msgs_cap; k++) {
        bv_buf_free(&sc->msgs[k].body);
        free(sc->msgs[k].items);
    }
    free(sc->msgs);
    free(sc->open);
    free(sc->item_seq);
    free(sc->item_fail);
    memset(sc, 0, sizeof *sc);
}

static void *pub_main(void *arg) {
    pub_scratch *sc = arg;
    cluster *c = sc->c;
    pthread_mutex_lock(&c->q_mu);
    for (;;) {
        while (!c->q_head && !c->q_stop) pthread_cond_wait(&c->q_cv, &c->q_mu);
        pub_job *job = c->q_head;
        if (!job) break;                   /* stopping, drained */
        c->q_head = job->next;
        if (!c->q_head) c->q_tail = NULL;
        pthread_mutex_unlock(&c->q_mu);
        pub_run(c, sc, job);
        free(job);
        pthread_mutex_lock(&c->q_mu);
    }
    pthread_mutex_unlock(&c->q_mu);
    return NULL;
}

/* engine_log_backend.publish: queue the batch for a publisher thread. */
static void backend_publish(void *ctx, engine_batch *b, const engine_log_record *recs, size_t n) {
    cluster *c = ctx;
    pub_job *job = calloc(1, sizeof *job);
    if (!job) abort();
    job->b = b;
    job->recs = recs;
    job->n = n;
    pthread_mutex_lock(&c->q_mu);
    if (c->q_tail) c->q_tail->next = job;
    else c->q_head = job;
    c->q_tail = job;
    pthread_cond_signal(&c->q_cv);
    pthread_mutex_unlock(&c->q_mu);
}

/* engine_log_backend.keep_part: apply only the message's own partition (apply_mu held). */
static bool backend_keep_part(void *ctx, const char *table, const char *key, size_t klen) {
    cluster *c = ctx;
    return partmap_partition(c->map, table, key, klen) == c->cur_part;
}

/* ---- the registry through the log ---------------------------------------------------------- */

/* engine_wal_ops.append for register and reset (the engine's barrier is held). */
static int reg_append(void *ctx, int kind, const void *payload, size_t len, uint64_t *lsn, char *reason, size_t rlen) {
    cluster *c = ctx;
    if (kind == REC_EVENT) {          /* never: events go through backend_publish */
        snprintf(reason, rlen, "cluster mode logs events through the partitions");
        return -1;
    }
    pthread_mutex_lock(&c->reg_mu);
    uint64_t base = c->reg_applied;
    c->own_pending = true;
    pthread_mutex_unlock(&c->reg_mu);
    char subj[CLUSTER_SUBJECT_MAX], msgid[CLUSTER_ID_MAX], basev[32], kindv[16];
    reg_subject(c, subj, sizeof subj);
    snprintf(msgid, sizeof msgid, "%s-r%" PRIu64, c->origin, atomic_fetch_add(&c->msg_counter, 1));
    snprintf(basev, sizeof basev, "%" PRIu64, base);
    snprintf(kindv, sizeof kindv, "%d", kind);
    natsMsg *m = NULL;
    uint64_t seq = 0;
    jsErrCode jerr = 0;
    int rc = -1;
    char why[512] = "cannot build the message";
    /* the header is set by hand: the client library omits an expected sequence of 0,
     * and the very first register must be checked too */
    if (natsMsg_Create(&m, subj, NULL, payload, (int)len) == NATS_OK &&
        natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", basev) == NATS_OK &&
        natsMsgHeader_Set(m, "Beava-Kind", kindv) == NATS_OK && natsMsgHeader_Set(m, "Beava-Origin", c->origin) == NATS_OK) {
        jsPubOptions o;
        jsPubOptions_Init(&o);
        o.MsgId = msgid;
        o.MaxWait = c->cfg->cluster_publish_timeout_ms;
        jsPubAck *pa = NULL;
        natsStatus s = js_PublishMsg(&pa, c->js, m, &o, &jerr);
        if (s == NATS_OK) {
            seq = pa->Sequence;
            jsPubAck_Destroy(pa);
            rc = 0;
        } else {
            nats_why(s, jerr, why, sizeof why);
        }
    }
    natsMsg_Destroy(m);
    pthread_mutex_lock(&c->reg_mu);
    c->own_pending = false;
    if (rc == 0 && seq > c->reg_applied) c->reg_applied = seq;
    pthread_cond_broadcast(&c->reg_cv);
    pthread_mutex_unlock(&c->reg_mu);
    if (rc == 0) {
        *lsn = seq;
        bump(&c->reg_published);
        return 0;
    }
    if (jerr == JSStreamWrongLastSequenceErr) {
        bump(&c->reg_conflicts);
        snprintf(reason, rlen,
                 "the registry changed on another node (this node had applied registry record %" PRIu64 "); retry",
                 base);
        return ENGINE_LOG_CONFLICT;
    }
    snprintf(reason, rlen, "the cluster's log did not acknowledge the registry record: %s", why);
    return -1;
}

static int reg_wait(void *ctx, uint64_t lsn, char *reason, size_t rlen) {
    (void)ctx, (void)lsn, (void)reason, (void)rlen;
    return 0;                         /* reg_append returns once JetStream stored it */
}

/* ---- reads from any node -------------------------------------------------------------------- */

static void rpc_subject(const cluster *c, unsigned p, char *out, size_t n) {
    snprintf(out, n, "beava-rpc.%s.get.%u", c->cfg->cluster_name, p);   /* outside the stream's subjects */
}

static int read_error(bv_buf *out, const char *code, const char *reason) {
    out->len = 0;
    bv_buf_puts(out, "{\"error\":{\"code\":");
    bv_buf_json_str(out, code, strlen(code));
    bv_buf_puts(out, ",\"reason\":");
    bv_buf_json_str(out, reason, strlen(reason));
    bv_buf_puts(out, "}}");
    return 503;
}

/* The stream's last sequence on a subject now (0: none). */
static uint64_t last_seq(cluster *c, const char *subj);

/* An owned partition: wait (bounded) until it applied what the stream held when the read
 * arrived, so a read after any node's ack sees the push. -1 = read locally now. */
static int catch_up(cluster *c, unsigned p, bv_buf *out) {
    if (c->cfg->cluster_read_wait_ms == 0) return -1;
    char subj[CLUSTER_SUBJECT_MAX];
    part_subject(c, p, subj, sizeof subj);
    uint64_t target = last_seq(c, subj);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    uint64_t ns = (uint64_t)dl.tv_nsec + (uint64_t)c->cfg->cluster_read_wait_ms * 1000000ull;
    dl.tv_sec += (time_t)(ns / 1000000000ull);
    dl.tv_nsec = (long)(ns % 1000000000ull);
    pthread_mutex_lock(&c->apply_mu);
    int rc = 0;
    while (c->applied[p] < target && !c->stopping && rc == 0) rc = pthread_cond_timedwait(&c->apply_cv, &c->apply_mu, &dl);
    bool ok = c->applied[p] >= target;
    pthread_mutex_unlock(&c->apply_mu);
    if (ok) return -1;
    bump(&c->reads_not_caught_up);
    return read_error(out, "not_caught_up", "this partition's owner has not applied the stream up to the read yet; retry");
}

/* A partition owned elsewhere: ask its owners (a queue group: NATS picks a live one). */
static int forward_get(cluster *c, unsigned p, engine_transport t, const json_t *req, bv_buf *out) {
    char subj[CLUSTER_SUBJECT_MAX], tv[8], why[512];
    rpc_subject(c, p, subj, sizeof subj);
    char *body = json_dumps(req, JSON_COMPACT);
    if (!body) return read_error(out, "internal_error", "cannot encode the request");
    natsMsg *m = NULL, *reply = NULL;
    snprintf(tv, sizeof tv, "%d", (int)t);
    natsStatus s = natsMsg_Create(&m, subj, NULL, body, (int)strlen(body));
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Beava-Transport", tv);
    if (s == NATS_OK)
        s = natsConnection_RequestMsg(&reply, c->nc, m,
                                      (int64_t)c->cfg->cluster_read_wait_ms + c->cfg->cluster_publish_timeout_ms);
    free(body);
    natsMsg_Destroy(m);
    int st;
    if (s == NATS_OK) {
        st = (int)header_u64(reply, "Beava-Status");
        out->len = 0;
        bv_buf_put(out, natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply));
        bump(&c->reads_forwarded);
        if (st < 100) st = read_error(out, "owner_unavailable", "the owner's answer had no status");
    } else {
        bump(&c->reads_no_owner);
        char msg[700];
        snprintf(msg, sizeof msg, "no owner of partition %u answered: %s", p, nats_why(s, 0, why, sizeof why));
        st = read_error(out, "owner_unavailable", msg);
    }
    natsMsg_Destroy(reply);
    return st;
}

/* engine_log_backend.get (the shape was checked: table and key are strings). */
static int backend_get(void *ctx, engine_transport t, const json_t *req, bv_buf *out) {
    cluster *c = ctx;
    const char *table = json_string_value(json_object_get(req, "table"));
    json_t *key = json_object_get(req, "key");
    if (!table || !json_is_string(key) || json_string_length(key) > STORE_MAX_KEY) return -1;
    char kbuf[STORE_MAX_KEY + 1];
    size_t kl = json_string_length(key);
    const char *ks = json_string_value(key);
    for (size_t i = 0; i < kl; i++) kbuf[i] = ks[i] == '|' ? STORE_KEY_SEP : ks[i];   /* the internal key */
    unsigned p = partmap_partition(c->map, table, kbuf, kl);
    if (partmap_owns(c->map, p, c->self)) {
        bump(&c->reads_local);
        return catch_up(c, p, out);
    }
    return forward_get(c, p, t, req, out);
}

/* ---- batch_get: the entries of partitions owned elsewhere go to their owners, one
 * request per partition, all at once; the answers' entries are kept as their exact bytes */

/* The elements of {"results":[e0,e1,...]} as (start, length) pairs, in order. Returns how
 * many, or -1 when the text is not that shape. */
static long split_results(const char *s, size_t n, const char **starts, size_t *lens, size_t max) {
    const char *p = memmem(s, n, "\"results\":[", 11);
    if (!p) return -1;
    const char *end = s + n;
    p += 11;
    long count = 0;
    int depth = 0;
    bool in_str = false;
    const char *start = NULL;
    for (; p < end; p++) {
        char ch = *p;
        if (in_str) {
            if (ch == '\\') p++;
            else if (ch == '"') in_str = false;
            continue;
        }
        if (!start && ch != ' ' && ch != ',' && ch != ']') start = p;
        if (ch == '"') in_str = true;
        else if (ch == '{' || ch == '[') depth++;
        else if ((ch == '}' || ch == ']') && depth > 0) depth--;
        else if ((ch == ',' || ch == ']') && depth == 0) {
            if (start) {
                if ((size_t)count >= max) return -1;
                starts[count] = start;
                lens[count++] = (size_t)(p - start);
                start = NULL;
            }
            if (ch == ']') return count;
        }
    }
    return -1;
}

static char *error_text(const char *code, const char *reason) {
    bv_buf b;
    bv_buf_init(&b);
    read_error(&b, code, reason);
    return bv_buf_steal(&b);
}

/* engine_log_backend.batch_get. */
static void backend_batch_get(void *ctx, const json_t *reqs, char **fwd) {
    cluster *c = ctx;
    size_t n = json_array_size(reqs);
    unsigned *part = malloc(n * sizeof *part);
    int *state = calloc(c->nparts, sizeof *state);   /* per partition: 0 untouched, 1 owned ok, 2 owned late, 3 remote */
    json_t **sub = calloc(c->nparts, sizeof *sub);    /* remote partitions' request arrays */
    if (!part || !state || !sub) abort();
    char kbuf[STORE_MAX_KEY + 1];
    for (size_t i = 0; i < n; i++) {
        json_t *entry = json_array_get(reqs, i);
        const char *table = json_string_value(json_object_get(entry, "table"));
        json_t *key = json_object_get(entry, "key");
        if (!key) key = json_object_get(entry, "entity_id");
        size_t kl = json_string_length(key);
        part[i] = UINT32_MAX;
        if (!table || !json_is_string(key) || kl > STORE_MAX_KEY) continue;
        const char *ks = json_string_value(key);
        for (size_t q = 0; q < kl; q++) kbuf[q] = ks[q] == '|' ? STORE_KEY_SEP : ks[q];
        unsigned p = part[i] = partmap_partition(c->map, table, kbuf, kl);
        if (partmap_owns(c->map, p, c->self)) {
            if (state[p] == 0) {
                bv_buf tmp;
                bv_buf_init(&tmp);
                state[p] = catch_up(c, p, &tmp) < 0 ? 1 : 2;
                bv_buf_free(&tmp);
            }
            if (state[p] == 2) fwd[i] = error_text("not_caught_up", "this partition's owner has not applied the "
                                                                     "stream up to the read yet; retry");
            continue;
        }
        state[p] = 3;
        if (!sub[p] && !(sub[p] = json_array())) abort();
        json_array_append(sub[p], entry);
    }
    natsInbox *inbox = NULL;
    natsSubscription *acks = NULL;
    char wild[CLUSTER_SUBJECT_MAX], subj[CLUSTER_SUBJECT_MAX], reply[CLUSTER_SUBJECT_MAX + 16];
    size_t waiting = 0;
    bool *answered = calloc(c->nparts, sizeof *answered);
    if (!answered) abort();
    if (natsInbox_Create(&inbox) == NATS_OK) {
        snprintf(wild, sizeof wild, "%s.*", inbox);
        if (natsConnection_SubscribeSync(&acks, c->nc, wild) != NATS_OK) acks = NULL;
    }
    for (unsigned p = 0; acks && p < c->nparts; p++) {
        if (state[p] != 3) continue;
        json_t *body = json_pack("{s:O}", "requests", sub[p]);
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        rpc_subject(c, p, subj, sizeof subj);
        snprintf(reply, sizeof reply, "%s.%u", inbox, p);
        natsMsg *m = NULL;
        if (text && natsMsg_Create(&m, subj, reply, text, (int)strlen(text)) == NATS_OK &&
            natsMsgHeader_Set(m, "Beava-Op", "batch") == NATS_OK && natsConnection_PublishMsg(c->nc, m) == NATS_OK)
            waiting++;
        natsMsg_Destroy(m);
        free(text);
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int64_t end_ms = (int64_t)t0.tv_sec * 1000 + t0.tv_nsec / 1000000 + c->cfg->cluster_read_wait_ms +
                     c->cfg->cluster_publish_timeout_ms;
    const char **starts = malloc(n * sizeof *starts);
    size_t *lens = malloc(n * sizeof *lens);
    if (!starts || !lens) abort();
    size_t plen = inbox ? strlen(inbox) : 0;
    while (waiting > 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left = end_ms - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        natsMsg *r = NULL;
        if (left <= 0 || natsSubscription_NextMsg(&r, acks, left) != NATS_OK) break;
        unsigned p = UINT32_MAX;
        const char *rs = natsMsg_GetSubject(r);
        if (strncmp(rs, inbox, plen) == 0 && sscanf(rs + plen, ".%u", &p) == 1 && p < c->nparts && state[p] == 3 &&
            !answered[p]) {
            answered[p] = true;
            waiting--;
            if (natsMsg_IsNoResponders(r)) {
                answered[p] = false;               /* no owner alive: reported below */
            } else {
                bump(&c->reads_forwarded);
                const char *d = natsMsg_GetData(r);
                size_t dl = (size_t)natsMsg_GetDataLength(r);
                long k = header_u64(r, "Beava-Status") == 200 ? split_results(d, dl, starts, lens, n) : -1;
                long j = 0;
                for (size_t i = 0; i < n; i++) {
                    if (part[i] != p) continue;
                    if (k >= 0 && j < k) fwd[i] = strndup(starts[j], lens[j]);
                    else fwd[i] = strndup(d, dl);  /* a whole-call error: each entry gets it */
                    if (!fwd[i]) abort();
                    j++;
                }
            }
        }
        natsMsg_Destroy(r);
    }
    for (size_t i = 0; i < n; i++)
        if (part[i] != UINT32_MAX && state[part[i]] == 3 && !answered[part[i]] && !fwd[i]) {
            fwd[i] = error_text("owner_unavailable", "no owner of this entry's partition answered");
            bump(&c->reads_no_owner);
        }
    if (acks) natsSubscription_Unsubscribe(acks);
    natsSubscription_Destroy(acks);
    natsInbox_Destroy(inbox);
    for (unsigned p = 0; p < c->nparts; p++) json_decref(sub[p]);
    free(starts);
    free(lens);
    free(answered);
    free(sub);
    free(state);
    free(part);
}

/* A peer's forwarded get or batch_get (NATS delivery thread): answer it like a local one. */
static void rpc_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
    (void)sub;
    cluster *c = closure;
    const char *reply_to = natsMsg_GetReply(m);
    if (!reply_to) {
        natsMsg_Destroy(m);
        return;
    }
    json_error_t jerr;
    json_t *req = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &jerr);
    engine_transport t = header_u64(m, "Beava-Transport") == TRANSPORT_TCP ? TRANSPORT_TCP : TRANSPORT_HTTP;
    const char *op = NULL;
    natsMsgHeader_Get(m, "Beava-Op", &op);
    bv_buf out;
    bv_buf_init(&out);
    const char *perr = req ? NULL : "the forwarded request is not JSON";
    int st = op && strcmp(op, "batch") == 0 ? engine_batch_get(c->eng, req, perr, &out)
                                            : engine_get(c->eng, t, req, perr, &out);
    json_decref(req);
    char sv[16];
    snprintf(sv, sizeof sv, "%d", st);
    natsMsg *r = NULL;
    if (natsMsg_Create(&r, reply_to, NULL, out.data, (int)out.len) == NATS_OK &&
        natsMsgHeader_Set(r, "Beava-Status", sv) == NATS_OK)
        natsConnection_PublishMsg(nc, r);
    natsMsg_Destroy(r);
    bv_buf_free(&out);
    bump(&c->reads_served_for_peers);
    natsMsg_Destroy(m);
}

/* Join each owned partition's queue group (once caught up: a peer's read is then served
 * without waiting out a long replay). */
static void rpc_subscribe(cluster *c) {
    for (size_t i = 0; i < c->nsubs; i++) {
        char subj[CLUSTER_SUBJECT_MAX], why[512];
        rpc_subject(c, c->subs[i].p, subj, sizeof subj);
        natsStatus s = natsConnection_QueueSubscribe(&c->subs[i].rpc, c->nc, subj, CLUSTER_RPC_QUEUE, rpc_cb, c);
        if (s != NATS_OK)
            bv_log_msg(c->log, LOG_ERROR, "cluster.rpc_subscribe_failed", "%s: %s", subj, nats_why(s, 0, why, sizeof why));
    }
}

void cluster_engine_ops(cluster *c, engine_wal_ops *wal, engine_log_backend *lb) {
    wal->append = reg_append;
    wal->wait = reg_wait;
    wal->ctx = c;
    lb->publish = backend_publish;
    lb->keep_part = backend_keep_part;
    lb->get = backend_get;
    lb->batch_get = backend_batch_get;
    lb->ctx = c;
}

/* ---- consuming ------------------------------------------------------------------------------ */

static void rpc_subscribe(cluster *c);

/* Every owned partition and the registry reached what the stream held at start (apply_mu). */
static void check_caught_up(cluster *c) {
    if (c->caught_up) return;
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->applied[c->subs[i].p] < c->target[c->subs[i].p]) return;
    pthread_mutex_lock(&c->reg_mu);
    bool reg_ok = c->reg_applied >= c->reg_target;
    pthread_mutex_unlock(&c->reg_mu);
    if (!reg_ok) return;
    c->caught_up = true;
    rpc_subscribe(c);
    bv_log_msg(c->log, LOG_INFO, "cluster.caught_up", "every owned partition (%zu) and the registry caught up",
               c->nsubs);
    if (c->ready) atomic_store(c->ready, true);
}

static void apply_error(cluster *c, const char *what, uint64_t seq, const char *reason) {
    bump(&c->apply_errors);
    if (c->apply_errors_logged++ < CLUSTER_APPLY_ERRORS_LOGGED)
        bv_log_msg(c->log, LOG_ERROR, "cluster.apply_error", "%s at stream sequence %" PRIu64 ": %s", what, seq, reason);
}

static void reg_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
    (void)nc, (void)sub;
    cluster *c = closure;
    uint64_t seq = msg_stream_seq(m);
    const char *origin = NULL;
    natsMsgHeader_Get(m, "Beava-Origin", &origin);
    int kind = (int)header_u64(m, "Beava-Kind");
    pthread_mutex_lock(&c->reg_mu);
    if (origin && strcmp(origin, c->origin) == 0)     /* ours: wait for reg_append to settle */
        while (c->own_pending && !c->stopping) pthread_cond_wait(&c->reg_cv, &c->reg_mu);
    pthread_mutex_unlock(&c->reg_mu);
    pthread_mutex_lock(&c->apply_mu);
    pthread_mutex_lock(&c->reg_mu);
    bool skip = c->stopping || seq <= c->reg_applied;
    pthread_mutex_unlock(&c->reg_mu);
    if (!skip) {
        char reason[512];
        if (engine_replay(c->eng, kind, seq, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), reason,
                          sizeof reason) != 0)
            apply_error(c, "registry record", seq, reason);
        pthread_mutex_lock(&c->reg_mu);
        c->reg_applied = seq;
        pthread_cond_broadcast(&c->reg_cv);
        pthread_mutex_unlock(&c->reg_mu);
        c->applied_since_snap++;
    }
    check_caught_up(c);
    pthread_mutex_unlock(&c->apply_mu);
    natsMsg_Destroy(m);
}

static void part_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
    (void)nc, (void)sub;
    part_sub *ps = closure;
    cluster *c = ps->c;
    uint64_t seq = msg_stream_seq(m);
    uint64_t need = header_u64(m, "Beava-Reg");
    /* validated against registry record `need`: apply only once it is applied here
     * (without apply_mu: the registry's consumer takes it) */
    pthread_mutex_lock(&c->reg_mu);
    while (c->reg_applied < need && !c->stopping) pthread_cond_wait(&c->reg_cv, &c->reg_mu);
    pthread_mutex_unlock(&c->reg_mu);
    pthread_mutex_lock(&c->apply_mu);
    if (!c->stopping && seq > c->applied[ps->p]) {
        c->cur_part = ps->p;
        const unsigned char *d = (const unsigned char *)natsMsg_GetData(m);
        size_t len = (size_t)natsMsg_GetDataLength(m), off = 0, n = 0;
        char reason[512];
        while (off + 4 <= len) {              /* records: u32 length, evrec */
            size_t rl = codec_get32(d + off);
            off += 4;
            if (rl > len - off) {
                apply_error(c, "partition message", seq, "a record runs past the end of the message");
                break;
            }
            if (n == c->recs_cap) {
                size_t cap = c->recs_cap ? c->recs_cap * 2 : 256;
                engine_logged *r = realloc(c->recs, cap * sizeof *r);
                if (!r) abort();
                c->recs = r;
                c->recs_cap = cap;
            }
            c->recs[n++] = (engine_logged){ .payload = d + off, .len = rl };
            off += rl;
        }
        size_t bad = engine_apply_logged(c->eng, c->recs, n, seq, reason, sizeof reason);
        if (bad) apply_error(c, "event record", seq, reason);
        c->applied[ps->p] = seq;
        c->applied_since_snap++;
        bump(&c->applied_msgs);
        pthread_cond_broadcast(&c->apply_cv);
    }
    check_caught_up(c);
    pthread_mutex_unlock(&c->apply_mu);
    natsMsg_Destroy(m);
}

/* The stream's last sequence on a subject now (0: none). */
static uint64_t last_seq(cluster *c, const char *subj) {
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    uint64_t s = 0;
    if (js_GetLastMsg(&m, c->js, c->stream, subj, NULL, &jerr) == NATS_OK) s = natsMsg_GetSequence(m);
    natsMsg_Destroy(m);
    return s;
}

static int subscribe_from(cluster *c, const char *subj, uint64_t after, natsMsgHandler cb, void *closure,
                          natsSubscription **sub, char *err, size_t errlen) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = c->stream;
    so.Ordered = true;
    if (after > 0) {
        so.Config.DeliverPolicy = js_DeliverByStartSequence;
        so.Config.OptStartSeq = after + 1;
    } else {
        so.Config.DeliverPolicy = js_DeliverAll;
    }
    jsErrCode jerr = 0;
    char why[512];
    natsStatus s = js_Subscribe(sub, c->js, subj, cb, closure, NULL, &so, &jerr);
    if (s != NATS_OK) return fail(err, errlen, "cluster: subscribe %s: %s", subj, nats_why(s, jerr, why, sizeof why));
    return 0;
}

/* ---- snapshots ---------------------------------------------------------------------------- */

typedef struct snap_writer {
    int fd;
    uint32_t crc;
    bool failed;
    cluster *c;
} snap_writer;

static int snap_write(void *ctx, const void *p, size_t n) {
    snap_writer *w = ctx;
    const char *b = p;
    w->crc = crc32c_extend(w->crc, p, n);
    while (n > 0) {
        ssize_t k = write(w->fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            w->failed = true;
            return -1;
        }
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Inside engine_quiesce (apply_mu held too): the header then the engine's state. */
static int snap_quiesced(void *ctx, uint64_t lsn, uint64_t version) {
    (void)lsn, (void)version;
    snap_writer *w = ctx;
    cluster *c = w->c;
    bv_buf h;
    bv_buf_init(&h);
    unsigned char b8[8];
    bv_buf_put(&h, SNAP_MAGIC, SNAP_MAGIC_LEN);
    codec_put32(b8, c->nparts);
    bv_buf_put(&h, b8, 4);
    pthread_mutex_lock(&c->reg_mu);
    codec_put64(b8, c->reg_applied);
    pthread_mutex_unlock(&c->reg_mu);
    bv_buf_put(&h, b8, 8);
    for (unsigned p = 0; p < c->nparts; p++) {
        codec_put64(b8, c->applied[p]);
        bv_buf_put(&h, b8, 8);
    }
    int rc = snap_write(w, h.data, h.len);
    bv_buf_free(&h);
    if (rc == 0) rc = engine_serialize(c->eng, snap_write, w);
    return rc;
}

static bool snap_name_counter(const char *name, uint64_t *n) {
    unsigned long long v;
    char tail[8];
    if (sscanf(name, "snap-%20llu.%4s", &v, tail) != 2 || strcmp(tail, "bin") != 0) return false;
    *n = v;
    return true;
}

/* The snapshot files, newest first (malloc'd counters). */
static size_t snap_list(cluster *c, uint64_t **out) {
    *out = NULL;
    DIR *d = opendir(c->snap_dir);
    if (!d) return 0;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        uint64_t v;
        if (!snap_name_counter(de->d_name, &v)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            uint64_t *p = realloc(*out, cap * sizeof *p);
            if (!p) abort();
            *out = p;
        }
        (*out)[n++] = v;
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)           /* insertion sort, descending: a handful */
        for (size_t j = i; j > 0 && (*out)[j] > (*out)[j - 1]; j--) {
            uint64_t t = (*out)[j];
            (*out)[j] = (*out)[j - 1];
            (*out)[j - 1] = t;
        }
    return n;
}

static int snapshot_take(cluster *c, char *err, size_t errlen) {
    pthread_mutex_lock(&c->apply_mu);
    uint64_t id = ++c->snap_counter;
    char tmp[PATH_MAX + 32], fin[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s/snap-%020" PRIu64 ".tmp", c->snap_dir, id);
    snprintf(fin, sizeof fin, "%s/snap-%020" PRIu64 ".bin", c->snap_dir, id);
    snap_writer w = { .fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), .c = c };
    int rc = -1;
    if (w.fd < 0) {
        fail(err, errlen, "open %s: %s", tmp, strerror(errno));
    } else {
        rc = engine_quiesce(c->eng, snap_quiesced, &w);
        unsigned char crc[4];
        codec_put32(crc, w.crc);
        if (rc == 0) rc = snap_write(&w, crc, 4);
        if (rc == 0 && fsync(w.fd) != 0) rc = -1;
        if (close(w.fd) != 0) rc = -1;
        if (rc == 0 && rename(tmp, fin) != 0) rc = -1;
        if (rc != 0) {
            fail(err, errlen, "writing %s: %s", tmp, strerror(errno));
            unlink(tmp);
        } else {
            int dfd = open(c->snap_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
            c->applied_since_snap = 0;
        }
    }
    pthread_mutex_unlock(&c->apply_mu);
    if (rc != 0) {
        bump(&c->snapshot_failures);
        return -1;
    }
    bump(&c->snapshots);
    uint64_t *ids;
    size_t n = snap_list(c, &ids);
    for (size_t i = c->cfg->snapshot_retain; i < n; i++) {
        char old[PATH_MAX + 32];
        snprintf(old, sizeof old, "%s/snap-%020" PRIu64 ".bin", c->snap_dir, ids[i]);
        unlink(old);
    }
    free(ids);
    bv_log_msg(c->log, LOG_INFO, "cluster.snapshot", "wrote %s", fin);
    return 0;
}

int cluster_snapshot_now(cluster *c, bv_buf *out) {
    char err[PATH_MAX + 128];
    if (snapshot_take(c, err, sizeof err) != 0) {
        bv_buf_puts(out, "{\"error\":{\"code\":\"snapshot_failed\",\"reason\":");
        bv_buf_json_str(out, err, strlen(err));
        bv_buf_puts(out, "}}");
        return 500;
    }
    pthread_mutex_lock(&c->apply_mu);
    bv_buf_printf(out, "{\"snapshot\":%" PRIu64 ",\"applied\":{", c->snap_counter);
    bool first = true;
    for (size_t i = 0; i < c->nsubs; i++) {
        bv_buf_printf(out, "%s\"%u\":%" PRIu64, first ? "" : ",", c->subs[i].p, c->applied[c->subs[i].p]);
        first = false;
    }
    pthread_mutex_unlock(&c->apply_mu);
    bv_buf_puts(out, "}}");
    return 200;
}

static void *snap_main(void *arg) {
    cluster *c = arg;
    pthread_mutex_lock(&c->snap_mu);
    while (!c->snap_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += c->cfg->snapshot_interval_s;
        pthread_cond_timedwait(&c->snap_cv, &c->snap_mu, &ts);
        if (c->snap_stop) break;
        pthread_mutex_unlock(&c->snap_mu);
        pthread_mutex_lock(&c->apply_mu);
        bool due = c->applied_since_snap > 0;
        pthread_mutex_unlock(&c->apply_mu);
        char err[PATH_MAX + 128];
        if (due && snapshot_take(c, err, sizeof err) != 0)
            bv_log_msg(c->log, LOG_ERROR, "cluster.snapshot_failed", "%s", err);
        pthread_mutex_lock(&c->snap_mu);
    }
    pthread_mutex_unlock(&c->snap_mu);
    return NULL;
}

/* Read a whole file. */
static unsigned char *read_all(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) == 0 && st.st_size > 0 && (buf = malloc((size_t)st.st_size))) {
        size_t got = 0;
        while (got < (size_t)st.st_size) {
            ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) break;
            got += (size_t)k;
        }
        if (got != (size_t)st.st_size) {
            free(buf);
            buf = NULL;
        }
        *len = got;
    }
    close(fd);
    return buf;
}

int cluster_recover(cluster *c, engine *eng, char *err, size_t errlen) {
    c->eng = eng;
    uint64_t *ids;
    size_t n = snap_list(c, &ids);
    if (n) c->snap_counter = ids[0];
    size_t head = SNAP_MAGIC_LEN + 4 + 8 + (size_t)c->nparts * 8;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/snap-%020" PRIu64 ".bin", c->snap_dir, ids[i]);
        size_t len = 0;
        unsigned char *b = read_all(path, &len);
        if (!b || len < head + 4 || memcmp(b, SNAP_MAGIC, SNAP_MAGIC_LEN) != 0 ||
            crc32c(b, len - 4) != codec_get32(b + len - 4)) {
            bv_log_msg(c->log, LOG_WARN, "cluster.snapshot_invalid", "%s does not verify; trying an older one", path);
            free(b);
            continue;
        }
        if (codec_get32(b + SNAP_MAGIC_LEN) != c->nparts) {
            rc = fail(err, errlen, "cluster: %s was written for %u partitions, this node has %u", path,
                      codec_get32(b + SNAP_MAGIC_LEN), c->nparts);
            free(b);
            break;
        }
        char why[512];
        if (engine_deserialize(eng, b + head, len - head - 4, why, sizeof why) != 0) {
            rc = fail(err, errlen, "cluster: %s: %s", path, why);
            free(b);
            break;
        }
        c->reg_applied = codec_get64(b + SNAP_MAGIC_LEN + 4);
        for (unsigned p = 0; p < c->nparts; p++) c->applied[p] = codec_get64(b + SNAP_MAGIC_LEN + 12 + (size_t)p * 8);
        free(b);
        bv_log_msg(c->log, LOG_INFO, "cluster.recovered", "snapshot %s: registry record %" PRIu64, path,
                   c->reg_applied);
        break;
    }
    free(ids);
    return rc;
}

/* ---- start, metrics, close -------------------------------------------------------------------- */

int cluster_start(cluster *c, atomic_bool *ready, char *err, size_t errlen) {
    c->ready = ready;
    char subj[CLUSTER_SUBJECT_MAX];
    reg_subject(c, subj, sizeof subj);
    c->reg_target = last_seq(c, subj);
    for (unsigned p = 0; p < c->nparts; p++) {
        if (!partmap_owns(c->map, p, c->self)) continue;
        part_subject(c, p, subj, sizeof subj);
        c->target[p] = last_seq(c, subj);
        c->subs[c->nsubs++] = (part_sub){ .c = c, .p = p };
    }
    pthread_mutex_lock(&c->apply_mu);
    check_caught_up(c);
    pthread_mutex_unlock(&c->apply_mu);
    reg_subject(c, subj, sizeof subj);
    if (subscribe_from(c, subj, c->reg_applied, reg_cb, c, &c->reg_sub, err, errlen) != 0) return -1;
    for (size_t i = 0; i < c->nsubs; i++) {
        part_subject(c, c->subs[i].p, subj, sizeof subj);
        if (subscribe_from(c, subj, c->applied[c->subs[i].p], part_cb, &c->subs[i], &c->subs[i].sub, err, errlen) != 0)
            return -1;
    }
    c->pubs = calloc(CLUSTER_PUBLISHERS, sizeof *c->pubs);
    if (!c->pubs) return fail(err, errlen, "out of memory");
    for (int i = 0; i < CLUSTER_PUBLISHERS; i++) {
        if (pub_scratch_init(c, &c->pubs[i], err, errlen) != 0) return -1;
        if (pthread_create(&c->pubs[i].thread, NULL, pub_main, &c->pubs[i]) != 0)
            return fail(err, errlen, "cluster: cannot start a publisher");
        c->npubs++;
    }
    if (pthread_create(&c->snap_thread, NULL, snap_main, c) != 0) return fail(err, errlen, "cluster: cannot start snapshots");
    c->snap_started = true;
    bv_log_msg(c->log, LOG_INFO, "cluster.started", "owning %zu of %u partitions; registry at %" PRIu64 " of %" PRIu64,
               c->nsubs, c->nparts, c->reg_applied, c->reg_target);
    return 0;
}

int cluster_status(cluster *c, bv_buf *out) {
    char subj[CLUSTER_SUBJECT_MAX];
    uint64_t *last = calloc(c->nparts, sizeof *last);
    if (!last) return read_error(out, "internal_error", "out of memory");
    for (size_t i = 0; i < c->nsubs; i++) {     /* outside apply_mu: these are network round trips */
        part_subject(c, c->subs[i].p, subj, sizeof subj);
        last[c->subs[i].p] = last_seq(c, subj);
    }
    reg_subject(c, subj, sizeof subj);
    uint64_t reg_last = last_seq(c, subj);
    bv_buf_puts(out, "{\"node\":");
    bv_buf_json_str(out, c->cfg->cluster_node_id, strlen(c->cfg->cluster_node_id));
    bv_buf_puts(out, ",\"nodes\":[");
    for (size_t i = 0; i < partmap_nodes(c->map); i++) {
        if (i) bv_buf_putc(out, ',');
        bv_buf_json_str(out, partmap_node(c->map, i), strlen(partmap_node(c->map, i)));
    }
    bv_buf_printf(out, "],\"stream\":\"%s\",\"partitions\":%u,\"replicas\":%u", c->stream, c->nparts,
                  partmap_replicas(c->map));
    pthread_mutex_lock(&c->reg_mu);
    uint64_t reg_applied = c->reg_applied;
    pthread_mutex_unlock(&c->reg_mu);
    bv_buf_printf(out, ",\"registry\":{\"applied\":%" PRIu64 ",\"stream\":%" PRIu64 "}", reg_applied, reg_last);
    pthread_mutex_lock(&c->apply_mu);
    bv_buf_printf(out, ",\"caught_up\":%s,\"ownership\":[", c->caught_up ? "true" : "false");
    for (unsigned p = 0; p < c->nparts; p++) {
        bv_buf_printf(out, "%s{\"partition\":%u,\"owners\":[", p ? "," : "", p);
        const uint8_t *own = partmap_owners(c->map, p);
        for (unsigned r = 0; r < partmap_replicas(c->map); r++) {
            if (r) bv_buf_putc(out, ',');
            bv_buf_json_str(out, partmap_node(c->map, own[r]), strlen(partmap_node(c->map, own[r])));
        }
        bv_buf_putc(out, ']');
        if (partmap_owns(c->map, p, c->self))
            bv_buf_printf(out, ",\"applied\":%" PRIu64 ",\"stream\":%" PRIu64 ",\"lag\":%" PRIu64, c->applied[p],
                          last[p], last[p] > c->applied[p] ? last[p] - c->applied[p] : 0);
        bv_buf_putc(out, '}');
    }
    pthread_mutex_unlock(&c->apply_mu);
    bv_buf_puts(out, "]}");
    free(last);
    return 200;
}

void cluster_metrics(cluster *c, bv_buf *out) {
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
#define CM(f, h) { "beava_cluster_" #f "_total", h, offsetof(cluster, f) }
        CM(reads_local, "Gets for partitions this node owns."),
        CM(reads_forwarded, "Gets answered by another owner (NATS request/reply)."),
        CM(reads_served_for_peers, "Gets this node answered for another node."),
        CM(reads_not_caught_up, "Gets answered 503 not_caught_up."),
        CM(reads_no_owner, "Gets no owner answered (503 owner_unavailable)."),
        CM(published_msgs, "Messages JetStream acknowledged."),
        CM(publish_retries, "Publishes retried (same message id)."),
        CM(publish_failures, "Publishes JetStream did not acknowledge."),
        CM(pushes_acked, "Pushes acknowledged once every partition they feed was stored."),
        CM(pushes_failed, "Pushes answered 503 cluster_unavailable."),
        CM(applied_msgs, "Partition messages applied by this node."),
        CM(apply_errors, "Records that could not be applied (logged)."),
        CM(snapshots, "Cluster snapshots written."),
        CM(snapshot_failures, "Cluster snapshots that failed."),
        CM(reg_published, "Registry records this node published."),
        CM(reg_conflicts, "Registers refused with 409: another node's record came first."),
#undef CM
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        bv_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", counters[i].name, counters[i].help,
                      counters[i].name, counters[i].name, relaxed((_Atomic uint64_t *)((char *)c + counters[i].off)));
    pthread_mutex_lock(&c->apply_mu);
    bv_buf_puts(out, "# HELP beava_cluster_partition_applied_seq Last stream sequence applied, per owned partition.\n"
                     "# TYPE beava_cluster_partition_applied_seq gauge\n");
    for (size_t i = 0; i < c->nsubs; i++)
        bv_buf_printf(out, "beava_cluster_partition_applied_seq{partition=\"%u\"} %" PRIu64 "\n", c->subs[i].p,
                      c->applied[c->subs[i].p]);
    bv_buf_printf(out, "# HELP beava_cluster_caught_up 1 once the owned partitions caught up at start.\n"
                       "# TYPE beava_cluster_caught_up gauge\nbeava_cluster_caught_up %d\n",
                  c->caught_up ? 1 : 0);
    pthread_mutex_unlock(&c->apply_mu);
    pthread_mutex_lock(&c->reg_mu);
    bv_buf_printf(out, "# HELP beava_cluster_registry_applied_seq Last registry record applied.\n"
                       "# TYPE beava_cluster_registry_applied_seq gauge\nbeava_cluster_registry_applied_seq %" PRIu64 "\n",
                  c->reg_applied);
    pthread_mutex_unlock(&c->reg_mu);
}

void cluster_close(cluster *c) {
    if (!c) return;
    /* publishers: answer what is queued, then stop */
    pthread_mutex_lock(&c->q_mu);
    c->q_stop = true;
    pthread_cond_broadcast(&c->q_cv);
    pthread_mutex_unlock(&c->q_mu);
    for (int i = 0; i < c->npubs; i++) pthread_join(c->pubs[i].thread, NULL);
    if (c->snap_started) {
        pthread_mutex_lock(&c->snap_mu);
        c->snap_stop = true;
        pthread_cond_broadcast(&c->snap_cv);
        pthread_mutex_unlock(&c->snap_mu);
        pthread_join(c->snap_thread, NULL);
    }
    /* consumers: no message is applied past this point */
    pthread_mutex_lock(&c->reg_mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->reg_cv);
    pthread_mutex_unlock(&c->reg_mu);
    if (c->reg_sub) natsSubscription_Unsubscribe(c->reg_sub);
    for (size_t i = 0; i < c->nsubs; i++) {
        if (c->subs[i].sub) natsSubscription_Unsubscribe(c->subs[i].sub);
        if (c->subs[i].rpc) natsSubscription_Unsubscribe(c->subs[i].rpc);
    }
    if (c->snap_started) {             /* the final snapshot: a restart resumes from here */
        char err[PATH_MAX + 128];
        pthread_mutex_lock(&c->apply_mu);
        bool stopping_applied = c->applied_since_snap > 0;
        pthread_mutex_unlock(&c->apply_mu);
        if (stopping_applied && snapshot_take(c, err, sizeof err) != 0)
            bv_log_msg(c->log, LOG_ERROR, "cluster.snapshot_failed", "%s", err);
    }
    for (int i = 0; c->pubs && i < CLUSTER_PUBLISHERS; i++) pub_scratch_free(&c->pubs[i]);
    free(c->pubs);
    if (c->nc) natsConnection_Close(c->nc);
    natsSubscription_Destroy(c->reg_sub);
    for (size_t i = 0; i < c->nsubs; i++) {
        natsSubscription_Destroy(c->subs[i].sub);
        natsSubscription_Destroy(c->subs[i].rpc);
    }
    jsCtx_Destroy(c->js);
    natsConnection_Destroy(c->nc);
    natsOptions_Destroy(c->opts);
    nats_CloseAndWait(CLUSTER_CLOSE_WAIT_MS);
    if (c->lock_fd >= 0) close(c->lock_fd);
    partmap_free(c->map);
    free(c->recs);
    free(c->applied);
    free(c->target);
    free(c->subs);
    pthread_cond_destroy(&c->snap_cv);
    pthread_mutex_destroy(&c->snap_mu);
    pthread_cond_destroy(&c->reg_cv);
    pthread_mutex_destroy(&c->reg_mu);
    pthread_cond_destroy(&c->apply_cv);
    pthread_mutex_destroy(&c->apply_mu);
    pthread_cond_destroy(&c->q_cv);
    pthread_mutex_destroy(&c->q_mu);
    free(c);
}
