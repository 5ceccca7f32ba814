/*
 * clapply.c - consuming: the registry subject and this node's partitions, applied through
 * the engine in stream order; catching up at start (cluster.h tells the design).
 */
#include "cluster_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"

/* A JetStream message's stream sequence (0 if it has none). */
static uint64_t msg_stream_seq(natsMsg *m) {
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, m) != NATS_OK || !meta) return 0;
    uint64_t s = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
    return s;
}

/* engine_log_backend.keep_part: apply only the message's own partition (apply_mu held). */
bool clapply_keep_part(void *ctx, const char *table, const char *key, size_t klen) {
    cluster *c = ctx;
    return partmap_partition(c->map, table, key, klen) == c->cur_part;
}

/* ---- consuming ------------------------------------------------------------------------------ */

/* Every owned partition and the registry reached what the stream held at start (apply_mu). */
void clapply_check_caught_up(cluster *c) {
    if (c->caught_up) return;
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->applied[c->subs[i].p] < c->target[c->subs[i].p]) return;
    pthread_mutex_lock(&c->reg_mu);
    bool reg_ok = c->reg_applied >= c->reg_target;
    pthread_mutex_unlock(&c->reg_mu);
    if (!reg_ok) return;
    c->caught_up = true;
    clread_subscribe(c);
    bv_log_msg(c->log, LOG_INFO, "cluster.caught_up", "every owned partition (%zu) and the registry caught up",
               c->nsubs);
    if (c->ready) atomic_store(c->ready, true);
}

static void apply_error(cluster *c, const char *what, uint64_t seq, const char *reason) {
    cl_bump(&c->apply_errors);
    if (c->apply_errors_logged++ < CLUSTER_APPLY_ERRORS_LOGGED)
        bv_log_msg(c->log, LOG_ERROR, "cluster.apply_error", "%s at stream sequence %" PRIu64 ": %s", what, seq, reason);
}

/* ---- a reset, in log order ------------------------------------------------------------------
 *
 * A reset is registry record R plus a marker on every partition subject (Beava-Reset: R,
 * published after R). On a partition, the reset's place is its first message that is the
 * marker or was validated against a registry at or past R (Beava-Reg >= R: published
 * after its node applied the reset): every owner of the partition applies what comes
 * before that message before the reset and the rest after it, since they all read the
 * partition in the same order. The registry's consumer applies R once every partition
 * this node owns is held at that place (part_sub.held >= R); the partitions go on once
 * it is applied. If the markers do not come (the resetting node died after storing R),
 * the consumer publishes this node's own after publish_timeout_ms; the message ids make
 * every node's copies one. */

static bool reset_reached(cluster *c, uint64_t reset) {
    for (size_t i = 0; i < c->nsubs; i++)      /* the partitions this node applies now */
        if (c->subs[i].applying && c->subs[i].held < reset) return false;
    return true;
}

/* reg_mu held (released while waiting). */
static void reset_boundary(cluster *c, uint64_t reset) {
    for (;;) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        uint64_t ns = (uint64_t)dl.tv_nsec + (uint64_t)c->cfg->cluster_publish_timeout_ms * 1000000ull;
        dl.tv_sec += (time_t)(ns / 1000000000ull);
        dl.tv_nsec = (long)(ns % 1000000000ull);
        int rc = 0;
        while (!reset_reached(c, reset) && !c->stopping && rc == 0)
            rc = pthread_cond_timedwait(&c->reg_cv, &c->reg_mu, &dl);
        if (reset_reached(c, reset) || c->stopping) return;
        pthread_mutex_unlock(&c->reg_mu);          /* no marker yet: publish ours */
        size_t failed = clpub_reset_markers(c, reset, true);
        bv_log_msg(c->log, LOG_WARN, "cluster.reset_markers", "reset at %" PRIu64 ": published this node's markers "
                   "(%zu not acknowledged)", reset, failed);
        pthread_mutex_lock(&c->reg_mu);
    }
}

