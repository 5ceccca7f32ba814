/*
 * cluster.c - the cluster on NATS JetStream: connection, stream, lifecycle, status and
 * metrics (cluster.h tells the design; cluster_int.h lists the other files).
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
 * Membership, building partitions from peers, dedupe, reset order: cluster.h.
 */
#include "cluster_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"

int cl_fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

const char *cl_nats_why(natsStatus s, jsErrCode jerr, char *buf, size_t n) {
    const char *last = nats_GetLastError(NULL);
    snprintf(buf, n, "%s (js error %d)%s%s", natsStatus_GetText(s), (int)jerr, last && *last ? ": " : "",
             last ? last : "");
    return buf;
}

natsStatus cl_stream_open(cluster *c, jsStreamConfig *sc, jsStreamInfo **si, jsErrCode *jerr) {
    *si = NULL;
    *jerr = 0;
    natsStatus s = js_GetStreamInfo(si, c->js, sc->Name, NULL, jerr);
    if (s != NATS_NOT_FOUND) return s;
    *jerr = 0;
    s = js_AddStream(si, c->js, sc, NULL, jerr);
    if (s == NATS_OK) return s;
    *jerr = 0;                        /* another node may have created it meanwhile */
    return js_GetStreamInfo(si, c->js, sc->Name, NULL, jerr);
}

natsStatus cl_js_publish(cluster *c, natsMsg *m, const char *msgid, uint64_t *seq, jsErrCode *jerr) {
    jsPubOptions o;
    jsPubOptions_Init(&o);
    o.MsgId = msgid;
    o.MaxWait = c->cfg->cluster_publish_timeout_ms;
    jsPubAck *pa = NULL;
    natsStatus s = js_PublishMsg(&pa, c->js, m, &o, jerr);
    if (s == NATS_OK && seq) *seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    return s;
}

void cl_part_subject(const cluster *c, unsigned p, char *out, size_t n) {
    snprintf(out, n, "%s.p.%u", c->prefix, p);
}

void cl_reg_subject(const cluster *c, char *out, size_t n) {
    snprintf(out, n, "%s.reg", c->prefix);
}

uint64_t cl_header_u64(natsMsg *m, const char *key) {
    const char *v = NULL;
    if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v) return 0;
    return strtoull(v, NULL, 10);
}

/* ---- connection and stream ------------------------------------------------------------ */

static int connect_nats(cluster *c, char *err, size_t errlen) {
    const bv_config *cfg = c->cfg;
    char why[512];
    natsStatus s = natsOptions_Create(&c->opts);
    if (s != NATS_OK) return cl_fail(err, errlen, "cluster: NATS options: %s", natsStatus_GetText(s));
    char urls[CONFIG_CLUSTER_URL_MAX];
    snprintf(urls, sizeof urls, "%s", cfg->cluster_nats_url);
    const char *list[CLUSTER_URLS_MAX];
    int n = 0;
    for (char *save = NULL, *u = strtok_r(urls, ",", &save); u && n < CLUSTER_URLS_MAX; u = strtok_r(NULL, ",", &save))
        list[n++] = u;
    if (n == 0) return cl_fail(err, errlen, "cluster.nats_url: no URL in '%s'", cfg->cluster_nats_url);
    s = natsOptions_SetServers(c->opts, list, n);
    if (s == NATS_OK) s = natsOptions_SetName(c->opts, cfg->cluster_node_id);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(c->opts, -1);   /* keep trying: NATS restarts */
    if (s == NATS_OK) s = natsOptions_SetSendAsap(c->opts, true);     /* no flusher delay on a read's round trip */
    if (s == NATS_OK && cfg->cluster_creds_file[0])
        s = natsOptions_SetUserCredentialsFromFiles(c->opts, cfg->cluster_creds_file, NULL);
    if (s == NATS_OK && cfg->cluster_tls_ca_file[0]) s = natsOptions_LoadCATrustedCertificates(c->opts, cfg->cluster_tls_ca_file);
    if (s != NATS_OK) return cl_fail(err, errlen, "cluster: NATS options: %s", cl_nats_why(s, 0, why, sizeof why));
    s = natsConnection_Connect(&c->nc, c->opts);
    if (s != NATS_OK)
        return cl_fail(err, errlen, "cluster: cannot connect to NATS at %s: %s", cfg->cluster_nats_url,
                    cl_nats_why(s, 0, why, sizeof why));
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = cfg->cluster_publish_timeout_ms;
    s = natsConnection_JetStream(&c->js, c->nc, &jo);
    if (s != NATS_OK) return cl_fail(err, errlen, "cluster: JetStream context: %s", cl_nats_why(s, 0, why, sizeof why));
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
    sc.MaxMsgs = c->cfg->cluster_stream_max_msgs ? (int64_t)c->cfg->cluster_stream_max_msgs : -1;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = cl_stream_open(c, &sc, &si, &jerr);
    if (s != NATS_OK)
        return cl_fail(err, errlen, "cluster: stream %s: %s (is JetStream enabled on the NATS server?)", c->stream,
                    cl_nats_why(s, jerr, why, sizeof why));
    int rc = 0;
    if (!si->Config || !si->Config->Description || strcmp(si->Config->Description, desc) != 0)
        rc = cl_fail(err, errlen, "cluster: stream %s was made for another configuration ('%s', this node: '%s'); "
                               "cluster.partitions is fixed when the cluster is created",
                  c->stream, si->Config && si->Config->Description ? si->Config->Description : "", desc);
    jsStreamInfo_Destroy(si);
    return rc;
}

