/*
 * clpub.c - publishing: push batches grouped by partition and published at once, and the
 * registry's records with an expected last sequence (cluster.h tells the design).
 */
#include "cluster_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"

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
        cl_part_subject(c, pm->p, subj, sizeof subj);
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
                if (a == 1) cl_bump(&c->published_msgs);
                else cl_bump(&c->publish_failures);
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
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int t = 0; t < CLUSTER_PUBLISH_TRIES && outstanding > 0; t++) {
        sc->round++;
        if (t > 0) atomic_fetch_add_explicit(&c->publish_retries, outstanding, memory_order_relaxed);
        send_round(c, sc, reg_seq);
        outstanding = collect_round(c, sc, outstanding, why, sizeof why);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (sc->nmsgs) {                      /* batch publish latency: first send to last ack */
        uint64_t us = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
        atomic_fetch_add_explicit(&c->publish_us_sum, us, memory_order_relaxed);
        cl_bump(&c->publish_batches);
    }
    for (size_t k = 0; k < sc->nmsgs; k++) {
        pub_msg *m = &sc->msgs[k];
        if (!m->done) cl_bump(&c->publish_failures);
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
            cl_bump(&c->pushes_failed);
        } else {
            res->status = 200;
            res->ack_lsn = sc->item_seq[i];
            res->registry_version = version;
            cl_bump(&c->pushes_acked);
        }
    }
    job->b->done(job->b);
}

/* A publisher's inbox subscription and partition index (before its thread starts). */
static int pub_scratch_init(cluster *c, pub_scratch *sc, char *err, size_t errlen) {
    sc->c = c;
    sc->open = malloc(c->nparts * sizeof *sc->open);
    if (!sc->open) return cl_fail(err, errlen, "out of memory");
    for (unsigned p = 0; p < c->nparts; p++) sc->open[p] = -1;
    char wild[CLUSTER_SUBJECT_MAX], why[512];
    natsStatus s = natsInbox_Create(&sc->inbox);
    if (s == NATS_OK) {
        snprintf(wild, sizeof wild, "%s.>", sc->inbox);
        s = natsConnection_SubscribeSync(&sc->acks, c->nc, wild);
    }
    if (s != NATS_OK) return cl_fail(err, errlen, "cluster: publisher inbox: %s", cl_nats_why(s, 0, why, sizeof why));
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
void clpub_publish(void *ctx, engine_batch *b, const engine_log_record *recs, size_t n) {
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


int clpub_start(cluster *c, char *err, size_t errlen) {
    if (clapply_catch_up_start(c, err, errlen) != 0) return -1;
    c->pubs = calloc(CLUSTER_PUBLISHERS, sizeof *c->pubs);
    if (!c->pubs) return cl_fail(err, errlen, "out of memory");
    for (int i = 0; i < CLUSTER_PUBLISHERS; i++) {
        if (pub_scratch_init(c, &c->pubs[i], err, errlen) != 0) return -1;
        if (pthread_create(&c->pubs[i].thread, NULL, pub_main, &c->pubs[i]) != 0)
            return cl_fail(err, errlen, "cluster: cannot start a publisher");
        c->npubs++;
    }
    return 0;
}

void clpub_stop(cluster *c) {
    clapply_catch_up_stop(c);        /* its batches go to the publishers: first */
    pthread_mutex_lock(&c->q_mu);
    c->q_stop = true;
    pthread_cond_broadcast(&c->q_cv);
    pthread_mutex_unlock(&c->q_mu);
    for (int i = 0; i < c->npubs; i++) pthread_join(c->pubs[i].thread, NULL);
    c->npubs = 0;
}

void clpub_free(cluster *c) {
    for (int i = 0; c->pubs && i < CLUSTER_PUBLISHERS; i++) pub_scratch_free(&c->pubs[i]);
    free(c->pubs);
    c->pubs = NULL;
}

/* ---- the registry through the log ---------------------------------------------------------- */

/* The first registry record stored after sequence `base`: its stream sequence, 0 when
 * there is none, UINT64_MAX when the stream could not say. One request to the stream's
 * leader (STREAM.MSG.GET with next_by_subj; not a direct get, which a lagging replica may
 * answer). */
static uint64_t reg_next_after(cluster *c, uint64_t base) {
    char api[CLUSTER_SUBJECT_MAX + 32], subj[CLUSTER_SUBJECT_MAX], body[CLUSTER_SUBJECT_MAX + 64];
    snprintf(api, sizeof api, "$JS.API.STREAM.MSG.GET.%s", c->stream);
    cl_reg_subject(c, subj, sizeof subj);
    int n = snprintf(body, sizeof body, "{\"seq\":%" PRIu64 ",\"next_by_subj\":\"%s\"}", base + 1, subj);
    natsMsg *r = NULL;
    uint64_t seq = UINT64_MAX;
    if (natsConnection_Request(&r, c->nc, api, body, n, c->cfg->cluster_publish_timeout_ms) == NATS_OK) {
        json_error_t jerr;
        json_t *j = json_loadb(natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r), 0, &jerr);
        json_t *s = j ? json_object_get(json_object_get(j, "message"), "seq") : NULL;
        json_t *e = j ? json_object_get(j, "error") : NULL;
        if (json_is_integer(s)) seq = (uint64_t)json_integer_value(s);
        else if (json_is_object(e) && json_integer_value(json_object_get(e, "code")) == 404) seq = 0;
        json_decref(j);
    }
    natsMsg_Destroy(r);
    return seq;
}

/* Publish one registry-subject record of `kind` on `base` (the registry record this node
 * applied last) and wait for JetStream's answer: *seq is where it was stored. The
 * expected-last-subject-sequence header is set by hand: the client library omits an
 * expected sequence of 0, and the very first register must be checked too. */
static natsStatus reg_publish(cluster *c, int kind, uint64_t base, const void *payload, size_t len, uint64_t *seq,
                              jsErrCode *jerr) {
    char subj[CLUSTER_SUBJECT_MAX], msgid[CLUSTER_ID_MAX], basev[32], kindv[16];
    cl_reg_subject(c, subj, sizeof subj);
    snprintf(msgid, sizeof msgid, "%s-r%" PRIu64, c->origin, atomic_fetch_add(&c->msg_counter, 1));
    snprintf(basev, sizeof basev, "%" PRIu64, base);
    snprintf(kindv, sizeof kindv, "%d", kind);
    natsMsg *m = NULL;
    *jerr = 0;
    natsStatus s = natsMsg_Create(&m, subj, NULL, payload, (int)len);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", basev);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Beava-Kind", kindv);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Beava-Origin", c->origin);
    if (s == NATS_OK) s = cl_js_publish(c, m, msgid, seq, jerr);
    natsMsg_Destroy(m);
    return s;
}

