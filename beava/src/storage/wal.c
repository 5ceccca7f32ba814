/*
 * wal.c - the write-ahead log (contract and failure semantics in wal.h).
 *
 * FILES
 *   <dir>/LOCK                       flock(LOCK_EX|LOCK_NB) for the life of the handle;
 *                                    holds the holder's PID as text
 *   <wal_dir>/<16 hex start LSN>.seg segments, sorted by start LSN (fixed-width hex, so
 *                                    name order is LSN order)
 *   <dir>/quarantine/<16 hex segment start>-<16 hex offset>.<why>
 *                                    bytes recovery cut or skipped (why = torn | corrupt |
 *                                    void | header), written and fsynced before the
 *                                    segment is touched
 *
 * SEGMENT HEADER (64 bytes, little-endian)
 *   0  8  magic "BEAVAWAL"          32  8  registry version at creation
 *   8  4  format version (2; 1 read) 40  8  creation time, ms since the epoch
 *  12  4  flags (0)                 48 12  reserved (0)
 *  16  8  start LSN (= file name)   60  4  CRC-32C of bytes 0..59
 *  24  8  prev LSN: the last LSN on disk when the segment was created. Normally
 *         start - 1; smaller when LSNs prev+1 .. start-1 are void (their writes failed,
 *         or a snapshot floor skipped them). Recovery uses it to tell void LSNs from lost
 *         ones, and to refuse replaying records an older segment still holds beyond it.
 *
 * RECORD (17-byte header + payload, little-endian)
 *   0  4  payload length (<= WAL_MAX_PAYLOAD)
 *   4  4  CRC-32C of payload || LSN (8 bytes LE) || kind (1 byte): covers LSN, kind and
 *         payload; the payload comes first so appenders can checksum it before taking
 *         the lock and add the 9 header bytes once the LSN is known
 *   8  8  LSN
 *  16  1  kind (1..255)
 *  17  .  payload
 * Records within one segment have consecutive LSNs starting at its start LSN. The
 * writer never writes anything else into a segment (no padding, no preallocation).
 *
 * WRITER
 * With wal_options.background (batch durability: no client waits for it) the writer
 * thread runs as SCHED_BATCH, so that its wake-ups do not preempt the I/O threads.
 * Appenders serialise records into `pend` under `mu`. The writer thread swaps `pend`
 * with `inflight` (double buffering: appends continue while it writes), pwrite()s the
 * batch at the durable end of the active segment, fdatasync()s, and publishes the batch's
 * last LSN as durable. A batch is written tick_ms after its first record arrived, at
 * once when it reaches batch_bytes, or at once when a thread is blocked in
 * wal_wait_durable() for one of its records (`sync_want`): an idle writer never makes a
 * sync waiter wait for the tick. Group commit still happens: while one batch is being
 * written and fdatasync()ed, every record appended meanwhile gathers in `pend`, and the
 * next batch takes all of them, so one fsync covers every record (and every waiter) that
 * arrived during the previous one.
 * With wal_options.all_waited (sync durability: a client waits for every record) it writes
 * without the tick, and gathers: a closed loop of N clients sends its next records when
 * the previous batch answers them, and an fdatasync started for the first of them would
 * make the others wait a whole second one. So when a batch settles with fewer records
 * waiting than it answered, the next one waits until it holds as many records as the
 * clients that batch answered plus those already waiting (group_target), or for at most
 * half an average fdatasync (group_due), whichever comes first; the append that reaches
 * the target wakes the writer. One client alone goes at once (target 1), and so does a
 * stream that keeps up (as many waiting as were answered).
 * After a write or fsync error the writer "settles" (truncate back to the
 * durable offset + fsync), then probes by creating the next segment (see wal.h).
 *
 * A failed rotation whose half-made file cannot even be removed leaves a "stray" segment
 * named disk_lsn+1; from then on no record goes into the current segment (it would lie
 * at or above the stray's start and read as void), the next batch rotates onto the stray
 * or fails.
 *
 * RECOVERY
 * Headers are all read at wal_open, so while scanning segment k we know segment k+1's
 * start (records must be below it) and prev (records above it are void). Within a
 * segment, a record is accepted when its frame fits, its kind is non-zero, its LSN is the
 * next expected one (or later, counting the gap as lost) and its CRC matches. Otherwise
 * we resync: look at every later byte offset for a record whose CRC matches and whose
 * LSN is plausible: records take at least 17 bytes, so after a span of s bytes the next
 * LSN can be at most expected + s/17 (+1 of slack). That bound rejects almost every false
 * start before a CRC is computed. Found: the span is quarantined and skipped. Not found:
 * the rest of the file is a torn tail (newest segment: quarantined and truncated) or a
 * corrupt end (older segment: quarantined, left in place). Between segments, prev and
 * start tell lost LSNs (prev above what was found) from void ones (prev+1 .. start-1).
 * Lost LSNs whose bytes went to quarantine/ are corruption; lost LSNs no file holds at
 * all (before the first segment, between segments, or up to the LSN a snapshot file
 * names) are a gap, which refuses recovery before any repair unless accept_gaps: repairs
 * that delete or cut (a torn tail, a header-torn segment) wait until the scan is over.
 * Valid LSNs are 1..2^62, so no arithmetic on them can overflow.
 *
 * Known imperfections: a corrupt span in an older segment is found again, and counted
 * again, on every boot until a snapshot lets wal_truncate_before() delete the segment
 * (its quarantine file is written once). Void ranges are remembered for the last 64
 * failure episodes of the process (older void LSNs would read as durable in
 * wal_lsn_state; nobody waits that long). Resync is quadratic on adversarial files built
 * to pass the LSN bound at every offset; real damage costs one pass. A segment is
 * mmap()ed whole during recovery (fine on the 64-bit targets).
 */
#include "wal.h"

#include "codec.h"
#include "fsutil.h"

#include "crc32c.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WAL_MAGIC "BEAVAWAL"
#define HDR WAL_SEGMENT_HEADER_BYTES
#define RECH WAL_RECORD_HEADER_BYTES
#define MAX_LSN (UINT64_C(1) << 62) /* valid LSNs are 1..MAX_LSN: keeps every +1 away from overflow */
#define DEFAULT_SEGMENT_BYTES (UINT64_C(64) << 20)
#define DEFAULT_TICK_MS 2u
#define DEFAULT_BATCH_BYTES ((size_t)1 << 20)
#define DEFAULT_PENDING_CAP ((size_t)64 << 20)
#define DEFAULT_RETRY_MS 50u
#define RETRY_CAP_MS 1000u
#define VOID_SLOTS 64
#define GROUP_AVG_WEIGHT 8         /* fdatasync time average: the newest counts 1/8 */
#define GROUP_WINDOW_DIV 2         /* gather for at most this fraction of an fdatasync */

enum wal_state { ST_INIT, ST_OK, ST_DEGRADED, ST_BROKEN };

typedef struct seg {
    uint64_t start, prev;
    uint64_t size;
    uint32_t version; /* its header's format version (0: torn) */
    bool torn; /* shorter than a header: only accepted for the newest segment */
} seg;

typedef struct wbuf {
    unsigned char *data;
    size_t len, cap;
} wbuf;

typedef struct lsn_range {
    uint64_t lo, hi;
} lsn_range;

struct wal {
    /* immutable after wal_open */
    char dir[PATH_MAX];
    char wal_dir[PATH_MAX];
    char qdir[PATH_MAX];
    char lock_path[PATH_MAX];
    uint64_t segment_bytes;
    unsigned tick_ms, retry_ms;
    size_t batch_bytes, pending_cap;
    wal_io_fn io;
    void *io_ctx;
    wal_notify_fn notify;
    void *notify_ctx;
    int lock_fd, dir_fd;
    uint64_t known_lsn;        /* an LSN a snapshot file names (wal_options.known_lsn) */
    bool accept_gaps;

    /* the segment list: written by wal_open/wal_recover, then by the writer (rotation,
     * probe) and wal_truncate_before, all under seg_mu */
    pthread_mutex_t seg_mu;
    seg *segs;
    size_t nsegs, segs_cap;