cluster *cluster_open(const bv_config *cfg, const bv_log *log, char *err, size_t errlen) {
    cluster *c = calloc(1, sizeof *c);
    if (!c) {
        cl_fail(err, errlen, "out of memory");
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
    pthread_mutex_init(&c->member_mu, NULL);
    pthread_cond_init(&c->member_cv, NULL);
    c->nparts = cfg->cluster_partitions;
    c->applied = calloc(c->nparts, sizeof *c->applied);
    c->target = calloc(c->nparts, sizeof *c->target);
    c->subs = calloc(c->nparts, sizeof *c->subs);
    c->snap_held = calloc(c->nparts, sizeof *c->snap_held);
    if (!c->applied || !c->target || !c->subs || !c->snap_held) {
        cl_fail(err, errlen, "out of memory");
        goto err;
    }
    c->nsubs = c->nparts;
    for (unsigned p = 0; p < c->nparts; p++) c->subs[p] = (part_sub){ .c = c, .p = p };
    snprintf(c->stream, sizeof c->stream, "BEAVA_%s", cfg->cluster_name);
    snprintf(c->prefix, sizeof c->prefix, "beava.%s", cfg->cluster_name);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(c->origin, sizeof c->origin, "%s-%lld%09ld", cfg->cluster_node_id, (long long)ts.tv_sec, ts.tv_nsec);
    if (snprintf(c->snap_dir, sizeof c->snap_dir, "%s/cluster", cfg->data_dir) >= (int)sizeof c->snap_dir) {
        cl_fail(err, errlen, "cluster: data dir path too long");
        goto err;
    }
    if (bv_mkdir_p(c->snap_dir, NULL) != 0) {
        cl_fail(err, errlen, "cluster: cannot create %s: %s", c->snap_dir, strerror(errno));
        goto err;
    }
    char lock[PATH_MAX + 8];
    snprintf(lock, sizeof lock, "%s/LOCK", c->snap_dir);
    c->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (c->lock_fd < 0 || flock(c->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        cl_fail(err, errlen, "cluster: %s: %s (another beava uses this data dir?)", lock, strerror(errno));
        goto err;
    }
    if (connect_nats(c, err, errlen) != 0 || ensure_stream(c, err, errlen) != 0 || clmember_open(c, err, errlen) != 0)
        goto err;
    bv_log_msg(log, LOG_INFO, "cluster.connected", "node %s, epoch %" PRIu64 " of %zu nodes, stream %s, %u partitions, replicas %u",
               cfg->cluster_node_id, c->epoch, partmap_nodes(c->map), c->stream, c->nparts, cfg->cluster_replicas);
    return c;
err:
    cluster_close(c);
    return NULL;
}

void cluster_engine_ops(cluster *c, engine_wal_ops *wal, engine_log_backend *lb) {
    wal->append = clpub_reg_append;
    wal->wait = clpub_reg_wait;
    wal->ctx = c;
    lb->publish = clpub_publish;
    lb->keep_part = clapply_keep_part;
    lb->get = clread_get;
    lb->batch_get = clread_batch_get;
    lb->registry_catch_up = clapply_reg_catch_up;
    lb->registry_catch_up_push = clapply_reg_catch_up_push;
    lb->reset = clpub_reset;
    lb->records_by_name = c->cfg->cluster_record_format < 2;
    lb->ctx = c;
}

/* ---- start, metrics, close -------------------------------------------------------------------- */

int cluster_start(cluster *c, atomic_bool *ready, char *err, size_t errlen) {
    c->ready = ready;
    char subj[CLUSTER_SUBJECT_MAX];
    cl_reg_subject(c, subj, sizeof subj);
    c->reg_target = cl_last_seq(c, subj);
    /* what the local snapshot and the stream cover now is consumed at once; the rest (a
     * fresh data dir, a snapshot older than the stream's retention) is built by the
     * member thread from peers' snapshots (clmember.c) */
    uint64_t first = cl_stream_first_seq(c);
    size_t now = 0, later = 0;
    for (unsigned p = 0; p < c->nparts; p++) {
        if (!clmember_wants(c, p)) continue;
        cl_part_subject(c, p, subj, sizeof subj);
        if (c->recovered && cl_covered(c, c->applied[p], subj, first, c->snap_held[p])) {
            c->target[p] = cl_last_seq(c, subj);
            c->subs[p].applying = c->subs[p].built = true;
            now++;
        } else {
            c->target[p] = CLUSTER_TARGET_BUILDING;
            later++;
        }
    }
    cl_reg_subject(c, subj, sizeof subj);
    bool reg_covered = cl_covered(c, c->reg_applied, subj, first, c->recovered);
    bool reg_now = reg_covered && (c->recovered || later == 0);   /* else a peer's snapshot may bring it */
    if (!reg_now) c->reg_target = CLUSTER_TARGET_BUILDING;
    pthread_mutex_lock(&c->apply_mu);
    clapply_check_caught_up(c);
    pthread_mutex_unlock(&c->apply_mu);
    cl_reg_subject(c, subj, sizeof subj);
    if (reg_now && clapply_subscribe_from(c, subj, c->reg_applied, clapply_reg_cb, c, &c->reg_sub, err, errlen) != 0)
        return -1;
    for (unsigned p = 0; p < c->nparts; p++) {
        if (!c->subs[p].applying) continue;
        cl_part_subject(c, p, subj, sizeof subj);
        if (clapply_subscribe_from(c, subj, c->applied[p], clapply_part_cb, &c->subs[p], &c->subs[p].sub, err, errlen) != 0)
            return -1;
    }
    if (clpub_start(c, err, errlen) != 0) return -1;
    if (pthread_create(&c->snap_thread, NULL, clsnap_main, c) != 0) return cl_fail(err, errlen, "cluster: cannot start snapshots");
    c->snap_started = true;
    if (clmember_start(c, err, errlen) != 0) return -1;
    bv_log_msg(c->log, LOG_INFO, "cluster.started",
               "epoch %" PRIu64 ": owning %zu of %u partitions (%zu from the local snapshot and the stream, %zu to "
               "build); registry at %" PRIu64 "%s",
               c->epoch, now + later, c->nparts, now, later, c->reg_applied, reg_now ? "" : " (to build)");
    return 0;
}

int cluster_status(cluster *c, bv_buf *out) {
    char subj[CLUSTER_SUBJECT_MAX];
    uint64_t *last = calloc(c->nparts, sizeof *last);
    if (!last) return cl_read_error(out, "internal_error", "out of memory");
    for (size_t i = 0; i < c->nsubs; i++) {     /* outside apply_mu: these are network round trips */
        if (!c->subs[i].applying) continue;
        cl_part_subject(c, c->subs[i].p, subj, sizeof subj);
        last[c->subs[i].p] = cl_last_seq(c, subj);
    }
    uint64_t first = cl_stream_first_seq(c);
    cl_reg_subject(c, subj, sizeof subj);
    uint64_t reg_last = cl_last_seq(c, subj);
    bv_buf_puts(out, "{\"node\":");
    bv_buf_json_str(out, c->cfg->cluster_node_id, strlen(c->cfg->cluster_node_id));
    bv_buf_puts(out, ",\"nodes\":[");
    const partmap *cur = c->map;
    for (size_t i = 0; i < partmap_nodes(cur); i++) {
        if (i) bv_buf_putc(out, ',');
        bv_buf_json_str(out, partmap_node(cur, i), strlen(partmap_node(cur, i)));
    }
    bv_buf_printf(out, "],\"stream\":\"%s\",\"stream_first\":%" PRIu64 ",\"partitions\":%u,\"replicas\":%u", c->stream,
                  first, c->nparts, partmap_replicas(c->map));
    clmember_status(c, out);
    pthread_mutex_lock(&c->reg_mu);
    uint64_t reg_applied = c->reg_applied;
    pthread_mutex_unlock(&c->reg_mu);
    bv_buf_printf(out, ",\"registry\":{\"applied\":%" PRIu64 ",\"stream\":%" PRIu64 "}", reg_applied, reg_last);
    pthread_mutex_lock(&c->apply_mu);
    bv_buf_printf(out, ",\"caught_up\":%s,\"ownership\":[", c->caught_up ? "true" : "false");
    const partmap *m = c->map;
    for (unsigned p = 0; p < c->nparts; p++) {
        bv_buf_printf(out, "%s{\"partition\":%u,\"owners\":[", p ? "," : "", p);
        const uint8_t *own = partmap_owners(m, p);
        for (unsigned r = 0; r < partmap_replicas(m); r++) {
            if (r) bv_buf_putc(out, ',');
            bv_buf_json_str(out, partmap_node(m, own[r]), strlen(partmap_node(m, own[r])));
        }
        bv_buf_putc(out, ']');
        if (c->subs[p].applying)
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
        CM(catch_ups, "Registry catch-ups for pushes naming an unknown event (one JetStream request each)."),
        CM(catch_up_batches, "Push batches resumed after a registry catch-up."),
        CM(reg_void, "Registry records skipped by every node: stored on a stale base (clustered JetStream)."),
        CM(peer_snapshots_served, "Partition snapshots this node served to peers."),
        CM(peer_snapshots_fetched, "Partition snapshots fetched from peers and merged."),
        CM(peer_snapshot_failures, "Peer snapshot fetches that failed (logged)."),
        CM(partitions_dropped, "Partitions this node stopped applying after losing them."),
        CM(member_changes, "Membership changes requested here or epochs switched here."),
#undef CM
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        bv_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", counters[i].name, counters[i].help,
                      counters[i].name, counters[i].name, cl_relaxed((_Atomic uint64_t *)((char *)c + counters[i].off)));
    bv_buf_printf(out, "# HELP beava_cluster_publish_seconds Time from a batch's first publish to its last "
                       "JetStream acknowledgement.\n# TYPE beava_cluster_publish_seconds summary\n"
                       "beava_cluster_publish_seconds_sum %.6f\nbeava_cluster_publish_seconds_count %" PRIu64 "\n",
                  (double)cl_relaxed(&c->publish_us_sum) / 1e6, cl_relaxed(&c->publish_batches));
    uint64_t *last = calloc(c->nsubs ? c->nsubs : 1, sizeof *last);
    if (!last) abort();
    for (size_t i = 0; i < c->nsubs; i++) {     /* outside apply_mu: network round trips */
        if (!c->subs[i].applying) continue;
        char subj[CLUSTER_SUBJECT_MAX];
        cl_part_subject(c, c->subs[i].p, subj, sizeof subj);
        last[i] = cl_last_seq(c, subj);
    }
    pthread_mutex_lock(&c->apply_mu);
    bv_buf_puts(out, "# HELP beava_cluster_partition_applied_seq Last stream sequence applied, per owned partition.\n"
                     "# TYPE beava_cluster_partition_applied_seq gauge\n");
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].applying)
            bv_buf_printf(out, "beava_cluster_partition_applied_seq{partition=\"%u\"} %" PRIu64 "\n", c->subs[i].p,
                      c->applied[c->subs[i].p]);
    bv_buf_puts(out, "# HELP beava_cluster_partition_stream_seq The stream's last sequence, per owned partition.\n"
                     "# TYPE beava_cluster_partition_stream_seq gauge\n");
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].applying)
            bv_buf_printf(out, "beava_cluster_partition_stream_seq{partition=\"%u\"} %" PRIu64 "\n", c->subs[i].p, last[i]);
    bv_buf_puts(out, "# HELP beava_cluster_partition_lag Stream sequences not applied yet, per owned partition.\n"
                     "# TYPE beava_cluster_partition_lag gauge\n");
    for (size_t i = 0; i < c->nsubs; i++) {
        if (!c->subs[i].applying) continue;
        uint64_t a = c->applied[c->subs[i].p];
        bv_buf_printf(out, "beava_cluster_partition_lag{partition=\"%u\"} %" PRIu64 "\n", c->subs[i].p,
                      last[i] > a ? last[i] - a : 0);
    }
    free(last);
    bv_buf_printf(out, "# HELP beava_cluster_caught_up 1 once the owned partitions caught up at start.\n"
                       "# TYPE beava_cluster_caught_up gauge\nbeava_cluster_caught_up %d\n",
                  c->caught_up ? 1 : 0);
    pthread_mutex_unlock(&c->apply_mu);
    pthread_mutex_lock(&c->member_mu);
    bv_buf_printf(out, "# HELP beava_cluster_epoch The membership epoch this node follows.\n"
                       "# TYPE beava_cluster_epoch gauge\nbeava_cluster_epoch %" PRIu64 "\n", c->epoch);
    pthread_mutex_unlock(&c->member_mu);
    pthread_mutex_lock(&c->reg_mu);
    bv_buf_printf(out, "# HELP beava_cluster_registry_applied_seq Last registry record applied.\n"
                       "# TYPE beava_cluster_registry_applied_seq gauge\nbeava_cluster_registry_applied_seq %" PRIu64 "\n",
                  c->reg_applied);
    pthread_mutex_unlock(&c->reg_mu);
}

