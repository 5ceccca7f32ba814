/*
 * clmember.c - membership through the log: the member list and its epoch, changing it
 * (POST /cluster/members), building the partitions a node gains (a peer's snapshot plus
 * the stream, or the stream alone) before ownership switches, and dropping the ones it
 * lost after (cluster.h tells the procedure).
 *
 * Threads: the members watcher (a NATS delivery thread: it only records the newest
 * record and wakes the builder) and the builder (every ownership change happens there,
 * one at a time, under apply_mu).
 */
#include "cluster_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Node ids go into subjects and file names: letters, digits, '-' and '_'. */
static bool id_ok(const char *s) {
    if (!s || !*s || strlen(s) >= CONFIG_CLUSTER_ID_MAX) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_'))
            return false;
    return true;
}

/* ---- records ---------------------------------------------------------------------------------- */

static void strv_free(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static void mstate_free(mstate *s) {
    if (!s) return;
    strv_free(s->nodes, s->nnodes);
    strv_free(s->next, s->nnext);
    strv_free(s->ready, s->nready);
    free(s);
}

static bool strv_has(char *const *v, size_t n, const char *id) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], id) == 0) return true;
    return false;
}

/* A JSON array of distinct valid ids; false if it is not one. */
static bool strv_from_json(const json_t *a, char ***out, size_t *n, size_t max) {
    *out = NULL;
    *n = 0;
    if (!json_is_array(a) || json_array_size(a) > max) return false;
    size_t k = json_array_size(a);
    char **v = calloc(k ? k : 1, sizeof *v);
    if (!v) return false;
    for (size_t i = 0; i < k; i++) {
        const char *id = json_string_value(json_array_get(a, i));
        if (!id_ok(id) || strv_has(v, i, id) || !(v[i] = strdup(id))) {
            strv_free(v, i + 1);
            return false;
        }
    }
    *out = v;
    *n = k;
    return true;
}

static mstate *mstate_parse(const char *data, size_t len, uint64_t seq) {
    json_t *j = json_loadb(data, len, 0, NULL);
    mstate *s = calloc(1, sizeof *s);
    bool ok = j && s && json_is_integer(json_object_get(j, "epoch")) && json_integer_value(json_object_get(j, "epoch")) > 0;
    if (ok) {
        s->seq = seq;
        s->epoch = (uint64_t)json_integer_value(json_object_get(j, "epoch"));
        json_t *next = json_object_get(j, "next");
        ok = strv_from_json(json_object_get(j, "nodes"), &s->nodes, &s->nnodes, PARTMAP_MAX_NODES) && s->nnodes > 0 &&
             (!next || json_is_null(next) ||
              (strv_from_json(next, &s->next, &s->nnext, PARTMAP_MAX_NODES) && s->nnext > 0)) &&
             (!json_object_get(j, "ready") ||
              strv_from_json(json_object_get(j, "ready"), &s->ready, &s->nready, PARTMAP_MAX_NODES));
    }
    json_decref(j);
    if (!ok) {
        mstate_free(s);
        return NULL;
    }
    return s;
}

static json_t *strv_json(char *const *v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

static char *mstate_json(const mstate *s) {
    json_t *j = json_pack("{s:I,s:o,s:o,s:o}", "epoch", (json_int_t)s->epoch, "nodes", strv_json(s->nodes, s->nnodes),
                          "next", s->nnext ? strv_json(s->next, s->nnext) : json_null(), "ready",
                          strv_json(s->ready, s->nready));
    char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return t;
}

static char **strv_copy(char *const *v, size_t n, size_t extra) {
    char **o = calloc(n + extra + 1, sizeof *o);
    if (!o) abort();
    for (size_t i = 0; i < n; i++)
        if (!(o[i] = strdup(v[i]))) abort();
    return o;
}

static partmap *map_of(cluster *c, char *const *nodes, size_t n) {
    partmap *m = partmap_new(nodes, n, c->nparts, c->cfg->cluster_replicas);
    if (m) partmap_set_self(m, c->cfg->cluster_node_id);
    return m;
}

/* The nodes of `next` that own a partition there they do not own in `cur`. */
static bool gains(const partmap *cur, const partmap *next, const char *id) {
    int ni = partmap_node_index(next, id), ci = partmap_node_index(cur, id);
    if (ni < 0) return false;
    for (unsigned p = 0; p < partmap_partitions(next); p++)
        if (partmap_owns(next, p, (size_t)ni) && (ci < 0 || !partmap_owns(cur, p, (size_t)ci))) return true;
    return false;
}

/* ---- the members stream ------------------------------------------------------------------------ */

static void log_subject(const cluster *c, char *out, size_t n) { snprintf(out, n, "%s.log", c->mprefix); }
static void addr_subject(const cluster *c, const char *id, char *out, size_t n) {
    snprintf(out, n, "%s.addr.%s", c->mprefix, id);
}

/* Its own stream: retention of the partitions' stream must never drop the member list. */
static int ensure_members_stream(cluster *c, char *err, size_t errlen) {
    char subj[CLUSTER_SUBJECT_MAX + 16], why[512];
    snprintf(subj, sizeof subj, "%s.>", c->mprefix);
    const char *subjects[1] = { subj };
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = c->mstream;
    sc.Description = "beava cluster membership";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = c->cfg->cluster_stream_replicas;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = cl_stream_open(c, &sc, &si, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK)
        return cl_fail(err, errlen, "cluster: stream %s: %s", c->mstream, cl_nats_why(s, jerr, why, sizeof why));
    return 0;
}

/* The newest record: 0 with *out (NULL when there is none), -1 with err. */
static int members_last(cluster *c, mstate **out, char *err, size_t errlen) {
    char subj[CLUSTER_SUBJECT_MAX + 16], why[512];
    log_subject(c, subj, sizeof subj);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    *out = NULL;
    natsStatus s = js_GetLastMsg(&m, c->js, c->mstream, subj, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) return 0;
    if (s != NATS_OK) return cl_fail(err, errlen, "cluster: reading %s: %s", subj, cl_nats_why(s, jerr, why, sizeof why));
    *out = mstate_parse(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), natsMsg_GetSequence(m));
    int rc = *out ? 0 : cl_fail(err, errlen, "cluster: the membership record at %s sequence %" PRIu64 " is malformed",
                                 c->mstream, natsMsg_GetSequence(m));
    natsMsg_Destroy(m);
    return rc;
}