    pthread_mutex_t mu;
    pthread_cond_t cv_writer;  /* writer: work arrived / closing */
    pthread_cond_t cv_durable; /* waiters: settled_lsn moved, or the writer stopped */
    pthread_cond_t cv_space;   /* blocked appenders: room, degraded, closing */
    pthread_cond_t cv_idle;    /* wal_close: last user left */
    /* guarded by mu */
    int state;
    bool closing, writer_done, thread_started;
    unsigned users;            /* threads inside wal_append / wal_wait_durable */
    uint64_t next_lsn;
    wbuf pend;
    uint64_t pend_first;
    struct timespec pend_since;
    size_t inflight_bytes;
    uint64_t settled_lsn;      /* every LSN <= this is durable or void */
    uint64_t sync_want;        /* highest LSN a wal_wait_durable() caller asked for: while
                                * above settled_lsn, the writer writes without the tick */
    /* sync durability's group commit (see WRITER) */
    uint64_t group_target;     /* records the next batch gathers before it is written */
    struct timespec group_from;/* when the last batch was settled */
    uint64_t fsync_avg_ns;     /* moving average of the fdatasync time: the gather window */
    bool group_wait;           /* the writer gathers: the append reaching the target wakes it */
    lsn_range voids[VOID_SLOTS];
    unsigned nvoid, void_next;
    bool unsettled;            /* a failed batch is not yet truncated away durably */
    bool keep_failed;          /* wal_options.keep_failed (cleared only for one OOM fallback) */
    bool background;           /* wal_options.background: the writer runs as SCHED_BATCH */
    bool all_waited;           /* wal_options.all_waited: group commit without the tick */
    bool retained;             /* keep_failed: pend holds the failed records, from
                                * pend_first on, to be written again */
    bool final_tried;          /* closing: the last write of the retained records was tried */
    uint64_t fail_lo, fail_hi;
    unsigned retry_delay;
    struct timespec next_retry, probe_at, next_rotate;
    uint64_t registry_version;
    bool close_failed;
    char close_error[256];
    wal_stats st;

    _Atomic uint64_t durable_pub; /* = settled_lsn, readable without mu */
    _Atomic uint64_t void_max;    /* highest void LSN ever (0 = none) */

    /* writer-owned once the thread runs (wal_recover before that) */
    int seg_fd;
    uint64_t seg_off, seg_start;
    uint64_t disk_lsn;         /* highest LSN actually on disk: prev of the next segment */
    bool stray;                /* a failed rotation left segment disk_lsn+1 behind: no more
                                * records may go into the current segment */
    wbuf inflight;
    pthread_t thread;
};

/* ---- small helpers ------------------------------------------------------------------ */


static struct timespec mono_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}
static struct timespec ts_add_ns(struct timespec t, uint64_t ns) {
    t.tv_sec += (time_t)(ns / 1000000000u);
    t.tv_nsec += (long)(ns % 1000000000u);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}
static struct timespec ts_add_ms(struct timespec t, unsigned ms) { return ts_add_ns(t, (uint64_t)ms * 1000000u); }
static bool ts_before(struct timespec a, struct timespec b) {
    return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}
static uint64_t wall_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static int cond_init_mono(pthread_cond_t *c) {
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0) return -1;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc == 0 ? 0 : -1;
}

/* snprintf for messages and short paths: truncation is acceptable (and lengths of the
 * paths were checked in wal_open), so keep it out of -Wformat-truncation's sight. */
