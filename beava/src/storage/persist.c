/*
 * persist.c - WAL + snapshots + recovery glue between the engine and the storage
 * modules (see persist.h).
 *
 * Recovery order: newest snapshot whose file verifies (snapfile) AND whose body decodes
 * (engine_deserialize; on failure the next older one is tried with a fresh engine state
 * impossible to reuse, so the process stops with a clear error instead), then the WAL
 * from the snapshot's LSN. Everything recovery did is logged once as
 * "storage.recovered" and exported in /metrics.
 *
 * Snapshots are written by a fork()ed child from its copy-on-write image of the engine;
 * the parent holds the engine quiesced only for the fork itself. The child uses malloc
 * and plain syscalls only and leaves with _exit().
 */
#include "persist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "snapfile.h"
#include "wal.h"

#define PERSIST_COPY_CHUNK (64 * 1024)   /* bytes per read when copying a file aside */
#define PERSIST_ASIDE_TRIES 100          /* data-loss-<time>[-N] names tried */
#define PERSIST_REPLAY_ERRORS_LOGGED 10  /* storage.replay_error lines per recovery */

/* snprintf into a path buffer; false when the result did not fit. */
static bool pathf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool pathf(char *out, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    return k >= 0 && (size_t)k < n;
}

static void fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    fsync(fd);
    close(fd);
}

struct persist {
    const bv_config *cfg;
    const bv_log *log;
    wal *w;
    engine *eng;
    char snap_dir[PATH_MAX];
    char wal_dir[PATH_MAX];
    wal_recovery_stats rec;
    snapfile_load_stats snap_load;
    uint64_t snapshot_lsn_loaded;
    uint64_t replay_errors;
    /* recovery progress for admin /ready (read by the admin thread while recovery runs) */
    atomic_int prog_phase;                  /* enum recover_phase */
    atomic_uint_fast64_t prog_records, prog_bytes;
    atomic_uint_fast64_t prog_wal_total, prog_snapshot_bytes;
    bool accepted_data_loss;      /* this recovery went past missing LSNs (--accept-data-loss) */
    /* snapshot thread */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;           /* guards the fields below and serialises snapshots */
    pthread_cond_t cv;
    bool stopping;
    uint64_t snapshots_taken, snapshot_failures;
    double last_duration_s, last_pause_s;
    uint64_t last_bytes, last_lsn;
    uint64_t segments_removed;
    char last_error[256];
};

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- snapshot file names ------------------------------------------------------------- */

/* "snapshot-<16 hex>.bvs" -> LSN. */
static bool snapshot_name_lsn(const char *name, uint64_t *lsn) {
    unsigned long long v;
    char tail[8];
    if (strlen(name) != 29 || sscanf(name, "snapshot-%16llx.%4s", &v, tail) != 2 || strcmp(tail, "bvs") != 0)
        return false;
    *lsn = v;
    return true;
}

/* The oldest (or newest) LSN a snapshot file in dir names, 0 if none. */
static uint64_t snapshot_lsn_bound(const char *dir, bool oldest) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    uint64_t best = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t v;
        if (snapshot_name_lsn(de->d_name, &v) && (best == 0 || (oldest ? v < best : v > best))) best = v;
    }
    closedir(d);
    return best;
}

/* ---- WAL seam ------------------------------------------------------------------------ */

static int op_append(void *ctx, int kind, const void *payload, size_t len, uint64_t *lsn, char *reason, size_t rlen) {
    persist *p = ctx;
    bv_err err;
    bv_err_clear(&err);
    if (wal_append(p->w, (uint8_t)kind, payload, len, lsn, &err) != 0) {
        snprintf(reason, rlen, "%s", err.reason[0] ? err.reason : err.code);
        return -1;
    }
    return 0;
}

static int op_wait(void *ctx, uint64_t lsn, char *reason, size_t rlen) {
    persist *p = ctx;
    bv_err err;
    bv_err_clear(&err);
    if (wal_wait_durable(p->w, lsn, -1, &err) != WAL_OK) {
        snprintf(reason, rlen, "%s", err.reason[0] ? err.reason : err.code);
        return -1;
    }
    return 0;
}

void persist_wal_ops(persist *p, engine_wal_ops *ops) {
    ops->append = op_append;
    ops->wait = op_wait;
    ops->ctx = p;
    ops->never_voids = p->cfg->durability == DURABILITY_BATCH;   /* wal_options.keep_failed, below */
}