/* Publish s if the last record is still `expect` (0: none). 0 stored (s->seq set), 1 another
 * record came first, -1 with err. */
static int members_cas(cluster *c, mstate *s, uint64_t expect, char *err, size_t errlen) {
    char subj[CLUSTER_SUBJECT_MAX + 16], ev[32], why[512];
    log_subject(c, subj, sizeof subj);
    snprintf(ev, sizeof ev, "%" PRIu64, expect);
    char *body = mstate_json(s);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus st = NATS_NO_MEMORY;
    /* by hand: the client library omits an expected sequence of 0 */
    if (body && (st = natsMsg_Create(&m, subj, NULL, body, (int)strlen(body))) == NATS_OK &&
        (st = natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", ev)) == NATS_OK)
        st = cl_js_publish(c, m, NULL, &s->seq, &jerr);
    free(body);
    natsMsg_Destroy(m);
    if (st == NATS_OK) return 0;
    if (jerr == JSStreamWrongLastSequenceErr) return 1;
    return cl_fail(err, errlen, "cluster: publishing the membership record: %s", cl_nats_why(st, jerr, why, sizeof why));
}

int clmember_open(cluster *c, char *err, size_t errlen) {
    snprintf(c->mstream, sizeof c->mstream, "BEAVA_%s_MEMBERS", c->cfg->cluster_name);
    snprintf(c->mprefix, sizeof c->mprefix, "beava-members.%s", c->cfg->cluster_name);
    if (ensure_members_stream(c, err, errlen) != 0) return -1;
    mstate *s = NULL;
    for (int t = 0; t < MEMBER_CAS_TRIES && !s; t++) {
        if (members_last(c, &s, err, errlen) != 0) return -1;
        if (s) break;
        /* a new cluster: cluster.nodes seeds the member list (epoch 1) */
        mstate *init = calloc(1, sizeof *init);
        if (!init) return cl_fail(err, errlen, "out of memory");
        init->epoch = 1;
        init->nodes = strv_copy(c->cfg->cluster_nodes, c->cfg->ncluster_nodes, 0);
        init->nnodes = c->cfg->ncluster_nodes;
        int rc = members_cas(c, init, 0, err, errlen);
        if (rc < 0) {
            mstate_free(init);
            return -1;
        }
        if (rc == 0) {
            s = init;
            bv_log_msg(c->log, LOG_INFO, "cluster.members_created", "epoch 1: %zu nodes from cluster.nodes", s->nnodes);
        } else {
            mstate_free(init);
        }
    }
    if (!s) return cl_fail(err, errlen, "cluster: cannot read or create the membership record");
    c->map = map_of(c, s->nodes, s->nnodes);
    c->next_map = s->nnext ? map_of(c, s->next, s->nnext) : NULL;
    if (!c->map || (s->nnext && !c->next_map)) {
        int rc = cl_fail(err, errlen, "cluster: the member list (%zu nodes, epoch %" PRIu64 ") cannot own %u partitions "
                                      "with cluster.replicas %u",
                         s->nnodes, s->epoch, c->nparts, c->cfg->cluster_replicas);
        mstate_free(s);
        return rc;
    }
    c->epoch = s->epoch;
    c->mseq_seen = s->seq;
    c->mlatest = s;
    bool same = s->nnodes == c->cfg->ncluster_nodes;
    for (size_t i = 0; same && i < s->nnodes; i++) same = strv_has(c->cfg->cluster_nodes, c->cfg->ncluster_nodes, s->nodes[i]);
    if (!same)
        bv_log_msg(c->log, LOG_INFO, "cluster.members_from_log",
                   "the log's member list (epoch %" PRIu64 ", %zu nodes) differs from cluster.nodes; the log wins",
                   s->epoch, s->nnodes);
    if (!partmap_has(c->map, c->cfg->cluster_node_id) && !(c->next_map && partmap_has(c->next_map, c->cfg->cluster_node_id)))
        bv_log_msg(c->log, LOG_INFO, "cluster.not_a_member",
                   "node %s is not a member (epoch %" PRIu64 "): it owns no partition until added "
                   "(POST /cluster/members {\"add\":\"%s\"})",
                   c->cfg->cluster_node_id, s->epoch, c->cfg->cluster_node_id);
    return 0;
}

bool clmember_wants(cluster *c, unsigned p) {
    if (partmap_owns_self(c->map, p)) return true;
    pthread_mutex_lock(&c->member_mu);
    bool w = c->next_map && partmap_owns_self(c->next_map, p);
    pthread_mutex_unlock(&c->member_mu);
    return w;
}

/* ---- addresses --------------------------------------------------------------------------------- */

void cluster_set_admin(cluster *c, const char *admin_bound, const char *token) {
    snprintf(c->admin_addr, sizeof c->admin_addr, "%s",
             c->cfg->cluster_advertise_admin[0] ? c->cfg->cluster_advertise_admin : admin_bound);
    free(c->admin_token);
    c->admin_token = token ? strdup(token) : NULL;
    if (!c->cfg->cluster_advertise_admin[0] &&
        (strncmp(c->admin_addr, "127.", 4) == 0 || strncmp(c->admin_addr, "localhost:", 10) == 0 ||
         strncmp(c->admin_addr, "[::1]", 5) == 0))
        bv_log_msg(c->log, LOG_WARN, "cluster.admin_loopback",
                   "the admin port %s is advertised to peers: only nodes on this host can fetch partition "
                   "snapshots from it (set cluster.advertise_admin and bind admin_addr to a reachable address)",
                   c->admin_addr);
}

void cluster_advertise(cluster *c, const char *data_bound) {
    snprintf(c->data_addr, sizeof c->data_addr, "%s",
             c->cfg->cluster_advertise_data[0] ? c->cfg->cluster_advertise_data : data_bound);
    char subj[CLUSTER_SUBJECT_MAX + 80], why[512];
    addr_subject(c, c->cfg->cluster_node_id, subj, sizeof subj);
    json_t *j = json_pack("{s:s,s:s,s:s}", "node", c->cfg->cluster_node_id, "admin", c->admin_addr, "data", c->data_addr);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    jsErrCode jerr = 0;
    natsStatus s = body ? js_Publish(NULL, c->js, subj, body, (int)strlen(body), NULL, &jerr) : NATS_NO_MEMORY;
    free(body);
    if (s != NATS_OK)
        bv_log_msg(c->log, LOG_ERROR, "cluster.advertise_failed", "%s: %s", subj, cl_nats_why(s, jerr, why, sizeof why));
    else
        bv_log_msg(c->log, LOG_INFO, "cluster.advertised", "admin %s, data %s", c->admin_addr, c->data_addr);
}

/* A node's advertised addresses ({"node","admin","data"}), or NULL. */
static json_t *peer_addr(cluster *c, const char *id) {
    char subj[CLUSTER_SUBJECT_MAX + 80];
    addr_subject(c, id, subj, sizeof subj);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    json_t *j = NULL;
    if (js_GetLastMsg(&m, c->js, c->mstream, subj, NULL, &jerr) == NATS_OK)
        j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
    natsMsg_Destroy(m);
    if (j && !json_is_string(json_object_get(j, "admin"))) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* ---- building and dropping partitions (the builder thread) ------------------------------------------ */

static void set_error(cluster *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(cluster *c, const char *fmt, ...) {
    char msg[sizeof c->build_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->member_mu);
    bool changed = strcmp(msg, c->build_error) != 0;
    snprintf(c->build_error, sizeof c->build_error, "%s", msg);
    pthread_mutex_unlock(&c->member_mu);
    if (changed && msg[0]) bv_log_msg(c->log, LOG_ERROR, "cluster.build_failed", "%s", msg);
}

/* Append "; one" to why (truncated to fit). */
static void why_add(char *why, size_t wl, const char *one) {
    size_t n = strlen(why);
    if (n && n + 2 < wl) {
        memcpy(why + n, "; ", 2);
        n += 2;
    }
    size_t k = strlen(one);
    if (k > wl - 1 - n) k = wl - 1 - n;
    memcpy(why + n, one, k);
    why[n + k] = 0;
}

/* Consume p from applied[p] on, and wait until it applied what the stream held then. */
static int start_part(cluster *c, unsigned p, char *why, size_t wl) {
    char subj[CLUSTER_SUBJECT_MAX];
    cl_part_subject(c, p, subj, sizeof subj);
    uint64_t last = cl_last_seq(c, subj);
    part_sub *ps = &c->subs[p];
    pthread_mutex_lock(&c->apply_mu);
    if (clapply_subscribe_from(c, subj, c->applied[p], clapply_part_cb, ps, &ps->sub, why, wl) != 0) {
        pthread_mutex_unlock(&c->apply_mu);
        return -1;
    }
    ps->applying = true;
    c->target[p] = last;
    while (c->applied[p] < last && !atomic_load(&c->member_stop)) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 1;
        pthread_cond_timedwait(&c->apply_cv, &c->apply_mu, &dl);
    }
    ps->built = c->applied[p] >= last;
    clapply_check_caught_up(c);
    if (c->caught_up) clread_subscribe(c);
    pthread_mutex_unlock(&c->apply_mu);
    return 0;
}

/* Keep the entities of partitions this node applies (apply_mu held). */
static bool keep_applying(void *ctx, const char *table, const char *key, size_t klen) {
    cluster *c = ctx;
    return c->subs[partmap_partition(c->map, table, key, klen)].applying;
}

/* Build p: a peer's snapshot (any owner of the current epoch, or of the pending change
 * that is built there) then the stream; else the stream alone if it still holds
 * everything after applied[p]. */
static int build_part(cluster *c, unsigned p, bool peers_first) {
    uint64_t first = cl_stream_first_seq(c);
    char subj[CLUSTER_SUBJECT_MAX];
    cl_part_subject(c, p, subj, sizeof subj);
    bool covered = cl_covered(c, c->applied[p], subj, first, c->snap_held[p]);
    char why[600] = "", one[600];
    if (peers_first || !covered) {
        bool *in = calloc(c->nparts, sizeof *in);
        if (!in) abort();
        in[p] = true;
        const partmap *m = c->map;
        const uint8_t *own = partmap_owners(m, p);
        bool done = false;
        for (unsigned r = 0; r < partmap_replicas(m) && !done; r++) {
            const char *id = partmap_node(m, own[r]);
            if (strcmp(id, c->cfg->cluster_node_id) == 0) continue;
            json_t *a = peer_addr(c, id);
            if (!a) {
                snprintf(one, sizeof one, "%s has not advertised an admin address", id);
            } else {
                done = clsnap_fetch(c, in, id, json_string_value(json_object_get(a, "admin")), one, sizeof one) == 0;
                json_decref(a);
            }
            if (!done) why_add(why, sizeof why, one);
        }
        free(in);
        if (done) return start_part(c, p, why, sizeof why) == 0 ? 0 : (set_error(c, "partition %u: %s", p, why), -1);
    }
    if (!covered) {
        set_error(c, "partition %u: no peer snapshot (%s) and the stream no longer holds its beginning (first "
                     "sequence %" PRIu64 ", applied here %" PRIu64 "); /ready stays 503 until a peer can serve it",
                  p, why[0] ? why : "no other owner", first, c->applied[p]);
        return -1;
    }
    if (why[0]) bv_log_msg(c->log, LOG_INFO, "cluster.build_from_stream", "partition %u from the stream alone (%s)", p, why);
    if (start_part(c, p, why, sizeof why) != 0) {
        set_error(c, "partition %u: %s", p, why);
        return -1;
    }
    return 0;
}

/* A fresh node (no local snapshot) takes the registry from a peer's snapshot (with the
 * partitions it needs that this peer owns) before consuming the registry subject, unless
 * the stream still holds the registry from its beginning. */
static int build_registry(cluster *c) {
    uint64_t first = cl_stream_first_seq(c);
    char subj[CLUSTER_SUBJECT_MAX];
    cl_reg_subject(c, subj, sizeof subj);
    bool covered = cl_covered(c, c->reg_applied, subj, first, c->recovered);
    char why[600] = "", one[600];
    bool adopted = false;
    const partmap *m = c->map;
    if (!c->recovered) {
        bool *in = calloc(c->nparts, sizeof *in);
        if (!in) abort();
        for (size_t i = 0; i < partmap_nodes(m) && !adopted; i++) {
            const char *id = partmap_node(m, i);
            if (strcmp(id, c->cfg->cluster_node_id) == 0) continue;
            for (unsigned p = 0; p < c->nparts; p++)
                in[p] = c->target[p] == CLUSTER_TARGET_BUILDING && partmap_owns(m, p, i);
            json_t *a = peer_addr(c, id);
            if (!a) {
                snprintf(one, sizeof one, "%s has not advertised an admin address", id);
            } else {
                adopted = clsnap_fetch(c, in, id, json_string_value(json_object_get(a, "admin")), one, sizeof one) == 0;
                json_decref(a);
            }
            if (!adopted) why_add(why, sizeof why, one);
        }
        if (adopted) {   /* the partitions that came with it: consume them from their sequences */
            for (unsigned p = 0; p < c->nparts; p++)
                if (in[p] && start_part(c, p, one, sizeof one) != 0) bv_log_msg(c->log, LOG_ERROR, "cluster.build_failed", "partition %u: %s", p, one);
        }
        free(in);
    }
    if (!adopted && !covered) {
        set_error(c, "registry: no peer snapshot (%s) and the stream no longer holds the registry's beginning (first "
                     "sequence %" PRIu64 ", applied here %" PRIu64 "); /ready stays 503 until a peer can serve it",
                  why[0] ? why : "no other member", first, c->reg_applied);
        return -1;
    }
    uint64_t last = cl_last_seq(c, subj);
    if (clapply_subscribe_from(c, subj, c->reg_applied, clapply_reg_cb, c, &c->reg_sub, why, sizeof why) != 0) {
        set_error(c, "registry: %s", why);
        return -1;
    }
    pthread_mutex_lock(&c->apply_mu);
    pthread_mutex_lock(&c->reg_mu);
    c->reg_target = last;
    pthread_mutex_unlock(&c->reg_mu);
    clapply_check_caught_up(c);
    pthread_mutex_unlock(&c->apply_mu);
    return 0;
}

/* How long a node keeps applying a partition it lost (reads in flight finish). */
static int64_t grace_ms(const cluster *c) {
    return (int64_t)c->cfg->cluster_read_wait_ms + c->cfg->cluster_publish_timeout_ms;
}

/* Ownership moves to the newest record's epoch. */
static void switch_epoch(cluster *c, const mstate *s) {
    partmap *cur = map_of(c, s->nodes, s->nnodes);
    partmap *next = s->nnext ? map_of(c, s->next, s->nnext) : NULL;
    if (!cur || (s->nnext && !next)) {
        partmap_free(cur);
        partmap_free(next);
        set_error(c, "membership epoch %" PRIu64 " cannot own %u partitions with cluster.replicas %u", s->epoch,
                  c->nparts, c->cfg->cluster_replicas);
        return;
    }
    pthread_mutex_lock(&c->apply_mu);
    partmap *old = c->map;
    c->map = cur;
    for (unsigned p = 0; p < c->nparts; p++) {       /* no longer an owner: leave the read queue group */
        part_sub *ps = &c->subs[p];
        if (ps->rpc && !partmap_owns_self(cur, p)) {
            /* drain, not unsubscribe: requests NATS already handed to this node are answered
             * (forwarded to the new owners), not dropped */
            natsSubscription_Destroy(ps->rpc_draining);
            ps->rpc_draining = ps->rpc;
            ps->rpc = NULL;
            if (natsSubscription_DrainTimeout(ps->rpc_draining, grace_ms(c)) != NATS_OK)
                natsSubscription_Unsubscribe(ps->rpc_draining);
        }
    }
    if (c->caught_up) clread_subscribe(c);            /* newly owned and built: join it */
    pthread_mutex_unlock(&c->apply_mu);
    pthread_mutex_lock(&c->member_mu);
    partmap **r = realloc(c->retired, (c->nretired + 2) * sizeof *r);
    if (!r) abort();
    c->retired = r;
    c->retired[c->nretired++] = old;                 /* readers may still hold it */
    if (c->next_map) c->retired[c->nretired++] = c->next_map;
    c->next_map = next;
    uint64_t from = c->epoch;
    c->epoch = s->epoch;
    pthread_mutex_unlock(&c->member_mu);
    cl_bump(&c->member_changes);
    bv_log_msg(c->log, LOG_INFO, "cluster.epoch", "epoch %" PRIu64 " -> %" PRIu64 ": %zu nodes", from, s->epoch,
               s->nnodes);
}

/* The pending change's next map moved (a new proposal or a cancel) within the epoch. */
static void set_next(cluster *c, const mstate *s) {
    partmap *next = s->nnext ? map_of(c, s->next, s->nnext) : NULL;
    pthread_mutex_lock(&c->member_mu);
    if (c->next_map) {
        partmap **r = realloc(c->retired, (c->nretired + 1) * sizeof *r);
        if (!r) abort();
        c->retired = r;
        c->retired[c->nretired++] = c->next_map;
    }
    c->next_map = next;
    pthread_mutex_unlock(&c->member_mu);
}

/* This node built every partition it gains: say so in the record (the last gainer to say
 * so switches the epoch in the same record). */
static void report_ready(cluster *c, uint64_t epoch) {
    const char *self = c->cfg->cluster_node_id;
    char err[600];
    for (int t = 0; t < MEMBER_CAS_TRIES; t++) {
        mstate *s = NULL;
        if (members_last(c, &s, err, sizeof err) != 0) {
            set_error(c, "membership: %s", err);
            return;
        }
        if (!s || s->epoch != epoch || !s->nnext || strv_has(s->ready, s->nready, self)) {
            mstate_free(s);
            return;
        }
        uint64_t expect = s->seq;
        char **ready = strv_copy(s->ready, s->nready, 1);
        if (!(ready[s->nready] = strdup(self))) abort();
        strv_free(s->ready, s->nready);
        s->ready = ready;
        s->nready++;
        partmap *cur = map_of(c, s->nodes, s->nnodes), *next = map_of(c, s->next, s->nnext);
        bool all = cur && next;
        for (size_t i = 0; all && i < s->nnext; i++)
            if (gains(cur, next, s->next[i]) && !strv_has(s->ready, s->nready, s->next[i])) all = false;
        partmap_free(cur);
        partmap_free(next);
        if (all) {                         /* the switch: next becomes the member list */
            strv_free(s->nodes, s->nnodes);
            strv_free(s->ready, s->nready);
            s->nodes = s->next;
            s->nnodes = s->nnext;
            s->next = s->ready = NULL;
            s->nnext = s->nready = 0;
            s->epoch++;
        }
        int rc = members_cas(c, s, expect, err, sizeof err);
        mstate_free(s);
        if (rc == 0) {
            bv_log_msg(c->log, LOG_INFO, "cluster.ready_reported", "built every partition gained in epoch %" PRIu64 "%s",
                       epoch + 1, all ? "; switched" : "");
            return;
        }
        if (rc < 0) {
            set_error(c, "membership: %s", err);
            return;
        }
    }
}

static mstate *mstate_copy(const mstate *s) {
    char *t = mstate_json(s);
    mstate *o = t ? mstate_parse(t, strlen(t), s->seq) : NULL;
    free(t);
    return o;
}

/* One pass: follow the newest record. Returns true when something failed (retry soon). */
static bool reconcile(cluster *c) {
    bool failed = false;
    if (!c->reg_sub && build_registry(c) != 0) return true;
    pthread_mutex_lock(&c->member_mu);
    mstate *s = c->mlatest ? mstate_copy(c->mlatest) : NULL;
    c->member_kick = false;
    uint64_t epoch = c->epoch;
    pthread_mutex_unlock(&c->member_mu);
    if (s && s->seq != c->mseq_seen) {   /* a record not followed yet */
        if (s->epoch > epoch) switch_epoch(c, s);
        else if (s->epoch == epoch) set_next(c, s);
        c->mseq_seen = s->seq;
    }
    if (s) epoch = s->epoch;
    mstate_free(s);
    /* build what this node gains (or owns but has not built: a fresh start) */
    bool self_gains = false;
    for (unsigned p = 0; p < c->nparts && !atomic_load(&c->member_stop); p++) {
        if (!clmember_wants(c, p)) continue;
        pthread_mutex_lock(&c->apply_mu);
        part_sub *ps = &c->subs[p];
        bool need = !ps->applying;
        ps->drop_at_ms = 0;
        bool gained = !partmap_owns_self(c->map, p);
        bool peers_first = !c->recovered || gained || c->caught_up;
        pthread_mutex_unlock(&c->apply_mu);
        self_gains |= gained;
        if (need && build_part(c, p, peers_first) != 0) failed = true;
    }
    if (!failed) set_error(c, "%s", "");
    /* lost partitions: leave them after the grace (reads in flight finish), then drop */
    int64_t now = now_ms(), grace = grace_ms(c);
    bool drop = false;
    pthread_mutex_lock(&c->apply_mu);
    for (unsigned p = 0; p < c->nparts; p++) {
        part_sub *ps = &c->subs[p];
        if (!ps->applying || clmember_wants(c, p)) continue;
        if (ps->drop_at_ms == 0) ps->drop_at_ms = now + grace;
        if (now < ps->drop_at_ms) continue;
        if (ps->sub) {
            natsSubscription_Unsubscribe(ps->sub);
            natsSubscription_Destroy(ps->sub);
            ps->sub = NULL;
        }
        natsSubscription_Destroy(ps->rpc_draining);    /* drained by now (same timeout) */
        ps->rpc_draining = NULL;
        ps->applying = ps->built = false;
        ps->drop_at_ms = 0;
        c->applied[p] = c->target[p] = 0;
        c->snap_held[p] = false;
        cl_bump(&c->partitions_dropped);
        drop = true;
    }
    if (drop) {
        size_t n = engine_drop_entities(c->eng, keep_applying, c);
        c->applied_since_snap++;
        bv_log_msg(c->log, LOG_INFO, "cluster.partitions_dropped", "%zu entities of partitions this node lost", n);
    }
    pthread_mutex_unlock(&c->apply_mu);
    /* every gained partition built: say so */
    if (self_gains && !failed) {
        bool all_built = true;
        pthread_mutex_lock(&c->apply_mu);
        for (unsigned p = 0; p < c->nparts; p++)
            if (clmember_wants(c, p) && !c->subs[p].built) all_built = false;
        pthread_mutex_unlock(&c->apply_mu);
        if (all_built) report_ready(c, epoch);
    }
    return failed;
}

/* The earliest pending drop (0: none). */
static int64_t next_drop(cluster *c) {
    int64_t t = 0;
    pthread_mutex_lock(&c->apply_mu);
    for (unsigned p = 0; p < c->nparts; p++)
        if (c->subs[p].drop_at_ms && (t == 0 || c->subs[p].drop_at_ms < t)) t = c->subs[p].drop_at_ms;
    pthread_mutex_unlock(&c->apply_mu);
    return t;
}

static void *member_main(void *arg) {
    cluster *c = arg;
    while (!atomic_load(&c->member_stop)) {
        bool failed = reconcile(c);
        int64_t wake = next_drop(c);
        if (failed && (wake == 0 || wake > now_ms() + MEMBER_RETRY_MS)) wake = now_ms() + MEMBER_RETRY_MS;
        pthread_mutex_lock(&c->member_mu);
        while (!c->member_kick && !atomic_load(&c->member_stop)) {
            int64_t left = wake ? wake - now_ms() : 1000;
            if (wake && left <= 0) break;
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            uint64_t ns = (uint64_t)dl.tv_nsec + (uint64_t)left * 1000000ull;
            dl.tv_sec += (time_t)(ns / 1000000000ull);
            dl.tv_nsec = (long)(ns % 1000000000ull);
            if (pthread_cond_timedwait(&c->member_cv, &c->member_mu, &dl) == ETIMEDOUT && wake) break;
        }
        pthread_mutex_unlock(&c->member_mu);
    }
    return NULL;
}

/* The watcher: record the newest record, wake the builder. */
static void member_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
    (void)nc, (void)sub;
    cluster *c = closure;
    jsMsgMetaData *meta = NULL;
    uint64_t seq = 0;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK && meta) seq = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
    mstate *s = mstate_parse(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), seq);
    if (!s) {
        bv_log_msg(c->log, LOG_ERROR, "cluster.member_record_malformed", "sequence %" PRIu64 " ignored", seq);
    } else {
        pthread_mutex_lock(&c->member_mu);
        if (!c->mlatest || c->mlatest->seq < s->seq) {
            mstate_free(c->mlatest);
            c->mlatest = s;
            s = NULL;
            c->member_kick = true;
            pthread_cond_broadcast(&c->member_cv);
        }
        pthread_mutex_unlock(&c->member_mu);
        mstate_free(s);
    }
    natsMsg_Destroy(m);
}