static void msgf(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msgf(char *dst, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

static void seg_path(const wal *w, uint64_t start, char *out, size_t n) {
    snprintf(out, n, "%s/%016" PRIx64 ".seg", w->wal_dir, start);
}


static int fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* ---- I/O through the test hook ------------------------------------------------------ */

static int io_pwrite_all(wal *w, int fd, const void *buf, size_t len, uint64_t off) {
    const unsigned char *p = buf;
    while (len) {
        ssize_t n = w->io ? w->io(w->io_ctx, WAL_IO_WRITE, fd, p, len, (off_t)off)
                          : pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int io_unlink(wal *w, const char *path) {
    if (w->io) return w->io(w->io_ctx, WAL_IO_UNLINK, -1, path, strlen(path), 0) < 0 ? -1 : 0;
    return unlink(path);
}

/* fdatasync for files, fsync for directories. No retry on failure: after a failed fsync
 * the kernel may have dropped the dirty pages, so the caller rewrites from memory. */
static int io_sync(wal *w, int fd, bool is_dir) {
    if (w->io) return w->io(w->io_ctx, WAL_IO_SYNC, fd, NULL, 0, 0) < 0 ? -1 : 0;
    return (is_dir ? fsync(fd) : fdatasync(fd)) < 0 ? -1 : 0;
}

/* ---- segment headers ---------------------------------------------------------------- */

typedef struct seg_header {
    uint32_t version, flags;
    uint64_t start, prev, registry_version, created_ms;
} seg_header;

static void hdr_encode(unsigned char b[HDR], const seg_header *h) {
    memset(b, 0, HDR);
    memcpy(b, WAL_MAGIC, 8);
    codec_put32(b + 8, h->version);
    codec_put32(b + 12, h->flags);
    codec_put64(b + 16, h->start);
    codec_put64(b + 24, h->prev);
    codec_put64(b + 32, h->registry_version);
    codec_put64(b + 40, h->created_ms);
    codec_put32(b + 60, crc32c(b, 60));
}

/* Validate a header read from the segment named `name_lsn`. Returns NULL or a
 * description of the problem (static text, or written into why). */
static const char *hdr_check(const unsigned char b[HDR], uint64_t name_lsn, seg_header *h, char *why,
                             size_t n) {
    if (memcmp(b, WAL_MAGIC, 8) != 0) return "bad magic (not a beava WAL segment)";
    h->version = codec_get32(b + 8);
    h->flags = codec_get32(b + 12);
    h->start = codec_get64(b + 16);
    h->prev = codec_get64(b + 24);
    h->registry_version = codec_get64(b + 32);
    h->created_ms = codec_get64(b + 40);
    if (h->version > WAL_FORMAT_VERSION) {
        msgf(why, n, "written by a newer WAL format version %" PRIu32 " (this build reads version %d)",
                 h->version, WAL_FORMAT_VERSION);
        return why;
    }
    if (h->version < WAL_FORMAT_OLDEST) {
        msgf(why, n, "unsupported WAL format version %" PRIu32, h->version);
        return why;
    }
    if (codec_get32(b + 60) != crc32c(b, 60)) return "segment header CRC mismatch";
    if (h->start != name_lsn) {
        msgf(why, n, "header start LSN %" PRIu64 " does not match the file name", h->start);
        return why;
    }
    if (h->start == 0 || h->start > MAX_LSN || h->prev >= h->start) {
        msgf(why, n, "inconsistent header (start LSN %" PRIu64 ", prev LSN %" PRIu64 ")", h->start, h->prev);
        return why;
    }
    return NULL;
}

/* Create (or, if a record-less leftover of ours is in the way, recreate) the segment
 * starting at `start`, write and fsync its header, fsync the directory. On failure the
 * file is removed and `why` says what failed; if even the removal failed, *stray is set
 * (the caller must then not write records past `start - 1` anywhere else, see
 * flush_batch). */
static int seg_create(wal *w, uint64_t start, uint64_t prev, uint64_t regver, int *out, bool *stray, char *why,
                      size_t n) {
    *stray = false;
    char path[PATH_MAX + 32];
    seg_path(w, start, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST) {
        /* Only a leftover of a failed creation (no complete header, or header only: no
         * records) may be reused; anything else is somebody's data. */
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
            struct stat sb;
            unsigned char b[8];
            ssize_t got = -1;
            if (fstat(fd, &sb) == 0 && sb.st_size <= HDR) got = pread(fd, b, sizeof b, 0);
            if (got < 0 || (got > 0 && memcmp(b, WAL_MAGIC, (size_t)got) != 0) || ftruncate(fd, 0) != 0) {
                close(fd);
                msgf(why, n, "create %s: file exists and is not an empty segment", path);
                return -1;
            }
        }
    }
    if (fd < 0) {
        msgf(why, n, "create %s: %s", path, strerror(errno));
        return -1;
    }
    seg_header h = {.version = WAL_FORMAT_VERSION, .start = start, .prev = prev,
                    .registry_version = regver, .created_ms = wall_ms()};
    unsigned char b[HDR];
    hdr_encode(b, &h);
    const char *what = NULL;
    if (io_pwrite_all(w, fd, b, HDR, 0) < 0) what = "write header of";
    else if (io_sync(w, fd, false) < 0) what = "fsync";
    else if (io_sync(w, w->dir_fd, true) < 0) what = "fsync directory of";
    if (what) {
        int e = errno;
        close(fd);
        if (io_unlink(w, path) != 0 && errno != ENOENT) *stray = true;
        msgf(why, n, "%s %s: %s", what, path, strerror(e));
        return -1;
    }
    *out = fd;
    return 0;
}

/* ---- the segment list --------------------------------------------------------------- */

static int segs_push(wal *w, uint64_t start, uint64_t prev, uint64_t size) {
    if (w->nsegs == w->segs_cap) {
        size_t cap = w->segs_cap ? w->segs_cap * 2 : 16;
        seg *p = realloc(w->segs, cap * sizeof *p);
        if (!p) return -1;
        w->segs = p;
        w->segs_cap = cap;
    }
    w->segs[w->nsegs++] = (seg){.start = start, .prev = prev, .size = size, .version = WAL_FORMAT_VERSION};
    return 0;
}

static void segs_remove(wal *w, uint64_t start) {
    for (size_t i = 0; i < w->nsegs; i++) {
        if (w->segs[i].start != start) continue;
        memmove(&w->segs[i], &w->segs[i + 1], (w->nsegs - i - 1) * sizeof *w->segs);
        w->nsegs--;
        return;
    }
}

static int seg_cmp(const void *a, const void *b) {
    uint64_t x = ((const seg *)a)->start, y = ((const seg *)b)->start;
    return x < y ? -1 : x > y;
}

/* "<16 lowercase hex>.seg" -> LSN. */
static bool seg_name_lsn(const char *name, uint64_t *lsn) {
    if (strlen(name) != 20 || strcmp(name + 16, ".seg") != 0) return false;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v = (v << 4) | (uint64_t)d;
    }
    *lsn = v;
    return true;
}

/* ---- the lock ----------------------------------------------------------------------- */

static int lock_take(wal *w, bv_err *err) {
    int fd = open(w->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        bv_err_set(err, "wal_io", w->lock_path, "cannot open lock file %s: %s", w->lock_path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            char pid[32] = {0};
            ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
            size_t k = 0;
            while (n > 0 && k < (size_t)n && pid[k] >= '0' && pid[k] <= '9') k++;
            pid[k] = 0;
            bv_err_set(err, "wal_locked", w->lock_path,
                       "data dir %s is in use: %s is locked by another process (pid %s); only one "
                       "beava may open a data dir",
                       w->dir, w->lock_path, k ? pid : "unknown");
        } else {
            bv_err_set(err, "wal_io", w->lock_path, "flock %s: %s", w->lock_path, strerror(e));
        }
        close(fd);
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        bv_err_set(err, "wal_io", w->lock_path, "cannot write pid to %s: %s", w->lock_path, strerror(errno));
        close(fd);
        return -1;
    }
    w->lock_fd = fd;
    return 0;
}

/* ---- wal_open ----------------------------------------------------------------------- */

/* Read and validate every segment header. Nothing is modified here. */
static int segs_load(wal *w, bv_err *err) {
    DIR *d = opendir(w->wal_dir);
    if (!d) {
        bv_err_set(err, "wal_io", w->wal_dir, "cannot list %s: %s", w->wal_dir, strerror(errno));
        return -1;
    }
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        uint64_t lsn;
        if (!seg_name_lsn(de->d_name, &lsn)) continue;
        if (segs_push(w, lsn, 0, 0) != 0) {
            bv_err_set(err, "wal_io", w->wal_dir, "out of memory listing segments");
            rc = -1;
            break;
        }
    }
    closedir(d);
    if (rc) return rc;
    if (w->nsegs) qsort(w->segs, w->nsegs, sizeof *w->segs, seg_cmp);

    for (size_t i = 0; i < w->nsegs; i++) {
        seg *s = &w->segs[i];
        char path[PATH_MAX + 32], why[160];
        seg_path(w, s->start, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0) {
            bv_err_set(err, "wal_io", path, "cannot open WAL segment %s: %s", path, strerror(errno));
            if (fd >= 0) close(fd);
            return -1;
        }
        unsigned char b[HDR];
        ssize_t got = pread(fd, b, HDR, 0);
        int e = errno;
        close(fd);
        if (got < 0) {
            bv_err_set(err, "wal_io", path, "cannot read WAL segment %s: %s", path, strerror(e));
            return -1;
        }
        s->size = (uint64_t)sb.st_size;
        const char *bad = NULL;
        if (got < HDR) {
            /* A crash while a segment was being created (or a failed creation whose file
             * could not be removed) leaves it empty or with a partial header of ours. It
             * cannot hold records: recovery quarantines and removes it. */
            if (memcmp(b, WAL_MAGIC, (size_t)(got < 8 ? got : 8)) == 0) {
                s->torn = true;
                continue;
            }
            bad = "bad magic (not a beava WAL segment)";
        } else {
            seg_header h = {0};
            bad = hdr_check(b, s->start, &h, why, sizeof why);
            s->prev = h.prev;
            s->version = h.version;
        }
        if (bad) {
            bv_err_set(err, "wal_refused", path,
                       "refusing WAL segment %s: %s; the file was left untouched (move it out of "
                       "the WAL directory, or run the beava version that wrote it)",
                       path, bad);
            return -1;
        }
    }
    return 0;
}

int wal_open(const wal_options *opt, wal **out, bv_err *err) {
    *out = NULL;
    if (!opt || !opt->dir || !opt->dir[0]) {
        bv_err_set(err, "invalid_argument", "", "wal_open: no data dir");
        return -1;
    }
    wal *w = calloc(1, sizeof *w);
    if (!w) {
        bv_err_set(err, "wal_io", opt->dir, "out of memory");
        return -1;
    }
    w->lock_fd = w->dir_fd = w->seg_fd = -1;
    bool mu_ok = false;
    const char *wd = opt->wal_dir && opt->wal_dir[0] ? opt->wal_dir : NULL;
    if ((size_t)snprintf(w->dir, sizeof w->dir, "%s", opt->dir) >= sizeof w->dir - 64 ||
        (wd ? (size_t)snprintf(w->wal_dir, sizeof w->wal_dir, "%s", wd)
            : (size_t)snprintf(w->wal_dir, sizeof w->wal_dir, "%s/wal", opt->dir)) >= sizeof w->wal_dir - 64) {
        bv_err_set(err, "invalid_argument", opt->dir, "data dir path too long");
        goto fail;
    }
    msgf(w->qdir, sizeof w->qdir, "%s/quarantine", w->dir);
    msgf(w->lock_path, sizeof w->lock_path, "%s/LOCK", w->dir);
    w->segment_bytes = opt->segment_bytes ? opt->segment_bytes : DEFAULT_SEGMENT_BYTES;
    w->tick_ms = opt->tick_ms ? opt->tick_ms : DEFAULT_TICK_MS;
    w->batch_bytes = opt->batch_bytes ? opt->batch_bytes : DEFAULT_BATCH_BYTES;
    w->pending_cap = opt->pending_cap ? opt->pending_cap : DEFAULT_PENDING_CAP;
    if (w->pending_cap < 2 * ((size_t)WAL_MAX_PAYLOAD + RECH)) w->pending_cap = 2 * ((size_t)WAL_MAX_PAYLOAD + RECH);
    w->retry_ms = opt->retry_ms ? opt->retry_ms : DEFAULT_RETRY_MS;
    w->retry_delay = w->retry_ms;
    w->registry_version = opt->registry_version;
    w->known_lsn = opt->known_lsn;
    w->keep_failed = opt->keep_failed;
    w->background = opt->background;
    w->all_waited = opt->all_waited;
    w->accept_gaps = opt->accept_gaps;
    w->io = opt->io_hook;
    w->io_ctx = opt->io_ctx;
    w->notify = opt->notify;
    w->notify_ctx = opt->notify_ctx;

    if (pthread_mutex_init(&w->mu, NULL) != 0 || pthread_mutex_init(&w->seg_mu, NULL) != 0 ||
        cond_init_mono(&w->cv_writer) || cond_init_mono(&w->cv_durable) || cond_init_mono(&w->cv_space) ||
        cond_init_mono(&w->cv_idle)) {
        /* Linux never fails these for default attributes; not worth unwinding half. */
        bv_err_set(err, "wal_io", w->dir, "cannot initialise WAL mutexes");
        free(w);
        return -1;
    }
    mu_ok = true;

    if (bv_mkdir_p(w->dir, NULL) != 0) {
        bv_err_set(err, "wal_io", w->dir, "cannot create data dir %s: %s", w->dir, strerror(errno));
        goto fail;
    }
    if (lock_take(w, err) != 0) goto fail;
    if (bv_mkdir_p(w->wal_dir, NULL) != 0) {
        bv_err_set(err, "wal_io", w->wal_dir, "cannot create WAL dir %s: %s", w->wal_dir, strerror(errno));
        goto fail;
    }
    w->dir_fd = open(w->wal_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dir_fd < 0) {
        bv_err_set(err, "wal_io", w->wal_dir, "cannot open WAL dir %s: %s", w->wal_dir, strerror(errno));
        goto fail;
    }
    if (segs_load(w, err) != 0) goto fail;
    w->state = ST_INIT;
    *out = w;
    return 0;

fail:
    if (w->dir_fd >= 0) close(w->dir_fd);
    if (w->lock_fd >= 0) close(w->lock_fd);
    if (mu_ok) {
        pthread_mutex_destroy(&w->mu);
        pthread_mutex_destroy(&w->seg_mu);
        pthread_cond_destroy(&w->cv_writer);
        pthread_cond_destroy(&w->cv_durable);
        pthread_cond_destroy(&w->cv_space);
        pthread_cond_destroy(&w->cv_idle);
    }
    free(w->segs);
    free(w);
    return -1;
}

/* ---- recovery ----------------------------------------------------------------------- */

/* Copy `len` bytes to quarantine/<seg>-<off>.<why>, durably, before the caller cuts them.
 * A file already holding exactly these bytes (an earlier boot quarantined the same
 * span) is kept as is. */
static int quarantine(wal *w, uint64_t seg_start, uint64_t off, const char *why, const void *data, size_t len,
                      bv_err *err) {
    char base[PATH_MAX + 64], path[PATH_MAX + 80], tmp[PATH_MAX + 96];
    struct stat sb;
    bool created = stat(w->qdir, &sb) != 0;
    if (bv_mkdir_p(w->qdir, NULL) != 0) {
        bv_err_set(err, "wal_io", w->qdir, "cannot create %s: %s", w->qdir, strerror(errno));
        return -1;
    }
    if (created && fsync_path(w->dir) != 0) {
        bv_err_set(err, "wal_io", w->dir, "fsync %s: %s", w->dir, strerror(errno));
        return -1;
    }
    snprintf(base, sizeof base, "%s/%016" PRIx64 "-%016" PRIx64 ".%s", w->qdir, seg_start, off, why);
    unsigned char *cmp = NULL;
    int rc = -1;
    for (int i = 0; i < 100; i++) {
        if (i == 0) snprintf(path, sizeof path, "%s", base);
        else snprintf(path, sizeof path, "%s.%d", base, i);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            bool same = false;
            if (fstat(fd, &sb) == 0 && (uint64_t)sb.st_size == len) {
                if (!cmp && len) cmp = malloc(len);
                same = len == 0 || (cmp && pread(fd, cmp, len, 0) == (ssize_t)len && memcmp(cmp, data, len) == 0);
            }
            close(fd);
            if (same) {
                rc = 0;
                goto out;
            }
            continue;
        }
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            bv_err_set(err, "wal_io", tmp, "cannot create quarantine file %s: %s", tmp, strerror(errno));
            goto out;
        }
        const unsigned char *p = data;
        size_t left = len;
        while (left) {
            ssize_t n = write(fd, p, left);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            p += n;
            left -= (size_t)n;
        }
        if (left || fsync(fd) != 0) {
            int e = left && errno == 0 ? EIO : errno;
            close(fd);
            unlink(tmp);
            bv_err_set(err, "wal_io", tmp, "cannot write quarantine file %s: %s", tmp, strerror(e));
            goto out;
        }
        close(fd);
        if (rename(tmp, path) != 0 || fsync_path(w->qdir) != 0) {
            bv_err_set(err, "wal_io", path, "cannot commit quarantine file %s: %s", path, strerror(errno));
            unlink(tmp);
            goto out;
        }
        rc = 0;
        goto out;
    }
    bv_err_set(err, "wal_io", base, "too many different quarantine files named %s", base);