void cluster_close(cluster *c) {
    if (!c) return;
    /* membership: no ownership change past this point */
    clmember_stop(c);
    /* reads: leave every read queue group first, answering what NATS handed over already
     * (the partitions are still applied meanwhile), so peers' forwarded reads go to the
     * other owners while this node stops instead of finding it stopping */
    int64_t drain_ms = (int64_t)c->cfg->cluster_read_wait_ms + c->cfg->cluster_publish_timeout_ms;
    pthread_mutex_lock(&c->apply_mu);
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].rpc && natsSubscription_DrainTimeout(c->subs[i].rpc, drain_ms) != NATS_OK)
            natsSubscription_Unsubscribe(c->subs[i].rpc);
    pthread_mutex_unlock(&c->apply_mu);
    for (size_t i = 0; i < c->nsubs; i++)             /* rpc_cb may take apply_mu: not held here */
        if (c->subs[i].rpc) natsSubscription_WaitForDrainCompletion(c->subs[i].rpc, drain_ms);
    /* publishers: answer what is queued, then stop */
    clpub_stop(c);
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
        if (c->subs[i].rpc_draining) natsSubscription_Unsubscribe(c->subs[i].rpc_draining);
    }
    if (c->snap_started) {             /* the final snapshot: a restart resumes from here */
        char err[PATH_MAX + 128];
        pthread_mutex_lock(&c->apply_mu);
        bool stopping_applied = c->applied_since_snap > 0;
        pthread_mutex_unlock(&c->apply_mu);
        if (stopping_applied && clsnap_take(c, err, sizeof err) != 0)
            bv_log_msg(c->log, LOG_ERROR, "cluster.snapshot_failed", "%s", err);
    }
    clpub_free(c);
    if (c->nc) natsConnection_Close(c->nc);
    natsSubscription_Destroy(c->reg_sub);
    for (size_t i = 0; i < c->nsubs; i++) {
        natsSubscription_Destroy(c->subs[i].sub);
        natsSubscription_Destroy(c->subs[i].rpc);
        natsSubscription_Destroy(c->subs[i].rpc_draining);
    }
    jsCtx_Destroy(c->js);
    natsConnection_Destroy(c->nc);
    natsOptions_Destroy(c->opts);
    nats_CloseAndWait(CLUSTER_CLOSE_WAIT_MS);
    if (c->lock_fd >= 0) close(c->lock_fd);
    clmember_free(c);
    partmap_free(c->map);
    free(c->recs);
    free(c->applied);
    free(c->target);
    free(c->snap_held);
    free(c->subs);
    pthread_cond_destroy(&c->member_cv);
    pthread_mutex_destroy(&c->member_mu);
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