/* engine_wal_ops.append for register and reset (the engine's barrier is held).
 *
 * A registry record carries the sequence of the registry record before it as this node
 * saw it (Nats-Expected-Last-Subject-Sequence). On one NATS server JetStream refuses a
 * record whose base is stale; on a clustered stream (R>1) nats-server 2.9 does not
 * serialise that check (nats-server issue 4320) and two records on the same base can
 * both be stored. So the check is ours too: a record whose base is not the registry
 * record just before it on the subject is void; every node skips it (clapply_reg_cb), and
 * the node that published it learns it here, from the first record after its base. */
int clpub_reg_append(void *ctx, int kind, const void *payload, size_t len, uint64_t *lsn, char *reason, size_t rlen) {
    cluster *c = ctx;
    if (kind == REC_EVENT) {          /* never: events go through clpub_publish */
        snprintf(reason, rlen, "cluster mode logs events through the partitions");
        return -1;
    }
    pthread_mutex_lock(&c->reg_mu);
    uint64_t base = c->reg_applied;
    c->own_pending = true;
    pthread_mutex_unlock(&c->reg_mu);
    uint64_t seq = 0;
    jsErrCode jerr = 0;
    int rc = -1;
    char why[512] = "cannot build the message";
    natsStatus s = reg_publish(c, kind, base, payload, len, &seq, &jerr);
    if (s == NATS_OK) rc = 0;
    else cl_nats_why(s, jerr, why, sizeof why);
    if (rc == 0) {                    /* stored: is it the record right after its base? */
        uint64_t first = reg_next_after(c, base);
        if (first != seq) {
            rc = -1;
            if (first != UINT64_MAX && first < seq) jerr = JSStreamWrongLastSequenceErr;   /* void */
            else snprintf(why, sizeof why, "stored at %" PRIu64 " but its place could not be checked", seq);
        }
    }
    pthread_mutex_lock(&c->reg_mu);
    c->own_pending = false;
    if (rc == 0 && seq > c->reg_applied) c->reg_applied = seq;
    pthread_cond_broadcast(&c->reg_cv);
    pthread_mutex_unlock(&c->reg_mu);
    if (rc == 0) {
        *lsn = seq;
        cl_bump(&c->reg_published);
        return 0;
    }
    if (jerr == JSStreamWrongLastSequenceErr) {
        cl_bump(&c->reg_conflicts);
        snprintf(reason, rlen,
                 "the registry changed on another node (this node had applied registry record %" PRIu64 "); retry",
                 base);
        return ENGINE_LOG_CONFLICT;
    }
    snprintf(reason, rlen, "the cluster's log did not acknowledge the registry record: %s", why);
    return -1;
}