persist *persist_open(const bv_config *cfg, const bv_log *log, char *err, size_t errlen) {
    persist *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->log = log;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    config_wal_dir(cfg, p->wal_dir, sizeof p->wal_dir);
    config_snapshot_dir(cfg, p->snap_dir, sizeof p->snap_dir);
    /* wal_open creates the data dir (and its parents) and the WAL dir. */
    wal_options wo = {
        .dir = cfg->data_dir,
        .wal_dir = p->wal_dir,
        .segment_bytes = cfg->wal_segment_bytes,
        .batch_bytes = (size_t)cfg->wal_fsync_bytes,
        .tick_ms = cfg->wal_tick_ms,
        /* a snapshot file, usable or not, proves its LSNs existed */
        .known_lsn = snapshot_lsn_bound(p->snap_dir, false),
        .accept_gaps = cfg->accept_data_loss,
        /* batch mode applies and acknowledges before the write: a failed write must be
         * retried, never voided */
        .keep_failed = cfg->durability == DURABILITY_BATCH,
        /* ... and answers before it too: the writer is on no client's path */
        .background = cfg->durability == DURABILITY_BATCH,
        /* sync mode: a client waits for every record (group commit, wal.c WRITER) */
        .all_waited = cfg->durability == DURABILITY_SYNC,
    };
    bv_err e;
    bv_err_clear(&e);
    if (wal_open(&wo, &p->w, &e) != 0) {
        snprintf(err, errlen, "%s: %s", e.code, e.reason);
        goto fail;
    }
    return p;
fail:
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return NULL;
}

/* ---- recovery ------------------------------------------------------------------------ */

enum recover_phase { PHASE_OPENING = 0, PHASE_SNAPSHOT, PHASE_WAL, PHASE_STARTING };
static const char *const PHASE_NAMES[] = {"opening", "snapshot", "wal", "starting"};