int clmember_start(cluster *c, char *err, size_t errlen) {
    char subj[CLUSTER_SUBJECT_MAX + 16], why[512];
    log_subject(c, subj, sizeof subj);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = c->mstream;
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = (c->mlatest ? c->mlatest->seq : 0) + 1;
    jsErrCode jerr = 0;
    natsStatus s = js_Subscribe(&c->member_sub, c->js, subj, member_cb, c, NULL, &so, &jerr);
    if (s != NATS_OK) return cl_fail(err, errlen, "cluster: subscribe %s: %s", subj, cl_nats_why(s, jerr, why, sizeof why));
    c->member_kick = true;
    if (pthread_create(&c->member_thread, NULL, member_main, c) != 0) return cl_fail(err, errlen, "cluster: cannot start the member thread");
    c->member_started = true;
    return 0;
}

void clmember_stop(cluster *c) {
    atomic_store(&c->member_stop, true);
    if (c->member_started) {
        pthread_mutex_lock(&c->member_mu);
        pthread_cond_broadcast(&c->member_cv);
        pthread_mutex_unlock(&c->member_mu);
        pthread_mutex_lock(&c->apply_mu);
        pthread_cond_broadcast(&c->apply_cv);
        pthread_mutex_unlock(&c->apply_mu);
        pthread_join(c->member_thread, NULL);
        c->member_started = false;
    }
    if (c->member_sub) natsSubscription_Unsubscribe(c->member_sub);
}

