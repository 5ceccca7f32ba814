/*
 * clsnap.c - cluster snapshots (the engine state plus the stream sequence applied per
 * partition and the registry's) and recovery from the newest that verifies. A snapshot
 * is written by a fork()ed child from its copy-on-write image (the parent holds the
 * engine quiesced only for the fork), one at a time (snap_mu).
 */
#include "cluster_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "crc32c.h"
#include "httpc.h"

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

/* A snapshot: its header is taken in the parent (apply_mu held, inside engine_quiesce),
 * then a fork()ed child writes the header and the engine's state from its copy-on-write
 * image, so pushes and the partitions' consumers go on while it is serialised (as a
 * single node's snapshots, storage/persist.c). The child uses only malloc and plain
 * syscalls; no lock another thread may hold at the fork. */
typedef struct snap_job {
    cluster *c;
    snap_writer w;
    bv_buf head;
    pid_t child;
    char err[128];
} snap_job;

static int snap_child(snap_job *j) {
    if (snap_write(&j->w, j->head.data, j->head.len) != 0) return -1;
    if (engine_serialize(j->c->eng, snap_write, &j->w) != 0) return -1;
    unsigned char crc[4];
    codec_put32(crc, j->w.crc);
    if (snap_write(&j->w, crc, 4) != 0) return -1;
    return fsync(j->w.fd);
}

/* Inside engine_quiesce (apply_mu held too): the header, then the fork. */
static int snap_quiesced(void *ctx, uint64_t lsn, uint64_t version) {
    (void)lsn, (void)version;
    snap_job *j = ctx;
    cluster *c = j->c;
    unsigned char b8[8];
    bv_buf_put(&j->head, SNAP_MAGIC, SNAP_MAGIC_LEN);
    codec_put32(b8, c->nparts);
    bv_buf_put(&j->head, b8, 4);
    pthread_mutex_lock(&c->reg_mu);
    codec_put64(b8, c->reg_applied);
    pthread_mutex_unlock(&c->reg_mu);
    bv_buf_put(&j->head, b8, 8);
    for (unsigned p = 0; p < c->nparts; p++) {
        codec_put64(b8, c->applied[p]);
        bv_buf_put(&j->head, b8, 8);
    }
    for (unsigned p = 0; p < c->nparts; p++) {   /* which partitions the state holds */
        unsigned char held = c->subs[p].applying && c->subs[p].built;
        bv_buf_put(&j->head, &held, 1);
    }
    pid_t pid = fork();
    if (pid == 0) _exit(snap_child(j) == 0 ? 0 : 1);
    if (pid < 0) {
        snprintf(j->err, sizeof j->err, "fork: %s", strerror(errno));
        return -1;
    }
    j->child = pid;
    return 0;
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

int clsnap_take(cluster *c, char *err, size_t errlen) {
    pthread_mutex_lock(&c->snap_mu);                 /* one snapshot at a time */
    pthread_mutex_lock(&c->apply_mu);
    uint64_t id = ++c->snap_counter;
    char tmp[PATH_MAX + 32], fin[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s/snap-%020" PRIu64 ".tmp", c->snap_dir, id);
    snprintf(fin, sizeof fin, "%s/snap-%020" PRIu64 ".bin", c->snap_dir, id);
    snap_job j = { .c = c, .w = { .fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), .c = c },
                   .child = -1 };
    bv_buf_init(&j.head);
    int rc = -1;
    uint64_t covered = c->applied_since_snap;        /* what this snapshot holds */
    if (j.w.fd < 0) {
        cl_fail(err, errlen, "open %s: %s", tmp, strerror(errno));
        pthread_mutex_unlock(&c->apply_mu);
    } else {
        rc = engine_quiesce(c->eng, snap_quiesced, &j);
        pthread_mutex_unlock(&c->apply_mu);          /* the child writes; everything else goes on */
        if (rc == 0) {
            int status = 0;
            while (waitpid(j.child, &status, 0) < 0 && errno == EINTR) {}
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                rc = -1;
                snprintf(j.err, sizeof j.err, "the snapshot child failed (status %d)", status);
            }
        }
        if (close(j.w.fd) != 0) rc = -1;
        if (rc == 0 && rename(tmp, fin) != 0) {
            rc = -1;
            snprintf(j.err, sizeof j.err, "rename: %s", strerror(errno));
        }
        if (rc != 0) {
            cl_fail(err, errlen, "writing %s: %s", tmp, j.err[0] ? j.err : "write failed");
            unlink(tmp);
        } else {
            int dfd = open(c->snap_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
            pthread_mutex_lock(&c->apply_mu);
            c->applied_since_snap -= covered;
            pthread_mutex_unlock(&c->apply_mu);
        }
    }
    bv_buf_free(&j.head);
    pthread_mutex_unlock(&c->snap_mu);
    if (rc != 0) {
        cl_bump(&c->snapshot_failures);
        return -1;
    }
    cl_bump(&c->snapshots);
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
    if (clsnap_take(c, err, sizeof err) != 0) {
        return cl_error(out, 500, "snapshot_failed", err);
    }
    pthread_mutex_lock(&c->apply_mu);
    bv_buf_printf(out, "{\"snapshot\":%" PRIu64 ",\"applied\":{", c->snap_counter);
    bool first = true;
    for (size_t i = 0; i < c->nsubs; i++) {
        if (!c->subs[i].applying) continue;
        bv_buf_printf(out, "%s\"%u\":%" PRIu64, first ? "" : ",", c->subs[i].p, c->applied[c->subs[i].p]);
        first = false;
    }
    pthread_mutex_unlock(&c->apply_mu);
    bv_buf_puts(out, "}}");
    return 200;
}

void *clsnap_main(void *arg) {
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
        if (due && clsnap_take(c, err, sizeof err) != 0)
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
    size_t head = SNAP_MAGIC_LEN + 4 + 8 + (size_t)c->nparts * 9;
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
            rc = cl_fail(err, errlen, "cluster: %s was written for %u partitions, this node has %u", path,
                      codec_get32(b + SNAP_MAGIC_LEN), c->nparts);
            free(b);
            break;
        }
        char why[512];
        if (engine_deserialize(eng, b + head, len - head - 4, why, sizeof why) != 0) {
            rc = cl_fail(err, errlen, "cluster: %s: %s", path, why);
            free(b);
            break;
        }
        c->reg_applied = codec_get64(b + SNAP_MAGIC_LEN + 4);
        c->recovered = true;
        for (unsigned p = 0; p < c->nparts; p++) {
            c->applied[p] = codec_get64(b + SNAP_MAGIC_LEN + 12 + (size_t)p * 8);
            c->snap_held[p] = b[SNAP_MAGIC_LEN + 12 + (size_t)c->nparts * 8 + p] != 0;
        }
        free(b);
        bv_log_msg(c->log, LOG_INFO, "cluster.recovered", "snapshot %s: registry record %" PRIu64, path,
                   c->reg_applied);
        break;
    }
    free(ids);
    return rc;
}