/* Sum of the regular files' sizes in dir (the total recovery will read). */
static uint64_t dir_bytes(const char *dir, const char *newest_prefix, uint64_t *newest) {
    uint64_t total = 0;
    char best[NAME_MAX + 1] = "";
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[PATH_MAX];
        struct stat st;
        if (e->d_name[0] == '.' || snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        total += (uint64_t)st.st_size;
        if (newest && strncmp(e->d_name, newest_prefix, strlen(newest_prefix)) == 0 && strcmp(e->d_name, best) > 0) {
            snprintf(best, sizeof best, "%s", e->d_name);
            *newest = (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return total;
}

void persist_progress(persist *p, bv_buf *out) {
    int ph = atomic_load(&p->prog_phase);
    bv_buf_printf(out, ",\"progress\":{\"phase\":\"%s\",\"records\":%" PRIu64 ",\"bytes\":%" PRIu64
                  ",\"wal_bytes_total\":%" PRIu64 ",\"snapshot_bytes\":%" PRIu64 "}",
                  PHASE_NAMES[ph >= 0 && ph <= PHASE_STARTING ? ph : 0], (uint64_t)atomic_load(&p->prog_records),
                  (uint64_t)atomic_load(&p->prog_bytes), (uint64_t)atomic_load(&p->prog_wal_total),
                  (uint64_t)atomic_load(&p->prog_snapshot_bytes));
}

/* A record that verified by CRC but does not apply: count it loudly, keep going. Called
 * for the records engine_replay refuses at once and, through engine_replay_on_error, for
 * the event records its pipeline finds bad once they are applied (in LSN order, on this
 * thread, before storage.recovered). */
static void replay_error(void *ctx, const char *reason) {
    persist *p = ctx;
    p->replay_errors++;
    if (p->replay_errors <= PERSIST_REPLAY_ERRORS_LOGGED)
        bv_log_msg(p->log, LOG_ERROR, "storage.replay_error", "%s%s", reason,
                   p->replay_errors == PERSIST_REPLAY_ERRORS_LOGGED
                       ? " (further replay errors are only counted: replay_errors in storage.recovered)" : "");
}

static int replay_cb(void *ctx, uint8_t kind, uint64_t lsn, const void *payload, size_t len, bv_err *err) {
    persist *p = ctx;
    char reason[512];
    atomic_fetch_add_explicit(&p->prog_records, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->prog_bytes, len, memory_order_relaxed);
    if (engine_replay(p->eng, kind, lsn, payload, len, reason, sizeof reason) != 0) replay_error(p, reason);
    (void)err;
    return 0;
}

static void *snapshot_thread(void *arg);
static int snapshot_locked(persist *p, bool in_process, uint64_t *lsn_out, char *err, size_t errlen);

/* The missing LSNs as text and as JSON members, from what wal_recover found. */
static void gap_describe(persist *p, bv_buf *msg, bv_buf *json) {
    const wal_recovery_stats *r = &p->rec;
    bv_buf_printf(msg, "%" PRIu64 " LSNs that were on disk are missing: ", r->gap_lsns);
    bv_buf_puts(json, "\"missing\":[");
    for (uint32_t i = 0; i < r->ngaps && i < WAL_GAPS_KEPT; i++) {
        const wal_gap *g = &r->gaps[i];
        char seg[PATH_MAX + 32];
        snprintf(seg, sizeof seg, "%s/%016" PRIx64 ".seg", p->wal_dir, g->lo);
        bv_buf_printf(msg, "%sLSN %" PRIu64 "..%" PRIu64 " (expected in %s", i ? "; " : "", g->lo, g->hi, seg);
        if (g->after_seg && g->after_seg == g->before_seg)
            bv_buf_printf(msg, ", records missing inside it");
        else if (g->before_seg && g->after_seg)
            bv_buf_printf(msg, ", between %016" PRIx64 ".seg and %016" PRIx64 ".seg which was written after LSN %" PRIu64,
                          g->after_seg, g->before_seg, g->hi);
        else if (g->before_seg)
            bv_buf_printf(msg, ", before %016" PRIx64 ".seg which was written after LSN %" PRIu64, g->before_seg, g->hi);
        else
            bv_buf_printf(msg, ", named by a snapshot file");
        bv_buf_printf(msg, ", or in a snapshot %s/snapshot-%016" PRIx64 ".bvs or later)", p->snap_dir, g->hi);
        bv_buf_printf(json, "%s{\"from\":%" PRIu64 ",\"to\":%" PRIu64 ",\"expected_segment\":", i ? "," : "", g->lo, g->hi);
        bv_buf_json_str(json, seg, strlen(seg));
        bv_buf_putc(json, '}');
    }
    if (r->ngaps > WAL_GAPS_KEPT) bv_buf_printf(msg, "; and %" PRIu32 " more ranges", r->ngaps - WAL_GAPS_KEPT);
    bv_buf_puts(json, "]");
    if (p->snapshot_lsn_loaded)
        bv_buf_printf(msg, ". The newest usable snapshot covers LSNs up to %" PRIu64, p->snapshot_lsn_loaded);
    else
        bv_buf_printf(msg, ". No usable snapshot in %s", p->snap_dir);
    if (p->snap_load.rejected)
        bv_buf_printf(msg, " (%u rejected: %s)", p->snap_load.rejected, p->snap_load.first_error);
    /* every snapshot file there is, usable or not */
    bv_buf_puts(json, ",\"snapshot_files\":[");
    DIR *d = opendir(p->snap_dir);
    struct dirent *de;
    unsigned nfiles = 0;
    while (d && (de = readdir(d)) != NULL) {
        uint64_t lsn;
        if (!snapshot_name_lsn(de->d_name, &lsn)) continue;
        bv_buf_printf(msg, "%s%s", nfiles ? ", " : "; snapshot files present: ", de->d_name);
        if (nfiles++) bv_buf_putc(json, ',');
        bv_buf_json_str(json, de->d_name, strlen(de->d_name));
    }
    if (d) closedir(d);
    bv_buf_putc(json, ']');
    bv_buf_printf(json, ",\"gap_lsns\":%" PRIu64 ",\"lost_lsns\":%" PRIu64 ",\"snapshot_lsn\":%" PRIu64
                  ",\"snapshots_rejected\":%u,\"wal_records\":%" PRIu64 ",\"wal_first_lsn\":%" PRIu64
                  ",\"wal_last_lsn\":%" PRIu64 ",\"wal_dir\":",
                  r->gap_lsns, r->lost_lsns, p->snapshot_lsn_loaded, p->snap_load.rejected, r->records, r->first_lsn,
                  r->last_lsn);
    bv_buf_json_str(json, p->wal_dir, strlen(p->wal_dir));
    bv_buf_puts(json, ",\"snapshot_dir\":");
    bv_buf_json_str(json, p->snap_dir, strlen(p->snap_dir));
}

/* Refuse to start: one error line saying what is missing and where it was expected.
 * Nothing was deleted or modified (wal_recover stops before its repairs). */
static void gap_refuse(persist *p, char *err, size_t errlen) {
    bv_buf msg, json;
    bv_buf_init(&msg);
    bv_buf_init(&json);
    bv_buf_puts(&msg, "recovery refused: ");
    gap_describe(p, &msg, &json);
    bv_buf_printf(&msg, ". No WAL segment or snapshot was deleted or modified. Restore the missing files, or start "
                        "with --accept-data-loss (BEAVA_ACCEPT_DATA_LOSS=true) to run without these records; the "
                        "old files are then kept in %s/data-loss-<time>/", p->cfg->data_dir);
    bv_buf_puts(&json, ",\"msg\":");
    bv_buf_json_str(&json, msg.data, msg.len);
    bv_log_emit(p->log, LOG_ERROR, "storage.recovery_refused", json.data);
    snprintf(err, errlen, "%s", msg.data);
    bv_buf_free(&msg);
    bv_buf_free(&json);
}

/* Copy src to dst (a new file), fsynced. For the data-loss aside copy when a hard link
 * cannot be made (another file system). */
static int copy_file(const char *src, const char *dst) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -1;
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (out < 0) {
        close(in);
        return -1;
    }
    char buf[PERSIST_COPY_CHUNK];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            rc = -1;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t k = write(out, buf + off, (size_t)(n - off));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                rc = -1;
                break;
            }
            off += k;
        }
        if (rc) break;
    }
    if (rc == 0 && fsync(out) != 0) rc = -1;
    int e = errno;
    close(in);
    close(out);
    if (rc) unlink(dst);
    errno = e;
    return rc;
}