void clapply_reg_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
    (void)nc, (void)sub;
    cluster *c = closure;
    uint64_t seq = msg_stream_seq(m);
    const char *origin = NULL;
    natsMsgHeader_Get(m, "Beava-Origin", &origin);
    int kind = (int)cl_header_u64(m, "Beava-Kind");
    pthread_mutex_lock(&c->reg_mu);
    if (origin && strcmp(origin, c->origin) == 0)     /* ours: wait for clpub_reg_append to settle */
        while (c->own_pending && !c->stopping) pthread_cond_wait(&c->reg_cv, &c->reg_mu);
    pthread_mutex_unlock(&c->reg_mu);
    /* its base: the registry record before it when it was published (clpub_reg_append) */
    const char *basev = NULL;
    bool has_base = natsMsgHeader_Get(m, "Nats-Expected-Last-Subject-Sequence", &basev) == NATS_OK && basev;
    uint64_t base = has_base ? strtoull(basev, NULL, 10) : 0;
    if (kind == REC_RESET) {              /* every owned partition at the reset's place first */
        pthread_mutex_lock(&c->reg_mu);
        if (!c->stopping && seq > c->reg_applied && !(has_base && base != c->reg_applied)) reset_boundary(c, seq);
        pthread_mutex_unlock(&c->reg_mu);
    }
    pthread_mutex_lock(&c->apply_mu);
    pthread_mutex_lock(&c->reg_mu);
    bool skip = c->stopping || seq <= c->reg_applied;
    bool void_rec = has_base && base != c->reg_applied;   /* stored on a stale base: nobody applies it */
    pthread_mutex_unlock(&c->reg_mu);
    if (!skip) {
        char reason[512];
        if (void_rec)
            cl_bump(&c->reg_void);
        else if (engine_replay(c->eng, kind, seq, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), reason,
                               sizeof reason) != 0)
            apply_error(c, "registry record", seq, reason);
        pthread_mutex_lock(&c->reg_mu);
        c->reg_applied = seq;
        pthread_cond_broadcast(&c->reg_cv);     /* partitions held for this record go on */
        pthread_mutex_unlock(&c->reg_mu);
        c->applied_since_snap++;
    }
    clapply_check_caught_up(c);
    pthread_mutex_unlock(&c->apply_mu);
    natsMsg_Destroy(m);
}

void clapply_part_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
    (void)nc, (void)sub;
    part_sub *ps = closure;
    cluster *c = ps->c;
    uint64_t seq = msg_stream_seq(m);
    uint64_t reset = cl_header_u64(m, "Beava-Reset");
    /* validated against registry record `need`: apply only once it is applied here; a
     * reset marker waits for its reset (both while held: the registry's consumer sees it) */
    uint64_t need = reset ? reset : cl_header_u64(m, "Beava-Reg");
    pthread_mutex_lock(&c->reg_mu);
    while (!c->stopping && c->reg_applied < need) {
        ps->held = need;
        pthread_cond_broadcast(&c->reg_cv);   /* a reset waiting for this partition sees it */
        pthread_cond_wait(&c->reg_cv, &c->reg_mu);
    }
    ps->held = 0;
    pthread_mutex_unlock(&c->reg_mu);
    pthread_mutex_lock(&c->apply_mu);
    if (reset) {                          /* a marker: nothing to apply */
        if (!c->stopping && seq > c->applied[ps->p]) {
            c->applied[ps->p] = seq;
            c->applied_since_snap++;
            pthread_cond_broadcast(&c->apply_cv);
        }
    } else if (!c->stopping && seq > c->applied[ps->p]) {
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
        size_t bad = engine_apply_logged(c->eng, c->recs, n, seq, ps->p, reason, sizeof reason);
        if (bad) apply_error(c, "event record", seq, reason);
        c->applied[ps->p] = seq;
        c->applied_since_snap++;
        cl_bump(&c->applied_msgs);
        pthread_cond_broadcast(&c->apply_cv);
    }
    clapply_check_caught_up(c);
    pthread_mutex_unlock(&c->apply_mu);
    natsMsg_Destroy(m);
}

/* The stream's last sequence on a subject now (0: none). */
void cl_read_deadline(const cluster *c, struct timespec *dl) {
    clock_gettime(CLOCK_REALTIME, dl);
    uint64_t ns = (uint64_t)dl->tv_nsec + (uint64_t)c->cfg->cluster_read_wait_ms * 1000000ull;
    dl->tv_sec += (time_t)(ns / 1000000000ull);
    dl->tv_nsec = (long)(ns % 1000000000ull);
}

uint64_t cl_last_seq(cluster *c, const char *subj) {
    return cl_last_seq_within(c, subj, 0);
}

uint64_t cl_last_seq_within(cluster *c, const char *subj, unsigned wait_ms) {
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    uint64_t s = 0;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = wait_ms;                     /* 0: the context's (publish_timeout_ms) */
    if (js_GetLastMsg(&m, c->js, c->stream, subj, wait_ms ? &o : NULL, &jerr) == NATS_OK) s = natsMsg_GetSequence(m);
    natsMsg_Destroy(m);
    return s;
}