/* ---- partition snapshots between peers ------------------------------------------------------- */
/*
 * Body of GET /cluster/snapshot?parts=P1,P2 (PSNAP_MAGIC): u32 partition count of the
 * cluster, u64 registry sequence applied, u32 k, k x (u32 partition, u64 its applied
 * stream sequence), then the engine state of those partitions' entities
 * (engine_serialize_filtered: the registry history comes with it), then the CRC-32C of
 * everything before it. The receiver checks the cap, the CRC, the partition list and that
 * its registry is the same, merges the entities and consumes the stream from there.
 */

#define PSNAP_HEAD(k) (SNAP_MAGIC_LEN + 4 + 8 + 4 + (size_t)(k) * 12)

uint64_t cl_stream_first_seq(cluster *c) {
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    uint64_t first = 0;
    if (js_GetStreamInfo(&si, c->js, c->stream, NULL, &jerr) == NATS_OK && si)
        first = si->State.FirstSeq ? si->State.FirstSeq : si->State.LastSeq + 1;   /* 0: never stored anything */
    jsStreamInfo_Destroy(si);
    return first;
}

bool cl_covered(cluster *c, uint64_t applied, const char *subj, uint64_t first, bool held) {
    if (first > 0 && applied + 1 >= first) return true;
    uint64_t last = cl_last_seq(c, subj);
    /* nothing of it after what was applied; a subject with nothing left in a stream whose
     * beginning is gone may have lost anything, unless the local snapshot held it (a node
     * down longer than the retention must be rebuilt: README) */
    return last > 0 ? applied >= last : held;
}

typedef struct psnap_ctx {
    cluster *c;
    const bool *in;
    bv_buf *out;
} psnap_ctx;

static bool psnap_keep(void *ctx, const char *table, const char *key, size_t klen) {
    psnap_ctx *pc = ctx;
    return pc->in[partmap_partition(pc->c->map, table, key, klen)];
}

static int psnap_write(void *ctx, const void *p, size_t n) {
    bv_buf_put(((psnap_ctx *)ctx)->out, p, n);
    return 0;
}