/* Keep src at dst: a hard link (or a copy across file systems); with `move` the source
 * name is then removed (a rename when possible). */
static int keep_aside(const char *src, const char *dst, bool move) {
    if (move && rename(src, dst) == 0) return 0;
    if (link(src, dst) != 0 && copy_file(src, dst) != 0) return -1;
    if (move && unlink(src) != 0) return -1;
    return 0;
}

/* Started with --accept-data-loss past missing LSNs: say so loudly, keep every old file
 * in <data_dir>/data-loss-<UTC time>/ (the WAL segments as links or copies, the
 * snapshots newer than the one loaded moved there, none deleted), then take a snapshot
 * at once so the next start has a baseline and does not stop at the same gap. */
static int gap_accept(persist *p, char *err, size_t errlen) {
    p->accepted_data_loss = true;
    char aside[PATH_MAX], sub[PATH_MAX + 16], src[PATH_MAX + 64], dst[PATH_MAX + 96];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    int made = -1;
    for (int i = 0; i < PERSIST_ASIDE_TRIES && made != 0; i++) {
        bool fits = i == 0 ? pathf(aside, sizeof aside, "%s/data-loss-%s", p->cfg->data_dir, stamp)
                           : pathf(aside, sizeof aside, "%s/data-loss-%s-%d", p->cfg->data_dir, stamp, i);
        if (!fits) {
            errno = ENAMETOOLONG;
            break;
        }
        made = mkdir(aside, 0750);
        if (made != 0 && errno != EEXIST) break;
    }
    if (made != 0) {
        snprintf(err, errlen, "--accept-data-loss: cannot create %s to keep the old files: %s", aside, strerror(errno));
        return -1;
    }
    unsigned kept_segments = 0, kept_snapshots = 0;
    const char *what = NULL;
    pathf(sub, sizeof sub, "%s/wal", aside);
    DIR *d = mkdir(sub, 0750) == 0 ? opendir(p->wal_dir) : NULL;
    if (!d) what = sub;
    struct dirent *de;
    while (d && !what && (de = readdir(d)) != NULL) {
        unsigned long long start;
        char tail[8];
        /* every closed segment; the active one (start >= next LSN) is written from now on */
        if (strlen(de->d_name) != 20 || sscanf(de->d_name, "%16llx.%3s", &start, tail) != 2 || strcmp(tail, "seg") != 0 ||
            start >= p->rec.next_lsn)
            continue;
        if (!pathf(src, sizeof src, "%s/%s", p->wal_dir, de->d_name) || !pathf(dst, sizeof dst, "%s/%s", sub, de->d_name) ||
            keep_aside(src, dst, false) != 0)
            what = src;
        else kept_segments++;
    }
    if (d) closedir(d);
    pathf(sub, sizeof sub, "%s/snapshots", aside);
    d = !what && mkdir(sub, 0750) == 0 ? opendir(p->snap_dir) : NULL;
    if (!d && !what && errno != ENOENT) what = sub;
    while (d && !what && (de = readdir(d)) != NULL) {
        uint64_t lsn;
        if (!snapshot_name_lsn(de->d_name, &lsn) || lsn <= p->snapshot_lsn_loaded) continue;
        if (!pathf(src, sizeof src, "%s/%s", p->snap_dir, de->d_name) || !pathf(dst, sizeof dst, "%s/%s", sub, de->d_name) ||
            keep_aside(src, dst, true) != 0)
            what = src;
        else kept_snapshots++;
    }
    if (d) closedir(d);
    if (what) {
        snprintf(err, errlen, "--accept-data-loss: cannot keep %s aside in %s: %s", what, aside, strerror(errno));
        return -1;
    }
    bv_buf msg, json;
    bv_buf_init(&msg);
    bv_buf_init(&json);
    bv_buf_puts(&msg, "started with --accept-data-loss: ");
    gap_describe(p, &msg, &json);
    bv_buf_printf(&msg, ". The old files are kept in %s (%u WAL segments, %u snapshots)", aside, kept_segments, kept_snapshots);
    FILE *f = pathf(src, sizeof src, "%s/REASON", aside) ? fopen(src, "w") : NULL;
    if (f) {
        fprintf(f, "%s\n", msg.data);
        fclose(f);
    }
    fsync_dir(aside);
    fsync_dir(p->cfg->data_dir);
    fsync_dir(p->snap_dir);
    bv_buf_puts(&json, ",\"aside_dir\":");
    bv_buf_json_str(&json, aside, strlen(aside));
    bv_buf_puts(&json, ",\"msg\":");
    bv_buf_json_str(&json, msg.data, msg.len);
    bv_log_emit(p->log, LOG_WARN, "storage.data_loss_accepted", json.data);
    bv_buf_free(&msg);
    bv_buf_free(&json);
    /* the new baseline: without it the next start would find the same gap */
    char serr[256];
    pthread_mutex_lock(&p->mu);
    int rc = snapshot_locked(p, true, NULL, serr, sizeof serr);
    pthread_mutex_unlock(&p->mu);
    if (rc != 0)
        bv_log_msg(p->log, LOG_ERROR, "storage.data_loss_baseline_failed",
                   "the snapshot after --accept-data-loss failed (%s); the next start will stop at the same gap", serr);
    return 0;
}