out:
    free(cmp);
    return rc;
}

typedef struct rec_view {
    uint64_t lsn;
    uint8_t kind;
    uint32_t len;
    const unsigned char *payload;
    size_t total;
} rec_view;

/* A complete, CRC-valid record at pos with lo <= LSN <= hi. The cheap checks come
 * first so that resync rarely computes a CRC. */
static bool rec_parse(const unsigned char *m, size_t size, size_t pos, uint64_t lo, uint64_t hi, rec_view *r) {
    if (pos > size || size - pos < RECH) return false;
    const unsigned char *p = m + pos;
    uint32_t len = codec_get32(p);
    if (len > WAL_MAX_PAYLOAD || (size_t)len > size - pos - RECH) return false;
    uint64_t lsn = codec_get64(p + 8);
    if (lsn < lo || lsn > hi || p[16] == 0) return false;
    uint32_t crc = crc32c_extend(crc32c(p + RECH, len), p + 8, 9);
    if (crc != codec_get32(p + 4)) return false;
    r->lsn = lsn;
    r->kind = p[16];
    r->len = len;
    r->payload = p + RECH;
    r->total = RECH + (size_t)len;
    return true;
}

/* The next offset after pos holding a plausible record, or 0. */
static size_t resync(const unsigned char *m, size_t size, size_t pos, uint64_t expected, uint64_t hi, rec_view *r) {
    for (size_t q = pos + 1; q < size && size - q >= RECH; q++) {
        uint64_t bound = expected + (q - pos) / RECH + 1;
        if (bound > hi) bound = hi;
        if (rec_parse(m, size, q, expected, bound, r)) return q;
    }
    return 0;
}

typedef struct scan_ctx {
    wal_recovery_stats *st;
    uint64_t from_lsn;
    wal_replay_fn cb;
    void *ctx;
    bool skipped;  /* bytes were quarantined since the last accepted record */
    seg *tail;     /* the newest segment has a torn tail from tail_pos on */
    size_t tail_pos;
    uint64_t last; /* last LSN accepted in the current segment, 0 if none */
} scan_ctx;

/* LSNs lo..hi should be on disk and are not. Only those above the snapshot floor are
 * lost (the snapshot holds the others). When the bytes where they were are in
 * quarantine/ it is corruption; when nothing at all holds them (a missing or cut segment
 * file, no snapshot covering them) it is a gap, which wal_recover refuses unless told
 * otherwise. after/before: start LSNs of the segments around the hole (0 = none). */
static void note_lost(scan_ctx *sc, uint64_t lo, uint64_t hi, uint64_t after, uint64_t before) {
    if (lo <= sc->from_lsn) lo = sc->from_lsn + 1;
    if (lo > hi) return;
    wal_recovery_stats *st = sc->st;
    st->lost_lsns += hi - lo + 1;
    if (sc->skipped) return;
    st->gap_lsns += hi - lo + 1;
    if (st->ngaps < WAL_GAPS_KEPT) st->gaps[st->ngaps] = (wal_gap){.lo = lo, .hi = hi, .after_seg = after, .before_seg = before};
    st->ngaps++;
}

static int emit(scan_ctx *sc, const rec_view *r, bv_err *err) {
    sc->st->records++;
    if (!sc->st->first_lsn) sc->st->first_lsn = r->lsn;
    sc->st->last_lsn = r->lsn;
    sc->last = r->lsn;
    sc->skipped = false;
    if (!sc->cb || r->lsn <= sc->from_lsn) return 0;
    sc->st->replayed++;
    bv_err e;
    bv_err_clear(&e);
    if (sc->cb(sc->ctx, r->kind, r->lsn, r->payload, r->len, &e) != 0) {
        if (!e.code[0]) bv_err_set(&e, "wal_replay_failed", "", "replay callback failed at LSN %" PRIu64, r->lsn);
        if (err) *err = e;
        return -1;
    }
    return 0;
}