/* Parse "parts=1,2,3" into in[] (every partition once at most). Returns how many, -1 if bad. */
static long parse_parts(const cluster *c, const char *query, bool *in) {
    const char *v = strstr(query, "parts=");
    if (!v || (v != query && v[-1] != '&')) return -1;
    v += 6;
    long n = 0;
    while (*v && *v != '&') {
        char *end;
        errno = 0;
        unsigned long p = strtoul(v, &end, 10);
        if (end == v || errno || p >= c->nparts || in[p] || (*end && *end != ',' && *end != '&')) return -1;
        in[p] = true;
        n++;
        v = *end == ',' ? end + 1 : end;
    }
    return n;
}

static int psnap_quiesced(void *ctx, uint64_t lsn, uint64_t version) {
    (void)lsn, (void)version;
    psnap_ctx *pc = ctx;
    return engine_serialize_filtered(pc->c->eng, psnap_keep, pc, psnap_write, pc);
}

int clsnap_serve(cluster *c, const char *query, bv_buf *out, const char **ctype) {
    bool *in = calloc(c->nparts, sizeof *in);
    if (!in) return cl_read_error(out, "internal_error", "out of memory");
    long k = parse_parts(c, query, in);
    int st = 200;
    if (k < 0) {
        free(in);
        char why[96];
        snprintf(why, sizeof why, "parts=P1,P2,...: distinct partitions below %u", c->nparts);
        return cl_error(out, 400, "bad_request", why);
    }
    pthread_mutex_lock(&c->apply_mu);
    char why[160] = "";
    if (!c->caught_up) snprintf(why, sizeof why, "this node has not caught up yet");
    for (unsigned p = 0; p < c->nparts && !why[0]; p++)
        if (in[p] && (!c->subs[p].built || c->subs[p].drop_at_ms))
            snprintf(why, sizeof why, "partition %u is not built on this node", p);
    if (why[0]) {
        pthread_mutex_unlock(&c->apply_mu);
        free(in);
        return cl_read_error(out, "not_available", why);
    }
    out->len = 0;
    unsigned char b8[8];
    bv_buf_put(out, PSNAP_MAGIC, SNAP_MAGIC_LEN);
    codec_put32(b8, c->nparts);
    bv_buf_put(out, b8, 4);
    pthread_mutex_lock(&c->reg_mu);
    codec_put64(b8, c->reg_applied);
    pthread_mutex_unlock(&c->reg_mu);
    bv_buf_put(out, b8, 8);
    codec_put32(b8, (uint32_t)k);
    bv_buf_put(out, b8, 4);
    for (unsigned p = 0; p < c->nparts; p++) {
        if (!in[p]) continue;
        codec_put32(b8, p);
        bv_buf_put(out, b8, 4);
        codec_put64(b8, c->applied[p]);
        bv_buf_put(out, b8, 8);
    }
    psnap_ctx pc = { .c = c, .in = in, .out = out };
    int rc = engine_quiesce(c->eng, psnap_quiesced, &pc);
    pthread_mutex_unlock(&c->apply_mu);
    free(in);
    if (rc != 0) return cl_read_error(out, "internal_error", "cannot serialise the partitions");
    codec_put32(b8, crc32c(out->data, out->len));
    bv_buf_put(out, b8, 4);
    if (out->len > (size_t)c->cfg->cluster_peer_snapshot_max_mb << 20) {
        st = 413;
        cl_read_error(out, "snapshot_too_large", "the partitions' snapshot is larger than cluster.peer_snapshot_max_mb");
        return st;
    }
    cl_bump(&c->peer_snapshots_served);
    *ctype = "application/octet-stream";
    return st;
}