int persist_recover(persist *p, engine *eng, char *err, size_t errlen) {
    p->eng = eng;
    uint64_t snap_bytes = 0;
    dir_bytes(p->snap_dir, "snapshot-", &snap_bytes);
    atomic_store(&p->prog_snapshot_bytes, snap_bytes);
    atomic_store(&p->prog_wal_total, dir_bytes(p->wal_dir, "", NULL));
    atomic_store(&p->prog_phase, PHASE_SNAPSHOT);
    int64_t t0 = mono_ns();
    int64_t t_snap = t0;
    bv_err e;
    bv_err_clear(&e);
    snapfile_reader *r = NULL;
    int found = snapfile_open_latest(p->snap_dir, UINT64_MAX, &r, &p->snap_load, &e);
    if (found < 0) {
        snprintf(err, errlen, "snapshots in %s: %s", p->snap_dir, e.reason);
        return -1;
    }
    if (found == 1) {
        void *body = NULL;
        size_t len = 0;
        uint64_t lsn = snapfile_reader_header(r)->lsn;
        if (snapfile_read_all(r, &body, &len, &e) != 0) {
            snapfile_reader_close(r);
            snprintf(err, errlen, "snapshot %016" PRIx64 ": %s", lsn, e.reason);
            return -1;
        }
        snapfile_reader_close(r);
        char reason[512];
        if (engine_deserialize(eng, body, len, reason, sizeof reason) != 0) {
            free(body);
            snprintf(err, errlen, "snapshot %s/snapshot-%016" PRIx64 ".bvs verifies but cannot be loaded: %s "
                     "(move it aside to recover from the previous snapshot)", p->snap_dir, lsn, reason);
            return -1;
        }
        free(body);
        p->snapshot_lsn_loaded = lsn;
        t_snap = mono_ns();
        if (p->snap_load.rejected)
            bv_log_msg(p->log, LOG_WARN, "storage.snapshot_rejected",
                       "%u newer snapshot(s) rejected, using %016" PRIx64 ": %s", p->snap_load.rejected, lsn,
                       p->snap_load.first_error);
    }
    t_snap = t_snap > t0 ? t_snap : mono_ns();
    atomic_store(&p->prog_phase, PHASE_WAL);
    engine_replay_on_error(eng, replay_error, p);
    int wrc = wal_recover(p->w, p->snapshot_lsn_loaded, replay_cb, p, &p->rec, &e);
    engine_replay_finish(eng);            /* everything replayed is applied (and timed) */
    engine_replay_on_error(eng, NULL, NULL);
    if (wrc != 0) {
        if (strcmp(e.code, "wal_gap") == 0) {
            gap_refuse(p, err, errlen);
            return -1;
        }
        snprintf(err, errlen, "WAL recovery: %s: %s", e.code, e.reason);
        return -1;
    }
    if (p->rec.gap_lsns && gap_accept(p, err, errlen) != 0) return -1;
    wal_set_registry_version(p->w, engine_registry_version(eng));
    atomic_store(&p->prog_phase, PHASE_STARTING);
    int64_t t_end = mono_ns();
    char fields[900];
    snprintf(fields, sizeof fields,
             "\"snapshot_load_ms\":%.3f,\"wal_replay_ms\":%.3f,\"snapshot_lsn\":%" PRIu64 ",\"snapshots_rejected\":%u,\"wal_segments\":%u,\"wal_records\":%" PRIu64
             ",\"replayed\":%" PRIu64 ",\"truncated_bytes\":%" PRIu64 ",\"quarantined_regions\":%" PRIu64
             ",\"quarantined_bytes\":%" PRIu64 ",\"lost_lsns\":%" PRIu64 ",\"void_lsns\":%" PRIu64
             ",\"gap_lsns\":%" PRIu64 ",\"accepted_data_loss\":%s"
             ",\"replay_errors\":%" PRIu64 ",\"orphan_reused\":%s,\"next_lsn\":%" PRIu64,
             (double)(t_snap - t0) / 1e6, (double)(t_end - t_snap) / 1e6,
             p->snapshot_lsn_loaded, p->snap_load.rejected, p->rec.segments, p->rec.records, p->rec.replayed,
             p->rec.truncated_bytes, p->rec.quarantined_regions, p->rec.quarantined_bytes, p->rec.lost_lsns,
             p->rec.void_lsns, p->rec.gap_lsns, p->accepted_data_loss ? "true" : "false", p->replay_errors,
             p->rec.orphan_reused ? "true" : "false", p->rec.next_lsn);
    bv_log_emit(p->log, p->rec.quarantined_regions || p->rec.lost_lsns || p->replay_errors ? LOG_WARN : LOG_INFO,
                "storage.recovered", fields);
    if (pthread_create(&p->thread, NULL, snapshot_thread, p) != 0) {
        snprintf(err, errlen, "cannot start the snapshot thread");
        return -1;
    }
    p->thread_started = true;
    return 0;
}