int clapply_subscribe_from(cluster *c, const char *subj, uint64_t after, natsMsgHandler cb, void *closure,
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
    if (s != NATS_OK) return cl_fail(err, errlen, "cluster: subscribe %s: %s", subj, cl_nats_why(s, jerr, why, sizeof why));
    return 0;
}

/* engine_log_backend.registry_catch_up: wait until the registry applied here reached the
 * registry subject's last sequence now; the request and the wait together are bounded by
 * read_wait_ms (a get naming an unknown table waits here on its I/O thread). */
void clapply_reg_catch_up(void *ctx) {
    cluster *c = ctx;
    if (c->cfg->cluster_read_wait_ms == 0) return;
    char subj[CLUSTER_SUBJECT_MAX];
    cl_reg_subject(c, subj, sizeof subj);
    struct timespec dl;
    cl_read_deadline(c, &dl);
    uint64_t target = cl_last_seq_within(c, subj, c->cfg->cluster_read_wait_ms);
    pthread_mutex_lock(&c->reg_mu);
    int rc = 0;
    while (c->reg_applied < target && !c->stopping && rc == 0) rc = pthread_cond_timedwait(&c->reg_cv, &c->reg_mu, &dl);
    pthread_mutex_unlock(&c->reg_mu);
}

/* ---- registry catch-ups off the I/O threads ------------------------------------------------
 *
 * A push naming an event this node does not know may have been registered on another node a
 * moment ago: before answering 404 the node catches up with the registry subject (a
 * JetStream request, then a wait bounded by read_wait_ms). The I/O thread does not wait for
 * that: the batch is queued here and resumed (engine_push_resume) once caught up. One
 * catch-up serves every batch queued before it started, so a client pushing unknown events
 * in a loop costs one JetStream request per round, not one per push, and never holds up
 * another connection. */

typedef struct cu_job {
    engine_batch *b;
    struct cu_job *next;
} cu_job;

void clapply_reg_catch_up_push(void *ctx, engine_batch *b) {
    cluster *c = ctx;
    cu_job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->b = b;
    pthread_mutex_lock(&c->cu_mu);
    if (c->cu_tail) c->cu_tail->next = j;
    else c->cu_head = j;
    c->cu_tail = j;
    pthread_cond_signal(&c->cu_cv);
    pthread_mutex_unlock(&c->cu_mu);
}

static void *cu_main(void *arg) {
    cluster *c = arg;
    pthread_mutex_lock(&c->cu_mu);
    for (;;) {
        while (!c->cu_head && !c->cu_stop) pthread_cond_wait(&c->cu_cv, &c->cu_mu);
        cu_job *j = c->cu_head;
        if (!j) break;                       /* stopping, drained */
        c->cu_head = c->cu_tail = NULL;
        pthread_mutex_unlock(&c->cu_mu);
        clapply_reg_catch_up(c);             /* one for all of them */
        cl_bump(&c->catch_ups);
        while (j) {
            cu_job *next = j->next;
            cl_bump(&c->catch_up_batches);
            engine_push_resume(c->eng, j->b);
            free(j);
            j = next;
        }
        pthread_mutex_lock(&c->cu_mu);
    }
    pthread_mutex_unlock(&c->cu_mu);
    return NULL;
}

int clapply_catch_up_start(cluster *c, char *err, size_t errlen) {
    pthread_mutex_init(&c->cu_mu, NULL);
    pthread_cond_init(&c->cu_cv, NULL);
    if (pthread_create(&c->cu_thread, NULL, cu_main, c) != 0) {
        pthread_cond_destroy(&c->cu_cv);
        pthread_mutex_destroy(&c->cu_mu);
        return cl_fail(err, errlen, "cluster: cannot start the registry catch-up thread");
    }
    c->cu_started = true;
    return 0;
}

void clapply_catch_up_stop(cluster *c) {
    if (!c->cu_started) return;
    pthread_mutex_lock(&c->cu_mu);
    c->cu_stop = true;
    pthread_cond_broadcast(&c->cu_cv);
    pthread_mutex_unlock(&c->cu_mu);
    pthread_join(c->cu_thread, NULL);
    pthread_cond_destroy(&c->cu_cv);
    pthread_mutex_destroy(&c->cu_mu);
    c->cu_started = false;
}
