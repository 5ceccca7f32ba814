/*
 * clread.c - reads from any node: a get or batch_get entry of an owned partition waits
 * (bounded) until this node applied the stream as it was at the read; any other goes to
 * the partition's owners over NATS request/reply (cluster.h tells the design).
 */
#include "cluster_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

/* ---- reads from any node -------------------------------------------------------------------- */

static void rpc_subject(const cluster *c, unsigned p, char *out, size_t n) {
    snprintf(out, n, "beava-rpc.%s.get.%u", c->cfg->cluster_name, p);   /* outside the stream's subjects */
}

int cl_error(bv_buf *out, int status, const char *code, const char *reason) {
    jsonw_member m = { .key = "reason", .str = reason };
    out->len = 0;
    jsonw_error(out, code, &m, 1, false, 0);
    return status;
}


/* An owned partition: wait (bounded) until it applied what the stream held when the read
 * arrived, so a read after any node's ack sees the push. -1 = read locally now. */
static int catch_up(cluster *c, unsigned p, bv_buf *out) {
    if (c->cfg->cluster_read_wait_ms == 0) return -1;
    char subj[CLUSTER_SUBJECT_MAX];
    cl_part_subject(c, p, subj, sizeof subj);
    struct timespec dl;                   /* the request and the wait: read_wait_ms in all */
    cl_read_deadline(c, &dl);
    uint64_t target = cl_last_seq_within(c, subj, c->cfg->cluster_read_wait_ms);
    pthread_mutex_lock(&c->apply_mu);
    int rc = 0;
    while (c->applied[p] < target && !c->stopping && rc == 0) rc = pthread_cond_timedwait(&c->apply_cv, &c->apply_mu, &dl);
    bool ok = c->applied[p] >= target;
    pthread_mutex_unlock(&c->apply_mu);
    if (ok) return -1;
    cl_bump(&c->reads_not_caught_up);
    return cl_read_error(out, "not_caught_up", "this partition's owner has not applied the stream up to the read yet; retry");
}

/* A partition owned elsewhere: ask its owners (a queue group: NATS picks a live one). */
static int forward_get(cluster *c, unsigned p, engine_transport t, const json_t *req, bv_buf *out) {
    char subj[CLUSTER_SUBJECT_MAX], tv[8], why[512];
    rpc_subject(c, p, subj, sizeof subj);
    char *body = json_dumps(req, JSON_COMPACT);
    if (!body) return cl_read_error(out, "internal_error", "cannot encode the request");
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
        st = (int)cl_header_u64(reply, "Beava-Status");
        out->len = 0;
        bv_buf_put(out, natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply));
        cl_bump(&c->reads_forwarded);
        if (st < 100) st = cl_read_error(out, "owner_unavailable", "the owner's answer had no status");
    } else {
        cl_bump(&c->reads_no_owner);
        char msg[700];
        snprintf(msg, sizeof msg, "no owner of partition %u answered: %s", p, cl_nats_why(s, 0, why, sizeof why));
        st = cl_read_error(out, "owner_unavailable", msg);
    }
    natsMsg_Destroy(reply);
    return st;
}

/* engine_log_backend.get (the shape was checked: table and key are strings). */
int clread_get(void *ctx, engine_transport t, const json_t *req, bv_buf *out) {
    cluster *c = ctx;
    const char *table = json_string_value(json_object_get(req, "table"));
    json_t *key = json_object_get(req, "key");
    if (!table || !json_is_string(key) || json_string_length(key) > STORE_MAX_KEY) return -1;
    char kbuf[STORE_MAX_KEY + 1];
    size_t kl = json_string_length(key);
    const char *ks = json_string_value(key);
    for (size_t i = 0; i < kl; i++) kbuf[i] = ks[i] == '|' ? STORE_KEY_SEP : ks[i];   /* the internal key */
    unsigned p = partmap_partition(c->map, table, kbuf, kl);
    if (partmap_owns_self(c->map, p)) {
        cl_bump(&c->reads_local);
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
    cl_read_error(&b, code, reason);
    return bv_buf_steal(&b);
}

/* engine_log_backend.batch_get. */
void clread_batch_get(void *ctx, const json_t *reqs, char **fwd) {
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
        if (partmap_owns_self(c->map, p)) {
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
                cl_bump(&c->reads_forwarded);
                const char *d = natsMsg_GetData(r);
                size_t dl = (size_t)natsMsg_GetDataLength(r);
                long k = cl_header_u64(r, "Beava-Status") == 200 ? split_results(d, dl, starts, lens, n) : -1;
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
            cl_bump(&c->reads_no_owner);
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
    engine_transport t = cl_header_u64(m, "Beava-Transport") == TRANSPORT_TCP ? TRANSPORT_TCP : TRANSPORT_HTTP;
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
    cl_bump(&c->reads_served_for_peers);
    natsMsg_Destroy(m);
}

/* Join the queue group of each partition owned in the current epoch and built here (once
 * caught up: a peer's read is then served without waiting out a long replay). apply_mu. */
void clread_subscribe(cluster *c) {
    const partmap *m = c->map;
    for (size_t i = 0; i < c->nsubs; i++) {
        if (c->subs[i].rpc || !c->subs[i].built || !partmap_owns_self(m, c->subs[i].p)) continue;
        char subj[CLUSTER_SUBJECT_MAX], why[512];
        rpc_subject(c, c->subs[i].p, subj, sizeof subj);
        natsStatus s = natsConnection_QueueSubscribe(&c->subs[i].rpc, c->nc, subj, CLUSTER_RPC_QUEUE, rpc_cb, c);
        if (s != NATS_OK)
            bv_log_msg(c->log, LOG_ERROR, "cluster.rpc_subscribe_failed", "%s: %s", subj, cl_nats_why(s, 0, why, sizeof why));
    }
}