int clsnap_fetch(cluster *c, const bool *in, const char *peer, const char *addr, char *why, size_t wl) {
    bv_buf path, body;
    bv_buf_init(&path);
    bv_buf_init(&body);
    bv_buf_puts(&path, "/cluster/snapshot?parts=");
    size_t k = 0;
    for (unsigned p = 0; p < c->nparts; p++)
        if (in[p]) bv_buf_printf(&path, "%s%u", k++ ? "," : "", p);
    char hdr[600] = "", err[300];
    if (c->admin_token) snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", c->admin_token);
    size_t cap = (size_t)c->cfg->cluster_peer_snapshot_max_mb << 20;
    int status = 0, rc = -1;
    const unsigned char *b;
    if (httpc_request_ex(addr, "GET", path.data, NULL, MEMBER_FETCH_TIMEOUT_MS, hdr[0] ? hdr : NULL, cap, &status, &body,
                         err, sizeof err) != 0) {
        snprintf(why, wl, "%s (%s): %s", peer, addr, err);
        goto out;
    }
    b = (const unsigned char *)body.data;
    if (status != 200) {
        snprintf(why, wl, "%s (%s) answered %d: %.200s", peer, addr, status, body.data ? body.data : "");
        goto out;
    }
    if (body.len < PSNAP_HEAD(k) + 4 || memcmp(b, PSNAP_MAGIC, SNAP_MAGIC_LEN) != 0 ||
        crc32c(b, body.len - 4) != codec_get32(b + body.len - 4)) {
        snprintf(why, wl, "%s (%s): the snapshot does not verify (%zu bytes, magic or CRC-32C wrong)", peer, addr, body.len);
        goto out;
    }
    if (codec_get32(b + SNAP_MAGIC_LEN) != c->nparts || codec_get32(b + SNAP_MAGIC_LEN + 12) != k) {
        snprintf(why, wl, "%s (%s): the snapshot is for other partitions", peer, addr);
        goto out;
    }
    uint64_t theirs = codec_get64(b + SNAP_MAGIC_LEN + 4);
    const unsigned char *list = b + SNAP_MAGIC_LEN + 16;
    for (size_t i = 0; i < k; i++)
        if (codec_get32(list + i * 12) >= c->nparts || !in[codec_get32(list + i * 12)]) {
            snprintf(why, wl, "%s (%s): the snapshot lists partitions not asked for", peer, addr);
            goto out;
        }
    /* merge on the same registry: wait (bounded) for ours to reach theirs; a peer behind us
     * is asked again by the caller's retry */
    struct timespec dl;
    cl_read_deadline(c, &dl);
    for (;;) {
        pthread_mutex_lock(&c->apply_mu);
        pthread_mutex_lock(&c->reg_mu);
        uint64_t ours = c->reg_applied;
        bool adopt = !c->reg_sub && !c->recovered && ours == 0;
        pthread_mutex_unlock(&c->reg_mu);
        if (adopt || ours == theirs) break;
        pthread_mutex_unlock(&c->apply_mu);
        if (ours > theirs) {
            snprintf(why, wl, "%s (%s): its registry (record %" PRIu64 ") is behind this node's (%" PRIu64 ")", peer, addr,
                     theirs, ours);
            goto out;
        }
        pthread_mutex_lock(&c->reg_mu);
        int w = 0;
        while (c->reg_applied < theirs && !c->stopping && w == 0) w = pthread_cond_timedwait(&c->reg_cv, &c->reg_mu, &dl);
        bool late = c->reg_applied < theirs;
        pthread_mutex_unlock(&c->reg_mu);
        if (late) {
            snprintf(why, wl, "%s (%s): this node's registry did not reach record %" PRIu64 " in time", peer, addr, theirs);
            goto out;
        }
    }
    /* apply_mu held: no message of these partitions is applied meanwhile (none is consumed yet) */
    psnap_ctx pc = { .c = c, .in = in };
    char reason[300];
    size_t head = PSNAP_HEAD(k);
    if (engine_merge(c->eng, b + head, body.len - head - 4, psnap_keep, &pc, reason, sizeof reason) != 0) {
        snprintf(why, wl, "%s (%s): %s", peer, addr, reason);
        bool *out_set = calloc(c->nparts, sizeof *out_set);       /* undo a partial merge */
        if (!out_set) abort();
        for (unsigned p = 0; p < c->nparts; p++) out_set[p] = !in[p];
        psnap_ctx undo = { .c = c, .in = out_set };
        engine_drop_entities(c->eng, psnap_keep, &undo);
        free(out_set);
        pthread_mutex_unlock(&c->apply_mu);
        goto out;
    }
    for (size_t i = 0; i < k; i++) c->applied[codec_get32(list + i * 12)] = codec_get64(list + i * 12 + 4);
    pthread_mutex_lock(&c->reg_mu);
    if (theirs > c->reg_applied) c->reg_applied = theirs;
    pthread_cond_broadcast(&c->reg_cv);
    pthread_mutex_unlock(&c->reg_mu);
    c->applied_since_snap++;
    pthread_mutex_unlock(&c->apply_mu);
    cl_bump(&c->peer_snapshots_fetched);
    bv_log_msg(c->log, LOG_INFO, "cluster.peer_snapshot", "%zu partition(s) from %s (%s): %zu bytes, registry record %" PRIu64,
               k, peer, addr, body.len, theirs);
    rc = 0;
out:
    if (rc != 0) cl_bump(&c->peer_snapshot_failures);
    bv_buf_free(&path);
    bv_buf_free(&body);
    return rc;
}