/* ---- snapshots ----------------------------------------------------------------------- */

typedef struct snap_job {
    persist *p;
    pid_t child;
    uint64_t lsn;
    int64_t pause_ns;
    bool in_process;          /* final snapshot: no fork */
    int rc;
    char err[256];
} snap_job;

static int sw_write(void *ctx, const void *buf, size_t n) {
    bv_err e;
    return snapfile_write(ctx, buf, n, &e);
}

/* Write the snapshot of the (quiesced or forked) engine. */
static int write_snapshot(persist *p, uint64_t lsn, uint64_t version, char *err, size_t errlen) {
    snapfile_writer *sw = NULL;
    bv_err e;
    bv_err_clear(&e);
    if (snapfile_begin(p->snap_dir, lsn, version, &sw, &e) != 0) {
        snprintf(err, errlen, "%s", e.reason);
        return -1;
    }
    if (engine_serialize(p->eng, sw_write, sw) != 0) {
        snapfile_abort(sw);
        snprintf(err, errlen, "writing the snapshot body failed");
        return -1;
    }
    if (snapfile_commit(sw, p->cfg->snapshot_retain, NULL, &e) != 0) {
        snprintf(err, errlen, "%s", e.reason);
        return -1;
    }
    return 0;
}

static int fork_cb(void *ctx, uint64_t lsn, uint64_t version) {
    snap_job *j = ctx;
    j->lsn = lsn;
    int64_t t0 = mono_ns();
    if (j->in_process) {
        j->rc = write_snapshot(j->p, lsn, version, j->err, sizeof j->err);
        j->pause_ns = mono_ns() - t0;
        return 0;
    }
    pid_t pid = fork();
    if (pid == 0) {
        char err[256];
        _exit(write_snapshot(j->p, lsn, version, err, sizeof err) == 0 ? 0 : 1);
    }
    j->pause_ns = mono_ns() - t0;
    if (pid < 0) {
        snprintf(j->err, sizeof j->err, "fork: %s", strerror(errno));
        j->rc = -1;
        return -1;
    }
    j->child = pid;
    return 0;
}