int clpub_reg_wait(void *ctx, uint64_t lsn, char *reason, size_t rlen) {
    (void)ctx, (void)lsn, (void)reason, (void)rlen;
    return 0;                         /* clpub_reg_append returns once JetStream stored it */
}

/* ---- a reset, ordered with the events (clapply.c tells how it is applied) ------------------ */

size_t clpub_reset_markers(cluster *c, uint64_t reset, bool owned_only) {
    size_t failed = 0;
    char subj[CLUSTER_SUBJECT_MAX], msgid[CLUSTER_ID_MAX], rv[32], why[512];
    snprintf(rv, sizeof rv, "%" PRIu64, reset);
    for (unsigned p = 0; p < c->nparts; p++) {
        if (owned_only && !c->subs[p].applying) continue;
        cl_part_subject(c, p, subj, sizeof subj);
        snprintf(msgid, sizeof msgid, "%s-reset-%" PRIu64 "-%u", c->stream, reset, p);
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        natsStatus s = natsMsg_Create(&m, subj, NULL, NULL, 0);
        if (s == NATS_OK) s = natsMsgHeader_Set(m, "Beava-Reset", rv);
        if (s == NATS_OK) s = cl_js_publish(c, m, msgid, NULL, &jerr);
        natsMsg_Destroy(m);
        if (s != NATS_OK) {
            failed++;
            bv_log_msg(c->log, LOG_WARN, "cluster.reset_marker_failed", "partition %u: %s", p,
                       cl_nats_why(s, jerr, why, sizeof why));
        }
    }
    return failed;
}

/* Publish a reset record on the registry subject, after the registry record this node
 * applied last. 1 = stored and in place (*seq), 0 = refused or void on a stale base
 * (catch up and try again), -1 = the log did not answer (why). */
static int reset_publish(cluster *c, uint64_t *seq, char *why, size_t wl) {
    pthread_mutex_lock(&c->reg_mu);
    uint64_t base = c->reg_applied;
    pthread_mutex_unlock(&c->reg_mu);
    jsErrCode jerr = 0;
    natsStatus s = reg_publish(c, REC_RESET, base, NULL, 0, seq, &jerr);
    if (s != NATS_OK) {
        if (jerr == JSStreamWrongLastSequenceErr) return 0;
        cl_nats_why(s, jerr, why, wl);
        return -1;
    }
    uint64_t first = reg_next_after(c, base);
    if (first == *seq) return 1;
    if (first != UINT64_MAX && first < *seq) return 0;          /* void: every node skips it */
    /* stored, its place unknown: every node decides from the log, so wait for ours */
    return 1;
}

/* engine_log_backend.reset: the record, the markers, then wait until this node's registry
 * consumer applied it in its place. */
int clpub_reset(void *ctx, bv_buf *out) {
    cluster *c = ctx;
    char why[512] = "", subj[CLUSTER_SUBJECT_MAX];
    uint64_t seq = 0;
    int rc = 0;
    cl_reg_subject(c, subj, sizeof subj);
    for (int t = 0; t < CLUSTER_RESET_TRIES && rc == 0; t++) {
        rc = reset_publish(c, &seq, why, sizeof why);
        if (rc == 0) {                            /* another record came first: catch up, again */
            cl_bump(&c->reg_conflicts);
            clapply_reg_catch_up(c);
        }
    }
    if (rc != 1) {
        if (rc == 0) snprintf(why, sizeof why, "other registry records kept coming first (%d tries)", CLUSTER_RESET_TRIES);
        char msg[700];
        snprintf(msg, sizeof msg, "the cluster's log did not store the reset; nothing was reset: %s", why);
        return cl_read_error(out, "cluster_unavailable", msg);
    }
    cl_bump(&c->reg_published);
    clpub_reset_markers(c, seq, false);           /* a failed one: the owners publish their own */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += (time_t)((c->cfg->cluster_publish_timeout_ms * 2ull + c->cfg->cluster_read_wait_ms) / 1000 + 1);
    pthread_mutex_lock(&c->reg_mu);
    int wrc = 0;
    while (c->reg_applied < seq && !c->stopping && wrc == 0) wrc = pthread_cond_timedwait(&c->reg_cv, &c->reg_mu, &dl);
    bool applied = c->reg_applied >= seq;
    pthread_mutex_unlock(&c->reg_mu);
    if (!applied)
        return cl_read_error(out, "not_caught_up",
                             "the reset is in the cluster's log but this node has not applied it yet; every owner "
                             "applies it in its place");
    bv_buf_printf(out, "{\"registry_version\":%" PRIu64 ",\"reset\":true}", engine_registry_version(c->eng));
    return 200;
}