void clmember_free(cluster *c) {
    natsSubscription_Destroy(c->member_sub);
    c->member_sub = NULL;
    mstate_free(c->mlatest);
    for (size_t i = 0; i < c->nretired; i++) partmap_free(c->retired[i]);
    free(c->retired);
    partmap_free(c->next_map);
    free(c->admin_token);
}

/* ---- status and the admin command --------------------------------------------------------------------- */

void clmember_status(cluster *c, bv_buf *out) {
    pthread_mutex_lock(&c->member_mu);
    mstate *s = c->mlatest;
    char *rec = s ? mstate_json(s) : NULL;
    char **ids = NULL;
    size_t nids = 0;
    if (s) {
        ids = strv_copy(s->nodes, s->nnodes, s->nnext + 1);
        nids = s->nnodes;
        for (size_t i = 0; i < s->nnext; i++)
            if (!strv_has(ids, nids, s->next[i]) && !(ids[nids++] = strdup(s->next[i]))) abort();
    }
    bv_buf_printf(out, ",\"epoch\":%" PRIu64 ",\"members\":%s", c->epoch, rec ? rec : "null");
    bv_buf_puts(out, ",\"build_error\":");
    if (c->build_error[0]) bv_buf_json_str(out, c->build_error, strlen(c->build_error));
    else bv_buf_puts(out, "null");
    pthread_mutex_unlock(&c->member_mu);
    free(rec);
    if (!ids) {
        ids = strv_copy(NULL, 0, 1);
    }
    if (!strv_has(ids, nids, c->cfg->cluster_node_id) && !(ids[nids++] = strdup(c->cfg->cluster_node_id))) abort();
    bv_buf_puts(out, ",\"addresses\":{");
    for (size_t i = 0; i < nids; i++) {        /* one JetStream request each: operators only */
        json_t *a = peer_addr(c, ids[i]);
        bv_buf_printf(out, "%s", i ? "," : "");
        bv_buf_json_str(out, ids[i], strlen(ids[i]));
        bv_buf_putc(out, ':');
        char *t = a ? json_dumps(a, JSON_COMPACT) : NULL;
        bv_buf_puts(out, t ? t : "null");
        free(t);
        json_decref(a);
    }
    bv_buf_putc(out, '}');
    strv_free(ids, nids);
    pthread_mutex_lock(&c->apply_mu);
    bv_buf_puts(out, ",\"building\":[");
    bool first = true;
    for (unsigned p = 0; p < c->nparts; p++) {
        if (c->subs[p].built || !(c->subs[p].applying || c->target[p] == CLUSTER_TARGET_BUILDING)) continue;
        bv_buf_printf(out, "%s%u", first ? "" : ",", p);
        first = false;
    }
    bv_buf_puts(out, "],\"applying\":[");
    first = true;
    for (unsigned p = 0; p < c->nparts; p++) {
        if (!c->subs[p].applying) continue;
        bv_buf_printf(out, "%s%u", first ? "" : ",", p);
        first = false;
    }
    bv_buf_putc(out, ']');
    pthread_mutex_unlock(&c->apply_mu);
}