/* Take one snapshot; p->mu must be held (serialises snapshots). */
static int snapshot_locked(persist *p, bool in_process, uint64_t *lsn_out, char *err, size_t errlen) {
    snap_job j = { .p = p, .child = -1, .in_process = in_process };
    int64_t t0 = mono_ns();
    engine_quiesce(p->eng, fork_cb, &j);
    if (!in_process && j.child > 0) {
        int status = 0;
        while (waitpid(j.child, &status, 0) < 0 && errno == EINTR) {}
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            j.rc = -1;
            snprintf(j.err, sizeof j.err, "the snapshot child failed (status %d)", status);
        }
    }
    p->last_pause_s = (double)j.pause_ns / 1e9;
    if (j.rc != 0) {
        p->snapshot_failures++;
        snprintf(p->last_error, sizeof p->last_error, "%s", j.err);
        snprintf(err, errlen, "%s", j.err);
        bv_log_msg(p->log, LOG_ERROR, "storage.snapshot_failed", "%s", j.err);
        return -1;
    }
    p->snapshots_taken++;
    p->last_lsn = j.lsn;
    p->last_duration_s = (double)(mono_ns() - t0) / 1e9;
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/snapshot-%016" PRIx64 ".bvs", p->snap_dir, j.lsn);
    struct stat st;
    p->last_bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    /* WAL segments covered by the oldest retained snapshot are redundant */
    uint64_t oldest = snapshot_lsn_bound(p->snap_dir, true);
    unsigned removed = 0;
    bv_err e;
    if (oldest && wal_truncate_before(p->w, oldest, &removed, &e) == 0) p->segments_removed += removed;
    char fields[256];
    snprintf(fields, sizeof fields, "\"lsn\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"pause_ms\":%.3f,\"duration_ms\":%.3f,"
             "\"wal_segments_removed\":%u", j.lsn, p->last_bytes, p->last_pause_s * 1e3, p->last_duration_s * 1e3, removed);
    bv_log_emit(p->log, LOG_INFO, "storage.snapshot", fields);
    if (lsn_out) *lsn_out = j.lsn;
    return 0;
}