/* Scan one segment: records must lie in [start, upper), those above void_above are void. */
static int scan_segment(wal *w, seg *s, bool newest, uint64_t upper, uint64_t void_above, scan_ctx *sc,
                        bv_err *err) {
    char path[PATH_MAX + 32];
    seg_path(w, s->start, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        bv_err_set(err, "wal_io", path, "cannot open WAL segment %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    s->size = (uint64_t)sb.st_size;
    if (sb.st_size <= HDR) {
        close(fd);
        return 0;
    }
    size_t size = (size_t)sb.st_size;
    unsigned char *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        bv_err_set(err, "wal_io", path, "cannot map WAL segment %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    int rc = -1;
    uint64_t expected = s->start;
    uint64_t hi = upper - 1;
    size_t pos = HDR;
    wal_recovery_stats *st = sc->st;
    while (pos < size) {
        rec_view r;
        if (rec_parse(m, size, pos, expected, hi, &r)) {
            if (r.lsn > expected) note_lost(sc, expected, r.lsn - 1, s->start, s->start);
            if (r.lsn > void_above) {
                /* Reported failed at run time, yet still here (the truncation after the
                 * failure did not reach the disk): must not be replayed. */
                if (quarantine(w, s->start, pos, "void", m + pos, r.total, err) != 0) goto out;
                st->void_records++;
            } else if (emit(sc, &r, err) != 0) {
                goto out;
            }
            expected = r.lsn + 1;
            pos += r.total;
            continue;
        }
        size_t q = resync(m, size, pos, expected, hi, &r);
        sc->skipped = true;
        if (q) {
            if (quarantine(w, s->start, pos, "corrupt", m + pos, q - pos, err) != 0) goto out;
            st->quarantined_regions++;
            st->quarantined_bytes += q - pos;
            pos = q;
            continue;
        }
        if (!newest) {
            if (quarantine(w, s->start, pos, "corrupt", m + pos, size - pos, err) != 0) goto out;
            st->quarantined_regions++;
            st->quarantined_bytes += size - pos;
            break;
        }
        /* A torn tail: cut once recovery is sure to go on (cut_torn_tail). */
        st->truncated_bytes += size - pos;
        sc->tail = s;
        sc->tail_pos = pos;
        break;
    }
    rc = 0;
out:
    if (m) munmap(m, size);
    close(fd);
    return rc;
}

/* Scan every segment in LSN order (see the RECOVERY notes at the top). On return *F:
 * every LSN <= F is accounted for (found, lost or void); *D: the highest LSN that was
 * ever on disk as far as the files tell (records found, prev claims). */
static int scan_all(wal *w, scan_ctx *sc, uint64_t *Fp, uint64_t *Dp, bv_err *err) {
    wal_recovery_stats *st = sc->st;
    uint64_t F = 0, D = 0, prev_start = 0;
    for (size_t k = 0; k < w->nsegs; k++) {
        seg *s = &w->segs[k];
        if (s->torn) continue;   /* no records; removed after the scan */
        /* LSNs up to prev were on disk before this segment was created: an earlier
         * segment (or a snapshot) must hold them. Before the first segment nothing does. */
        if (s->prev > F) {
            note_lost(sc, F + 1, s->prev, prev_start, s->start);
            F = s->prev;
        }
        if (s->start - 1 > F) {
            if (prev_start) st->void_lsns += s->start - 1 - F;
            F = s->start - 1;
        }
        if (s->prev > D) D = s->prev;
        size_t nx = k + 1;
        while (nx < w->nsegs && w->segs[nx].torn) nx++;
        bool newest = nx == w->nsegs;
        uint64_t upper = newest ? MAX_LSN + 1 : w->segs[nx].start;
        uint64_t void_above = newest ? UINT64_MAX : w->segs[nx].prev;
        sc->last = 0;
        st->segments++;
        if (scan_segment(w, s, newest, upper, void_above, sc, err) != 0) return -1;
        if (sc->last) {
            F = sc->last;
            if (sc->last > D) D = sc->last;
        }
        prev_start = s->start;
    }
    /* A snapshot file names an LSN the WAL no longer reaches (the snapshot itself is
     * unusable, or the caller would have passed its LSN as the floor). */
    if (w->known_lsn > F && w->known_lsn <= MAX_LSN) note_lost(sc, F + 1, w->known_lsn, prev_start, 0);
    *Fp = F;
    *Dp = D;
    return 0;
}

static void gap_error(const wal *w, const wal_recovery_stats *st, bv_err *err) {
    char ranges[768];
    size_t n = 0;
    ranges[0] = 0;
    for (uint32_t i = 0; i < st->ngaps && i < WAL_GAPS_KEPT && n + 1 < sizeof ranges; i++) {
        const wal_gap *g = &st->gaps[i];
        char where[160];
        if (g->after_seg && g->after_seg == g->before_seg)
            msgf(where, sizeof where, "missing inside %016" PRIx64 ".seg", g->after_seg);
        else if (g->before_seg && !g->after_seg)
            msgf(where, sizeof where, "expected in segment files before %016" PRIx64 ".seg, starting with %016" PRIx64 ".seg",
                 g->before_seg, g->lo);
        else if (g->before_seg)
            msgf(where, sizeof where, "expected in a segment file %016" PRIx64 ".seg between %016" PRIx64 ".seg and %016" PRIx64 ".seg",
                 g->lo, g->after_seg, g->before_seg);
        else if (g->after_seg)
            msgf(where, sizeof where, "named by a snapshot file; the WAL ends in %016" PRIx64 ".seg", g->after_seg);
        else
            msgf(where, sizeof where, "named by a snapshot file; expected in segment files starting with %016" PRIx64 ".seg",
                 g->lo);
        int k = snprintf(ranges + n, sizeof ranges - n, "%sLSN %" PRIu64 "..%" PRIu64 " (%s)", i ? ", " : "", g->lo, g->hi,
                         where);
        if (k < 0) break;
        n += (size_t)k < sizeof ranges - n ? (size_t)k : sizeof ranges - n - 1;
    }
    bv_err_set(err, "wal_gap", w->wal_dir, "%" PRIu64 " LSNs are missing from the WAL in %s: %s%s", st->gap_lsns,
               w->wal_dir, ranges, st->ngaps > WAL_GAPS_KEPT ? ", ..." : "");
}

/* Quarantine the torn tail of segment s (bytes from pos on), then truncate it there. */
static int cut_torn_tail(wal *w, seg *s, size_t pos, bv_err *err) {
    char path[PATH_MAX + 32];
    seg_path(w, s->start, path, sizeof path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || (uint64_t)sb.st_size < pos) {
        bv_err_set(err, "wal_io", path, "cannot reopen WAL segment %s: %s", path, fd < 0 ? strerror(errno) : "changed size");
        if (fd >= 0) close(fd);
        return -1;
    }
    size_t len = (size_t)sb.st_size - pos;
    unsigned char *b = malloc(len ? len : 1);
    int rc = -1;
    if (!b || pread(fd, b, len, (off_t)pos) != (ssize_t)len) {
        bv_err_set(err, "wal_io", path, "cannot read the torn tail of %s: %s", path, b ? strerror(errno) : "out of memory");
        goto out;
    }
    if (quarantine(w, s->start, pos, "torn", b, len, err) != 0) goto out;
    if (ftruncate(fd, (off_t)pos) != 0 || fdatasync(fd) != 0) {
        bv_err_set(err, "wal_io", path, "cannot truncate torn tail of %s at %zu: %s", path, pos, strerror(errno));
        goto out;
    }
    s->size = pos;
    rc = 0;
out:
    free(b);
    close(fd);
    return rc;
}

static void *writer_main(void *arg);

int wal_recover(wal *w, uint64_t from_lsn, wal_replay_fn cb, void *ctx, wal_recovery_stats *stats,
                bv_err *err) {
    wal_recovery_stats local;
    wal_recovery_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    if (w->state != ST_INIT) {
        bv_err_set(err, "invalid_argument", w->wal_dir, "wal_recover: already called");
        return -1;
    }
    if (from_lsn >= MAX_LSN) {
        bv_err_set(err, "invalid_argument", w->wal_dir, "wal_recover: from_lsn %" PRIu64 " out of range", from_lsn);
        return -1;
    }
    w->state = ST_BROKEN; /* until we get to the end */
    char path[PATH_MAX + 32], why[256];

    uint64_t F = 0, D = 0;
    scan_ctx sc = {.st = st, .from_lsn = from_lsn, .cb = cb, .ctx = ctx};
    if (scan_all(w, &sc, &F, &D, err) != 0) return -1;
    if (st->gap_lsns && !w->accept_gaps) {
        gap_error(w, st, err);
        return -1;
    }
    /* Past the point of refusal: the repairs the scan left for now. */
    if (sc.tail && cut_torn_tail(w, sc.tail, sc.tail_pos, err) != 0) return -1;

    /* A segment torn inside its header holds no records: keep its bytes, drop it. */
    for (size_t i = w->nsegs; i-- > 0;) {
        seg *s = &w->segs[i];
        if (!s->torn) continue;
        seg_path(w, s->start, path, sizeof path);
        unsigned char b[HDR];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t got = fd >= 0 ? pread(fd, b, HDR, 0) : -1;
        if (fd >= 0) close(fd);
        if (got < 0) {
            bv_err_set(err, "wal_io", path, "cannot read %s: %s", path, strerror(errno));
            return -1;
        }
        if (got > 0 && quarantine(w, s->start, 0, "header", b, (size_t)got, err) != 0) return -1;
        if (unlink(path) != 0 || fsync(w->dir_fd) != 0) {
            bv_err_set(err, "wal_io", path, "cannot remove torn segment %s: %s", path, strerror(errno));
            return -1;
        }
        st->torn_segments++;
        segs_remove(w, s->start);
    }

    uint64_t next = F + 1;
    if (from_lsn + 1 > next) next = from_lsn + 1;
    if (next > MAX_LSN) {
        bv_err_set(err, "wal_refused", w->wal_dir, "WAL LSN space exhausted (next LSN %" PRIu64 ")", next);
        return -1;
    }
    seg *newest = w->nsegs ? &w->segs[w->nsegs - 1] : NULL;
    /* an empty segment at the next LSN is reused, unless an older format's header says
     * it holds only what that format wrote: then its header is rewritten (seg_create
     * reuses a header-only file) */
    if (newest && newest->size == HDR && newest->start == next && newest->version == WAL_FORMAT_VERSION) {
        seg_path(w, newest->start, path, sizeof path);
        w->seg_fd = open(path, O_RDWR | O_CLOEXEC);
        if (w->seg_fd < 0) {
            bv_err_set(err, "wal_io", path, "cannot open %s: %s", path, strerror(errno));
            return -1;
        }
        w->seg_start = newest->start;
        st->orphan_reused = true;
    } else {
        bool stray;
        if (seg_create(w, next, D, w->registry_version, &w->seg_fd, &stray, why, sizeof why) != 0) {
            bv_err_set(err, "wal_io", w->wal_dir, "%s", why);
            return -1;
        }
        w->seg_start = next;
        if (newest && newest->size == HDR && newest->start == next) {
            segs_remove(w, next);         /* the older format's empty segment, rewritten */
        } else if (newest && newest->size == HDR) {
            /* An empty segment below the LSN floor: the new header covers it. */
            uint64_t old = newest->start;
            seg_path(w, old, path, sizeof path);
            if (unlink(path) == 0) {
                segs_remove(w, old);
                fsync(w->dir_fd);
            }
        }
        if (segs_push(w, next, D, HDR) != 0) {
            bv_err_set(err, "wal_io", w->wal_dir, "out of memory");
            return -1;
        }
    }
    w->seg_off = HDR;
    w->disk_lsn = D;
    w->next_lsn = next;
    w->settled_lsn = next - 1;
    atomic_store(&w->durable_pub, next - 1);
    st->next_lsn = next;

    w->state = ST_OK;
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        w->state = ST_BROKEN;
        bv_err_set(err, "wal_io", w->wal_dir, "cannot start the WAL writer thread");
        return -1;
    }
    w->thread_started = true;
    return 0;
}

/* ---- the writer thread -------------------------------------------------------------- */

static void void_add(wal *w, uint64_t lo, uint64_t hi) {
    w->voids[w->void_next] = (lsn_range){lo, hi};
    w->void_next = (w->void_next + 1) % VOID_SLOTS;
    if (w->nvoid < VOID_SLOTS) w->nvoid++;
    if (hi > atomic_load(&w->void_max)) atomic_store(&w->void_max, hi);
}

static int lsn_state_locked(wal *w, uint64_t lsn) {
    if (lsn == 0 || lsn >= w->next_lsn) return WAL_LSN_FAILED;
    if (lsn > w->settled_lsn) return WAL_LSN_PENDING;
    for (unsigned i = 0; i < w->nvoid; i++)
        if (lsn >= w->voids[i].lo && lsn <= w->voids[i].hi) return WAL_LSN_FAILED;
    return WAL_LSN_DURABLE;
}

/* mu held; keep_failed. The batch in `inflight` failed: put its bytes back in front of
 * whatever was appended meanwhile, so pend holds every unwritten record from `first` on.
 * Returns -1 (nothing changed) when the memory for that cannot be had. */
static int keep_batch(wal *w, uint64_t first) {
    if (w->inflight.len) {
        size_t need = w->inflight.len + w->pend.len;
        if (w->inflight.cap < need) {
            unsigned char *p = realloc(w->inflight.data, need);
            if (!p) return -1;
            w->inflight.data = p;
            w->inflight.cap = need;
        }
        if (w->pend.len) memcpy(w->inflight.data + w->inflight.len, w->pend.data, w->pend.len);
        w->inflight.len = need;
        wbuf t = w->pend;
        w->pend = w->inflight;
        w->inflight = t;
        w->inflight.len = 0;
    }
    w->pend_first = first;
    return 0;
}

/* mu held. The batch starting at `first` failed: fail it and everything queued after,
 * or, with keep_failed, keep all of it (already in pend) to be written again. */
static void enter_degraded(wal *w, const char *what, int e, uint64_t first) {
    if (w->state != ST_DEGRADED) w->st.failures++;
    w->state = ST_DEGRADED;
    w->unsettled = true;
    w->fail_lo = first;
    w->fail_hi = w->next_lsn - 1;
    if (!w->keep_failed) w->st.failed_records += w->fail_hi - w->fail_lo + 1;
    w->retained = w->keep_failed;
    msgf(w->st.last_error, sizeof w->st.last_error,
             "%s of WAL segment %016" PRIx64 ".seg at offset %" PRIu64 " failed: %s", what, w->seg_start, w->seg_off,
             strerror(e));
    if (w->closing) {
        w->close_failed = true;
        msgf(w->close_error, sizeof w->close_error, "final WAL flush failed (LSNs %" PRIu64 "..%" PRIu64 "): %s",
                 w->fail_lo, w->fail_hi, w->st.last_error);
    }
    if (!w->keep_failed) w->pend.len = 0;
    struct timespec now = mono_now();
    w->next_retry = now;
    w->probe_at = ts_add_ms(now, w->retry_delay);
    unsigned cap = w->retry_ms > RETRY_CAP_MS ? w->retry_ms : RETRY_CAP_MS;
    w->retry_delay = w->retry_delay * 2 > cap ? cap : w->retry_delay * 2;
    pthread_cond_broadcast(&w->cv_space);
}

/* mu held; may drop it around I/O. `force`: rotate now whatever the size and the
 * retry timer say. Returns 0 when the writer may go on writing records (rotated, or
 * rotation not needed or failed harmlessly), -1 when a stray segment is in the way. */
static int maybe_rotate(wal *w, bool force) {
    if (!force && w->seg_off < w->segment_bytes) return 0;
    struct timespec now = mono_now();
    if (!force && ts_before(now, w->next_rotate)) return 0;
    uint64_t start = w->disk_lsn + 1, prev = w->disk_lsn, rv = w->registry_version;
    pthread_mutex_unlock(&w->mu);
    int fd;
    char why[256];
    bool stray;
    int rc = seg_create(w, start, prev, rv, &fd, &stray, why, sizeof why);
    w->stray = rc != 0 && stray;
    if (rc == 0) {
        close(w->seg_fd);
        w->seg_fd = fd;
        w->seg_off = HDR;
        w->seg_start = start;
        pthread_mutex_lock(&w->seg_mu);
        segs_push(w, start, prev, HDR); /* on OOM truncate_before just never frees it */
        pthread_mutex_unlock(&w->seg_mu);
    }
    pthread_mutex_lock(&w->mu);
    if (rc == 0) {
        w->st.rotations++;
    } else {
        w->st.rotation_failures++;
        msgf(w->st.last_error, sizeof w->st.last_error, "rotation: %s", why);
        w->next_rotate = ts_add_ms(mono_now(), w->retry_ms);
    }
    return w->stray ? -1 : 0;
}

/* mu held; drops it for the I/O. */
static void flush_batch(wal *w) {
    if (w->stray && maybe_rotate(w, true) != 0) {
        /* A segment file named after disk_lsn+1 exists and could not be removed: records
         * written past it into the current segment would read as void at recovery. Fail
         * this batch instead; the probe will create the next segment. */
        enter_degraded(w, "rotation (stray segment)", EIO, w->pend_first);
        return;
    }
    wbuf t = w->inflight;
    w->inflight = w->pend;
    w->pend = t;
    w->pend.len = 0;
    uint64_t first = w->pend_first, last = w->next_lsn - 1;
    size_t len = w->inflight.len;
    w->inflight_bytes = len;
    pthread_mutex_unlock(&w->mu);

    const char *what = NULL;
    int e = 0;
    struct timespec s0 = { 0 }, s1 = { 0 };
    if (io_pwrite_all(w, w->seg_fd, w->inflight.data, len, w->seg_off) < 0) {
        what = "write";
        e = errno;
    } else {
        clock_gettime(CLOCK_MONOTONIC, &s0);
        if (io_sync(w, w->seg_fd, false) < 0) {
            what = "fdatasync";
            e = errno;
        }
        clock_gettime(CLOCK_MONOTONIC, &s1);
    }

    pthread_mutex_lock(&w->mu);
    w->inflight_bytes = 0;
    if (what && w->keep_failed && keep_batch(w, first) == 0) {
        enter_degraded(w, what, e, first);
        return;
    }
    if (what && w->keep_failed) {
        /* no memory to keep the batch: it is voided like without keep_failed */
        w->keep_failed = false;
        enter_degraded(w, what, e, first);
        w->keep_failed = true;
        w->retained = false;
        w->inflight.len = 0;
        return;
    }
    w->inflight.len = 0;
    if (w->inflight.cap > 2 * w->batch_bytes + WAL_MAX_PAYLOAD) {
        /* After a burst: give the memory back instead of keeping the high-water mark. */
        free(w->inflight.data);
        w->inflight = (wbuf){0};
    }
    if (what) {
        enter_degraded(w, what, e, first);
        return;
    }
    w->seg_off += len;
    w->disk_lsn = last;
    w->settled_lsn = last;
    atomic_store(&w->durable_pub, last);
    w->st.batches++;
    w->st.fsyncs++;
    uint64_t sync_ns = (uint64_t)((s1.tv_sec - s0.tv_sec) * 1000000000LL + (s1.tv_nsec - s0.tv_nsec));
    w->st.fsync_ns += sync_ns;
    w->fsync_avg_ns = w->fsync_avg_ns ? (w->fsync_avg_ns * (GROUP_AVG_WEIGHT - 1) + sync_ns) / GROUP_AVG_WEIGHT
                                      : sync_ns;
    /* the clients this batch answers, and those already waiting in pend, are the ones the
     * next batch can expect; unless as many are waiting as it answered: a stream that
     * keeps up is written at once (see WRITER) */
    uint64_t answered = last - first + 1, waiting = w->pend.len ? w->next_lsn - w->pend_first : 0;
    w->group_target = waiting >= answered ? waiting : answered + waiting;
    w->group_from = s1;
    w->retry_delay = w->retry_ms;
    if (w->state == ST_DEGRADED) {
        /* the kept records are on disk at last (see degraded_step), even if a first try
         * while closing had failed */
        w->state = ST_OK;
        w->retained = false;
        w->close_failed = false;
    }
    pthread_cond_broadcast(&w->cv_durable);
    pthread_cond_broadcast(&w->cv_space);
    maybe_rotate(w, false);
}

/* mu held. One step of the failure state machine: settle (truncate the failed bytes
 * away, durably), then probe (create the segment after the void LSNs). Returns true when
 * the writer should exit (closing). */
static bool degraded_step(wal *w, bool *progressed) {
    struct timespec now = mono_now();
    if (!w->closing && ts_before(now, w->next_retry)) {
        pthread_cond_timedwait(&w->cv_writer, &w->mu, &w->next_retry);
        return false;
    }
    if (w->unsettled) {
        int fd = w->seg_fd;
        uint64_t off = w->seg_off;
        pthread_mutex_unlock(&w->mu);
        int rc;
        do rc = ftruncate(fd, (off_t)off);
        while (rc != 0 && errno == EINTR);
        if (rc == 0) rc = io_sync(w, fd, false);
        int e = errno;
        pthread_mutex_lock(&w->mu);
        if (rc == 0 && w->retained) {
            w->unsettled = false;          /* the kept records are written again below */
        } else if (rc == 0) {
            void_add(w, w->fail_lo, w->fail_hi);
            w->unsettled = false;
            w->settled_lsn = w->fail_hi;
            atomic_store(&w->durable_pub, w->fail_hi);
            pthread_cond_broadcast(&w->cv_durable);
            *progressed = true;
        } else {
            msgf(w->st.last_error, sizeof w->st.last_error,
                     "cannot undo the failed WAL write (truncate %016" PRIx64 ".seg to %" PRIu64 "): %s", w->seg_start,
                     off, strerror(e));
            if (!w->closing) w->next_retry = ts_add_ms(mono_now(), w->retry_ms);
        }
    }
    if (w->closing && w->retained && !w->unsettled && !w->final_tried) {
        w->final_tried = true;      /* one last write of the kept records */
        flush_batch(w);
        *progressed = true;
        return false;
    }
    if (w->closing) {
        if (w->retained) {
            w->close_failed = true;
            msgf(w->close_error, sizeof w->close_error,
                 "WAL closed while LSNs %" PRIu64 "..%" PRIu64 " could not be written: %s", w->fail_lo, w->fail_hi,
                 w->st.last_error);
        } else if (w->unsettled) {
            w->close_failed = true;
            msgf(w->close_error, sizeof w->close_error,
                     "WAL closed while LSNs %" PRIu64 "..%" PRIu64 " could not be settled (outcome unknown): %s",
                     w->fail_lo, w->fail_hi, w->st.last_error);
        }
        return true;
    }
    if (w->unsettled) return false;
    now = mono_now();
    if (ts_before(now, w->probe_at)) {
        w->next_retry = w->probe_at;
        return false;
    }
    if (w->retained) {
        /* Write the kept records again where they failed (same LSNs, so no void range
         * and no new segment): healthy again once they are on disk, else back off. */
        flush_batch(w);
        *progressed = true;
        return false;
    }
    uint64_t start = w->fail_hi + 1, prev = w->disk_lsn, rv = w->registry_version;
    pthread_mutex_unlock(&w->mu);
    int fd;
    char why[256];
    bool stray;
    int rc = seg_create(w, start, prev, rv, &fd, &stray, why, sizeof why);
    if (rc == 0) {
        w->stray = false;
        int old_fd = w->seg_fd;
        uint64_t old_start = w->seg_start;
        bool old_empty = w->seg_off == HDR;
        w->seg_fd = fd;
        w->seg_off = HDR;
        w->seg_start = start;
        close(old_fd);
        pthread_mutex_lock(&w->seg_mu);
        segs_push(w, start, prev, HDR);
        if (old_empty) {
            /* Nothing durable in it and the new header carries the same prev. */
            char path[PATH_MAX + 32];
            seg_path(w, old_start, path, sizeof path);
            if (unlink(path) == 0 || errno == ENOENT) segs_remove(w, old_start);
        }
        pthread_mutex_unlock(&w->seg_mu);
        if (old_empty) io_sync(w, w->dir_fd, true);
    }
    pthread_mutex_lock(&w->mu);
    if (rc == 0) {
        w->state = ST_OK;
        w->st.rotations++;
        *progressed = true;
        return false;
    }
    msgf(w->st.last_error, sizeof w->st.last_error, "WAL recovery probe: %s", why);
    now = mono_now();
    w->probe_at = ts_add_ms(now, w->retry_delay);
    w->next_retry = w->probe_at;
    unsigned cap = w->retry_ms > RETRY_CAP_MS ? w->retry_ms : RETRY_CAP_MS;
    w->retry_delay = w->retry_delay * 2 > cap ? cap : w->retry_delay * 2;
    return false;
}

/* mu held. Sync durability: the end of the window in which pend gathers group_target
 * records: from when the last batch settled (or the first pending record came, if later),
 * for at most 1/GROUP_WINDOW_DIV of an average fdatasync. */
static struct timespec group_due(const wal *w) {
    struct timespec t = ts_before(w->group_from, w->pend_since) ? w->pend_since : w->group_from;
    return ts_add_ns(t, w->fsync_avg_ns / GROUP_WINDOW_DIV);
}

static void *writer_main(void *arg) {
    wal *w = arg;
    pthread_setname_np(pthread_self(), "beava-wal");   /* for top, perf sched and gdb */
    if (w->background) {
        /* No wake-up preemption: each batch's write would otherwise interrupt a thread
         * that is answering clients (at ~1M events/s the writer wakes ~500 times a
         * second). A failure leaves the default policy: nothing depends on it. */
        struct sched_param sp = { .sched_priority = 0 };
        pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    }
    pthread_mutex_lock(&w->mu);
    for (;;) {
        bool progressed = false;
        if (w->state == ST_DEGRADED) {
            if (degraded_step(w, &progressed)) break;
        } else if (w->pend.len == 0) {
            if (w->closing) break;
            pthread_cond_wait(&w->cv_writer, &w->mu);
        } else {
            /* a waiter's LSN above settled_lsn is in pend (nothing is in flight here) */
            bool waited_for = w->sync_want > w->settled_lsn;
            struct timespec now = mono_now();
            struct timespec due = ts_add_ms(w->pend_since, w->tick_ms);
            bool due_now = w->closing || w->pend.len >= w->batch_bytes || !ts_before(now, due);
            if (!due_now && w->all_waited) {
                /* sync durability: every record has a waiter, so go now, unless the batch
                 * is still gathering the clients the last one answered (group_target) */
                struct timespec g = group_due(w);
                waited_for = w->next_lsn - w->pend_first >= w->group_target || !ts_before(now, g);
                if (!waited_for && ts_before(g, due)) due = g;
            }
            if (!due_now && !waited_for) {
                w->group_wait = w->all_waited;
                pthread_cond_timedwait(&w->cv_writer, &w->mu, &due);
                w->group_wait = false;
            } else {
                if (!due_now) w->st.sync_batches++;
                flush_batch(w);
                progressed = true;
            }
        }
        if (progressed && w->notify) {
            pthread_mutex_unlock(&w->mu);
            w->notify(w->notify_ctx);
            pthread_mutex_lock(&w->mu);
        }
    }
    w->writer_done = true;
    pthread_cond_broadcast(&w->cv_durable);
    pthread_cond_broadcast(&w->cv_space);
    pthread_mutex_unlock(&w->mu);
    if (w->notify) w->notify(w->notify_ctx);
    return NULL;
}

/* ---- the public run-time API -------------------------------------------------------- */

static void user_leave(wal *w) {
    w->users--;
    if (w->users == 0 && w->closing) pthread_cond_broadcast(&w->cv_idle);
}

int wal_append(wal *w, uint8_t kind, const void *payload, size_t len, uint64_t *lsn, bv_err *err) {
    if (kind == 0) {
        bv_err_set(err, "invalid_argument", "", "WAL record kind 0 is invalid");
        return -1;
    }
    if (len > WAL_MAX_PAYLOAD) {
        bv_err_set(err, "invalid_argument", "", "WAL record payload of %zu bytes exceeds the limit of %u bytes", len,
                   (unsigned)WAL_MAX_PAYLOAD);
        return -1;
    }
    if (len && !payload) {
        bv_err_set(err, "invalid_argument", "", "WAL record payload is NULL");
        return -1;
    }
    uint32_t pcrc = crc32c(payload, len);
    size_t rec = RECH + len;
    int rc = -1;
    pthread_mutex_lock(&w->mu);
    w->users++;
    for (;;) {
        if (w->closing || w->writer_done) {
            bv_err_set(err, "wal_unavailable", "", "WAL is closing");
            goto out;
        }
        if (w->state == ST_DEGRADED) {
            bv_err_set(err, "wal_unavailable", "", "WAL unavailable: %s", w->st.last_error);
            goto out;
        }
        if (w->state != ST_OK) {
            bv_err_set(err, "invalid_argument", "", "wal_append before a successful wal_recover");
            goto out;
        }
        if (w->next_lsn > MAX_LSN) {
            bv_err_set(err, "wal_unavailable", "", "WAL LSN space exhausted");
            goto out;
        }
        size_t pending = w->pend.len + w->inflight_bytes;
        if (pending == 0 || pending + rec <= w->pending_cap) break;
        w->st.backpressure_waits++;
        pthread_cond_wait(&w->cv_space, &w->mu);
    }
    if (w->pend.cap - w->pend.len < rec) {
        size_t cap = w->pend.cap ? w->pend.cap : 64 * 1024;
        while (cap - w->pend.len < rec) cap *= 2;
        unsigned char *p = realloc(w->pend.data, cap);
        if (!p) {
            bv_err_set(err, "wal_unavailable", "", "out of memory queueing a WAL record");
            goto out;
        }
        w->pend.data = p;
        w->pend.cap = cap;
    }
    uint64_t l = w->next_lsn++;
    unsigned char *h = w->pend.data + w->pend.len;
    codec_put32(h, (uint32_t)len);
    codec_put64(h + 8, l);
    h[16] = kind;
    codec_put32(h + 4, crc32c_extend(pcrc, h + 8, 9));
    if (len) memcpy(h + RECH, payload, len);
    bool was_empty = w->pend.len == 0;
    bool crossed = w->pend.len < w->batch_bytes && w->pend.len + rec >= w->batch_bytes;
    w->pend.len += rec;
    if (was_empty) {
        w->pend_first = l;
        w->pend_since = mono_now();
    }
    /* a gathering writer (sync durability) goes once the batch holds its target */
    bool gathered = w->group_wait && l - w->pend_first + 1 == w->group_target;
    if (was_empty || crossed || gathered) pthread_cond_signal(&w->cv_writer);
    w->st.appended_records++;
    w->st.appended_bytes += rec;
    *lsn = l;
    rc = 0;
out:
    user_leave(w);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int wal_lsn_state(wal *w, uint64_t lsn) {
    if (lsn && lsn <= atomic_load(&w->durable_pub) && lsn > atomic_load(&w->void_max)) return WAL_LSN_DURABLE;
    pthread_mutex_lock(&w->mu);
    int s = lsn_state_locked(w, lsn);
    pthread_mutex_unlock(&w->mu);
    return s;
}

uint64_t wal_durable_lsn(wal *w) { return atomic_load(&w->durable_pub); }

int wal_wait_durable(wal *w, uint64_t lsn, int timeout_ms, bv_err *err) {
    if (lsn && lsn <= atomic_load(&w->durable_pub) && lsn > atomic_load(&w->void_max)) return WAL_OK;
    struct timespec due = ts_add_ms(mono_now(), timeout_ms > 0 ? (unsigned)timeout_ms : 0);
    int rc;
    pthread_mutex_lock(&w->mu);
    w->users++;
    if (lsn == 0 || lsn >= w->next_lsn) {
        bv_err_set(err, "invalid_argument", "", "LSN %" PRIu64 " was never handed out", lsn);
        rc = WAL_FAILED;
        goto out;
    }
    for (;;) {
        int s = lsn_state_locked(w, lsn);
        if (s == WAL_LSN_DURABLE) {
            rc = WAL_OK;
            break;
        }
        if (s == WAL_LSN_FAILED) {
            bv_err_set(err, "wal_unavailable", "", "WAL record %" PRIu64 " was not written: %s", lsn, w->st.last_error);
            rc = WAL_FAILED;
            break;
        }
        if (w->writer_done) {
            bv_err_set(err, "wal_unavailable", "", "WAL closed before record %" PRIu64 " was settled: %s", lsn,
                       w->close_error[0] ? w->close_error : "writer stopped");
            rc = WAL_FAILED;
            break;
        }
        if (lsn > w->sync_want) {
            /* wake an idle writer: this record goes out now, not at the next tick (with
             * all_waited it goes without being asked: a wake-up would only interrupt
             * the writer's gathering) */
            w->sync_want = lsn;
            if (!w->all_waited) pthread_cond_signal(&w->cv_writer);
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&w->cv_durable, &w->mu);
        } else if (pthread_cond_timedwait(&w->cv_durable, &w->mu, &due) == ETIMEDOUT &&
                   lsn_state_locked(w, lsn) == WAL_LSN_PENDING) {
            bv_err_set(err, "wal_sync_timeout", "", "WAL record %" PRIu64 " not durable after %d ms", lsn, timeout_ms);
            rc = WAL_TIMEOUT;
            break;
        }
    }
out:
    user_leave(w);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int wal_truncate_before(wal *w, uint64_t lsn, unsigned *removed, bv_err *err) {
    unsigned n = 0;
    int rc = 0;
    if (removed) *removed = 0;
    pthread_mutex_lock(&w->mu);
    bool ready = w->state != ST_INIT && w->state != ST_BROKEN;
    pthread_mutex_unlock(&w->mu);
    if (!ready) {
        bv_err_set(err, "invalid_argument", w->wal_dir, "wal_truncate_before before a successful wal_recover");
        return -1;
    }
    pthread_mutex_lock(&w->seg_mu);
    size_t i = 0;
    while (i + 1 < w->nsegs && w->segs[i + 1].start - 1 <= lsn) {
        char path[PATH_MAX + 32];
        seg_path(w, w->segs[i].start, path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT) {
            bv_err_set(err, "wal_io", path, "cannot delete WAL segment %s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        i++;
        n++;
    }
    if (i) {
        memmove(w->segs, w->segs + i, (w->nsegs - i) * sizeof *w->segs);
        w->nsegs -= i;
    }
    pthread_mutex_unlock(&w->seg_mu);
    if (n && io_sync(w, w->dir_fd, true) != 0 && rc == 0) {
        bv_err_set(err, "wal_io", w->wal_dir, "fsync %s: %s", w->wal_dir, strerror(errno));
        rc = -1;
    }
    if (removed) *removed = n;
    return rc;
}

void wal_set_registry_version(wal *w, uint64_t version) {
    pthread_mutex_lock(&w->mu);
    w->registry_version = version;
    pthread_mutex_unlock(&w->mu);
}

void wal_get_stats(wal *w, wal_stats *st) {
    pthread_mutex_lock(&w->mu);
    *st = w->st;
    st->next_lsn = w->next_lsn;
    st->durable_lsn = w->settled_lsn;
    st->pending_bytes = w->pend.len + w->inflight_bytes;
    st->degraded = w->state == ST_DEGRADED;
    st->retained_records = w->retained ? w->next_lsn - 1 - w->settled_lsn : 0;
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_lock(&w->seg_mu);
    st->segments = w->nsegs;
    pthread_mutex_unlock(&w->seg_mu);
}

int wal_close(wal *w, bv_err *err) {
    if (!w) return 0;
    if (w->thread_started) {
        pthread_mutex_lock(&w->mu);
        w->closing = true;
        pthread_cond_broadcast(&w->cv_writer);
        pthread_cond_broadcast(&w->cv_space);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
    }
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    w->closing = true;
    w->writer_done = true;
    pthread_cond_broadcast(&w->cv_durable);
    pthread_cond_broadcast(&w->cv_space);
    while (w->users) pthread_cond_wait(&w->cv_idle, &w->mu);
    if (w->close_failed) {
        bv_err_set(err, "wal_unavailable", w->wal_dir, "%s", w->close_error);
        rc = -1;
    }
    pthread_mutex_unlock(&w->mu);
    if (w->seg_fd >= 0) close(w->seg_fd);
    if (w->dir_fd >= 0) close(w->dir_fd);
    if (w->lock_fd >= 0) close(w->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->seg_mu);
    pthread_cond_destroy(&w->cv_writer);
    pthread_cond_destroy(&w->cv_durable);
    pthread_cond_destroy(&w->cv_space);
    pthread_cond_destroy(&w->cv_idle);
    free(w->pend.data);
    free(w->inflight.data);
    free(w->segs);
    free(w);
    return rc;
}