void cluster_progress(cluster *c, bv_buf *out) {
    pthread_mutex_lock(&c->member_mu);
    bv_buf_puts(out, ",\"progress\":{\"cluster\":");
    if (c->build_error[0]) bv_buf_json_str(out, c->build_error, strlen(c->build_error));
    else bv_buf_puts(out, "\"catching up with the stream\"");
    bv_buf_putc(out, '}');
    pthread_mutex_unlock(&c->member_mu);
}

static int req_error(bv_buf *out, int status, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int req_error(bv_buf *out, int status, const char *code, const char *fmt, ...) {
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cl_error(out, status, code, msg);
}

#define MEMBERS_USAGE "the body must be one of {\"add\":\"<node id>\"}, {\"remove\":\"<node id>\"}, {\"cancel\":true}"

int clmember_request(cluster *c, const char *body, size_t len, bv_buf *out) {
    json_error_t jerr;
    json_t *j = json_loadb(body, len, 0, &jerr);
    if (!j || !json_is_object(j) || json_object_size(j) != 1) {
        json_decref(j);
        return req_error(out, 400, "bad_request", "%s", MEMBERS_USAGE);
    }
    json_t *add = json_object_get(j, "add"), *rem = json_object_get(j, "remove"), *cancel = json_object_get(j, "cancel");
    const char *id = json_string_value(add ? add : rem);
    int st;
    if (!add && !rem && !json_is_true(cancel)) {
        st = req_error(out, 400, "bad_request", "%s", MEMBERS_USAGE);
        goto out;
    }
    if ((add || rem) && !id_ok(id)) {
        st = req_error(out, 400, "invalid_node_id", "node ids are 1 to %d letters, digits, '-' and '_'",
                       CONFIG_CLUSTER_ID_MAX - 1);
        goto out;
    }
    char err[600];
    mstate *s = NULL;
    if (members_last(c, &s, err, sizeof err) != 0 || !s) {
        st = req_error(out, 503, "cluster_unavailable", "%s", s ? err : "no membership record");
        goto out;
    }
    uint64_t expect = s->seq;
    if (json_is_true(cancel)) {
        if (!s->nnext) {
            st = req_error(out, 409, "nothing_pending", "no membership change is in progress (epoch %" PRIu64 ")", s->epoch);
            goto free_s;
        }
        strv_free(s->next, s->nnext);
        strv_free(s->ready, s->nready);
        s->next = s->ready = NULL;
        s->nnext = s->nready = 0;
    } else {
        if (s->nnext) {
            st = req_error(out, 409, "change_in_progress",
                           "a membership change is in progress (epoch %" PRIu64 " -> %" PRIu64 ", %zu of its gaining nodes "
                           "ready); wait for it or send {\"cancel\":true}",
                           s->epoch, s->epoch + 1, s->nready);
            goto free_s;
        }
        bool member = strv_has(s->nodes, s->nnodes, id);
        if (add && member) {
            st = req_error(out, 409, "already_member", "%s is already a member (epoch %" PRIu64 ")", id, s->epoch);
            goto free_s;
        }
        if (rem && !member) {
            st = req_error(out, 404, "not_a_member", "%s is not a member (epoch %" PRIu64 ")", id, s->epoch);
            goto free_s;
        }
        if (add && s->nnodes + 1 > PARTMAP_MAX_NODES) {
            st = req_error(out, 409, "too_many_nodes", "a cluster has at most %d nodes", PARTMAP_MAX_NODES);
            goto free_s;
        }
        if (rem && s->nnodes - 1 < c->cfg->cluster_replicas) {
            st = req_error(out, 409, "too_few_nodes", "removing %s leaves %zu nodes, fewer than cluster.replicas %u", id,
                           s->nnodes - 1, c->cfg->cluster_replicas);
            goto free_s;
        }
        s->next = calloc(s->nnodes + 1, sizeof *s->next);
        if (!s->next) abort();
        s->nnext = 0;
        for (size_t i = 0; i < s->nnodes; i++)
            if (!rem || strcmp(s->nodes[i], id) != 0) s->next[s->nnext++] = strdup(s->nodes[i]);
        if (add && !(s->next[s->nnext++] = strdup(id))) abort();
        strv_free(s->ready, s->nready);
        s->ready = NULL;
        s->nready = 0;
        partmap *cur = map_of(c, s->nodes, s->nnodes), *next = map_of(c, s->next, s->nnext);
        bool any = false;
        for (size_t i = 0; cur && next && i < s->nnext; i++) any |= gains(cur, next, s->next[i]);
        partmap_free(cur);
        partmap_free(next);
        if (!any) {                   /* nobody builds anything: the switch is this record */
            strv_free(s->nodes, s->nnodes);
            s->nodes = s->next;
            s->nnodes = s->nnext;
            s->next = NULL;
            s->nnext = 0;
            s->epoch++;
        }
    }
    int rc = members_cas(c, s, expect, err, sizeof err);
    if (rc == 1) {
        st = req_error(out, 409, "membership_conflict", "the member list changed meanwhile; read GET /cluster and retry");
    } else if (rc < 0) {
        st = req_error(out, 503, "cluster_unavailable", "%s", err);
    } else {
        char *t = mstate_json(s);
        out->len = 0;
        bv_buf_puts(out, t ? t : "{}");
        free(t);
        cl_bump(&c->member_changes);
        bv_log_msg(c->log, LOG_INFO, "cluster.members_requested", "%.*s", (int)(len < 200 ? len : 200), body);
        st = 200;
    }
free_s:
    mstate_free(s);
out:
    json_decref(j);
    return st;
}

int cluster_admin(cluster *c, const char *method, const char *sub, const char *query, const char *body, size_t len,
                  bv_buf *out, const char **ctype) {
    *ctype = "application/json";
    if (strcmp(sub, "members") == 0) {
        if (strcmp(method, "POST") != 0) return req_error(out, 405, "method_not_allowed", "POST /cluster/members");
        return clmember_request(c, body, len, out);
    }
    if (strcmp(sub, "snapshot") == 0) {
        if (strcmp(method, "GET") != 0) return req_error(out, 405, "method_not_allowed", "GET /cluster/snapshot?parts=");
        return clsnap_serve(c, query, out, ctype);
    }
    return req_error(out, 404, "not_found", "admin /cluster/%.64s: no such route", sub);
}