static void *snapshot_thread(void *arg) {
    persist *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += p->cfg->snapshot_interval_s;
        int rc = 0;
        while (!p->stopping && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        if (p->stopping) break;
        if (engine_applied_lsn(p->eng) == p->last_lsn && p->snapshots_taken) continue;  /* nothing new */
        char err[256];
        snapshot_locked(p, false, NULL, err, sizeof err);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int persist_snapshot_now(persist *p, bv_buf *out) {
    char err[256];
    uint64_t lsn = 0;
    pthread_mutex_lock(&p->mu);
    int rc = snapshot_locked(p, false, &lsn, err, sizeof err);
    pthread_mutex_unlock(&p->mu);
    if (rc != 0) {
        jsonw_member m = { .key = "reason", .str = err };
        jsonw_error(out, "snapshot_failed", &m, 1, false, 0);
        return 500;
    }
    jsonw w;
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/snapshot-%016" PRIx64 ".bvs", p->snap_dir, lsn);
    char *abs = realpath(path, NULL);
    jsonw_key(&w, "lsn");
    jsonw_u64(&w, lsn);
    jsonw_key(&w, "path");
    jsonw_str(&w, abs ? abs : path);
    jsonw_obj_end(&w);
    free(abs);
    return 200;
}

void persist_metrics(persist *p, bv_buf *out) {
    wal_stats ws;
    wal_get_stats(p->w, &ws);
    pthread_mutex_lock(&p->mu);
    bv_buf_printf(out,
        "# HELP beava_snapshot_last_duration_seconds Wall time of the last snapshot.\n"
        "# TYPE beava_snapshot_last_duration_seconds gauge\nbeava_snapshot_last_duration_seconds %.6f\n"
        "# HELP beava_snapshot_last_pause_seconds Time pushes were held for the last snapshot (fork).\n"
        "# TYPE beava_snapshot_last_pause_seconds gauge\nbeava_snapshot_last_pause_seconds %.6f\n"
        "# HELP beava_snapshot_last_bytes Size of the last snapshot file.\n"
        "# TYPE beava_snapshot_last_bytes gauge\nbeava_snapshot_last_bytes %" PRIu64 "\n"
        "# HELP beava_snapshot_last_lsn LSN covered by the last snapshot.\n"
        "# TYPE beava_snapshot_last_lsn gauge\nbeava_snapshot_last_lsn %" PRIu64 "\n"
        "# HELP beava_snapshots_total Snapshots written since start.\n"
        "# TYPE beava_snapshots_total counter\nbeava_snapshots_total %" PRIu64 "\n"
        "# HELP beava_snapshot_failures_total Snapshots that failed.\n"
        "# TYPE beava_snapshot_failures_total counter\nbeava_snapshot_failures_total %" PRIu64 "\n",
        p->last_duration_s, p->last_pause_s, p->last_bytes, p->last_lsn, p->snapshots_taken, p->snapshot_failures);
    pthread_mutex_unlock(&p->mu);
    bv_buf_printf(out,
        "# HELP beava_wal_durable_lsn Every record at or below this LSN is on disk.\n"
        "# TYPE beava_wal_durable_lsn gauge\nbeava_wal_durable_lsn %" PRIu64 "\n"
        "# HELP beava_wal_fsyncs_total Group-commit fsyncs.\n"
        "# TYPE beava_wal_fsyncs_total counter\nbeava_wal_fsyncs_total %" PRIu64 "\n"
        "# HELP beava_wal_fsync_seconds_total Time spent in group-commit fdatasyncs (divided by the count: the disk's commit latency).\n"
        "# TYPE beava_wal_fsync_seconds_total counter\nbeava_wal_fsync_seconds_total %.6f\n"
        "# HELP beava_wal_sync_batches_total Batches written before their tick because a sync waiter asked.\n"
        "# TYPE beava_wal_sync_batches_total counter\nbeava_wal_sync_batches_total %" PRIu64 "\n"
        "# HELP beava_wal_records_total Records appended since start.\n"
        "# TYPE beava_wal_records_total counter\nbeava_wal_records_total %" PRIu64 "\n"
        "# HELP beava_wal_failed_records_total Records whose write failed (never replayed).\n"
        "# TYPE beava_wal_failed_records_total counter\nbeava_wal_failed_records_total %" PRIu64 "\n"
        "# HELP beava_wal_segments WAL segment files on disk.\n"
        "# TYPE beava_wal_segments gauge\nbeava_wal_segments %" PRIu64 "\n"
        "# HELP beava_wal_degraded 1 while WAL writes fail.\n"
        "# TYPE beava_wal_degraded gauge\nbeava_wal_degraded %d\n"
        "# HELP beava_wal_retained_records Acknowledged records whose write failed, held to be written again.\n"
        "# TYPE beava_wal_retained_records gauge\nbeava_wal_retained_records %" PRIu64 "\n"
        "# HELP beava_recovery_truncated_bytes Torn-tail bytes cut at the last recovery.\n"
        "# TYPE beava_recovery_truncated_bytes gauge\nbeava_recovery_truncated_bytes %" PRIu64 "\n"
        "# HELP beava_recovery_quarantined_records Corrupt WAL regions quarantined at the last recovery.\n"
        "# TYPE beava_recovery_quarantined_records gauge\nbeava_recovery_quarantined_records %" PRIu64 "\n"
        "# HELP beava_recovery_replayed_records WAL records replayed at the last recovery.\n"
        "# TYPE beava_recovery_replayed_records gauge\nbeava_recovery_replayed_records %" PRIu64 "\n"
        "# HELP beava_recovery_replay_errors Records that verified but did not apply at the last recovery.\n"
        "# TYPE beava_recovery_replay_errors gauge\nbeava_recovery_replay_errors %" PRIu64 "\n"
        "# HELP beava_recovery_snapshots_rejected Newer snapshots rejected at the last recovery.\n"
        "# TYPE beava_recovery_snapshots_rejected gauge\nbeava_recovery_snapshots_rejected %u\n"
        "# HELP beava_recovery_lost_lsns LSNs above the loaded snapshot that were missing or corrupt at the last recovery.\n"
        "# TYPE beava_recovery_lost_lsns gauge\nbeava_recovery_lost_lsns %" PRIu64 "\n"
        "# HELP beava_recovery_accepted_data_loss 1 when the last recovery started past missing LSNs (--accept-data-loss).\n"
        "# TYPE beava_recovery_accepted_data_loss gauge\nbeava_recovery_accepted_data_loss %d\n",
        ws.durable_lsn, ws.fsyncs, (double)ws.fsync_ns / 1e9, ws.sync_batches, ws.appended_records, ws.failed_records, ws.segments, ws.degraded ? 1 : 0,
        ws.retained_records, p->rec.truncated_bytes, p->rec.quarantined_regions, p->rec.replayed, p->replay_errors, p->snap_load.rejected,
        p->rec.lost_lsns, p->accepted_data_loss ? 1 : 0);
}

void persist_close(persist *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->thread_started) pthread_join(p->thread, NULL);
    bv_err e;
    bv_err_clear(&e);
    if (p->eng && p->thread_started) {
        char err[256];
        pthread_mutex_lock(&p->mu);
        snapshot_locked(p, true, NULL, err, sizeof err);   /* final snapshot, in process */
        pthread_mutex_unlock(&p->mu);
    }
    if (wal_close(p->w, &e) != 0) bv_log_msg(p->log, LOG_ERROR, "storage.wal_close_failed", "%s", e.reason);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
