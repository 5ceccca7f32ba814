/*
 * snapfile.c - snapshot files (contract in snapfile.h).
 *
 * HEADER (64 bytes, little-endian)
 *   0  8  magic "BEAVASNP"          32  8  created, ms since the epoch
 *   8  4  format version (1)        40  8  body length
 *  12  4  flags (0)                 48  4  CRC-32C of the body
 *  16  8  LSN (= file name)         52  8  reserved (0)
 *  24  8  registry version          60  4  CRC-32C of bytes 0..59
 *
 * The writer puts 64 zero bytes where the header goes, streams the body through a 1 MiB
 * buffer while keeping a running CRC, and writes the real header last, just before the
 * fsync: an interrupted .tmp never has a valid header. Loading verifies the body CRC
 * once before returning a reader and again while the engine streams the body, so a file
 * that changes underneath (it should not: we hold the data-dir lock) is still caught.
 */
#include "snapfile.h"

#include "codec.h"
#include "fsutil.h"

#include "crc32c.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SNAP_MAGIC "BEAVASNP"
#define SHDR SNAPFILE_HEADER_BYTES
#define WBUF_BYTES ((size_t)1 << 20)
#define NAME_LEN 29 /* "snapshot-" + 16 hex + ".bvs" */

struct snapfile_writer {
    char dir[PATH_MAX];
    char tmp[PATH_MAX + 64];
    char final[PATH_MAX + 64];
    int fd;
    uint64_t lsn, registry_version, created_ms;
    uint64_t body_len;
    uint32_t crc;
    unsigned char *buf;
    size_t used;
    bool failed;
};

struct snapfile_reader {
    int fd;
    char path[PATH_MAX + 64];
    snapfile_header h;
    uint64_t pos;   /* body bytes handed out */
    uint32_t crc;   /* running CRC of those bytes */
};


static void msgf(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msgf(char *dst, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

static int fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}


/* "snapshot-<16 hex>.<ext>" -> LSN. */
static bool snap_name_lsn(const char *name, const char *ext, uint64_t *lsn) {
    if (strlen(name) != NAME_LEN || strncmp(name, "snapshot-", 9) != 0 || name[25] != '.' ||
        strcmp(name + 26, ext) != 0)
        return false;
    uint64_t v = 0;
    for (int i = 9; i < 25; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v = (v << 4) | (uint64_t)d;
    }
    *lsn = v;
    return true;
}

static int write_all(int fd, const void *buf, size_t len, off_t off, bool at) {
    const unsigned char *p = buf;
    while (len) {
        ssize_t n = at ? pwrite(fd, p, len, off) : write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* ---- writing ------------------------------------------------------------------------ */

int snapfile_begin(const char *snap_dir, uint64_t lsn, uint64_t registry_version, snapfile_writer **out,
                   bv_err *err) {
    *out = NULL;
    if (!snap_dir || !snap_dir[0] || strlen(snap_dir) >= PATH_MAX - 64) {
        bv_err_set(err, "invalid_argument", snap_dir ? snap_dir : "", "bad snapshot directory");
        return -1;
    }
    snapfile_writer *sw = calloc(1, sizeof *sw);
    if (!sw || !(sw->buf = malloc(WBUF_BYTES))) {
        bv_err_set(err, "snapshot_io", snap_dir, "out of memory");
        goto fail;
    }
    sw->fd = -1;
    msgf(sw->dir, sizeof sw->dir, "%s", snap_dir);
    msgf(sw->tmp, sizeof sw->tmp, "%s/snapshot-%016" PRIx64 ".tmp", snap_dir, lsn);
    msgf(sw->final, sizeof sw->final, "%s/snapshot-%016" PRIx64 ".bvs", snap_dir, lsn);
    sw->lsn = lsn;
    sw->registry_version = registry_version;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    sw->created_ms = (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;

    bool created;
    if (bv_mkdir_p(snap_dir, &created) != 0) {
        bv_err_set(err, "snapshot_io", snap_dir, "cannot create %s: %s", snap_dir, strerror(errno));
        goto fail;
    }
    if (created) {
        /* The new directory's own entry must be durable before files in it count. */
        char parent[PATH_MAX];
        msgf(parent, sizeof parent, "%s", snap_dir);
        char *slash = strrchr(parent, '/');
        if (slash == parent) slash[1] = 0;
        else if (slash) *slash = 0;
        else msgf(parent, sizeof parent, ".");
        if (fsync_dir(parent) != 0) {
            bv_err_set(err, "snapshot_io", parent, "fsync %s: %s", parent, strerror(errno));
            goto fail;
        }
    }
    sw->fd = open(sw->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (sw->fd < 0) {
        bv_err_set(err, "snapshot_io", sw->tmp, "cannot create %s: %s", sw->tmp, strerror(errno));
        goto fail;
    }
    memset(sw->buf, 0, SHDR); /* placeholder header, replaced at commit */
    sw->used = SHDR;
    *out = sw;
    return 0;
fail:
    if (sw) {
        free(sw->buf);
        free(sw);
    }
    return -1;
}

static int wflush(snapfile_writer *sw, bv_err *err) {
    if (sw->used && write_all(sw->fd, sw->buf, sw->used, 0, false) != 0) {
        sw->failed = true;
        bv_err_set(err, "snapshot_io", sw->tmp, "write %s: %s", sw->tmp, strerror(errno));
        return -1;
    }
    sw->used = 0;
    return 0;
}

int snapfile_write(snapfile_writer *sw, const void *buf, size_t len, bv_err *err) {
    if (sw->failed) {
        bv_err_set(err, "snapshot_io", sw->tmp, "snapshot writer already failed");
        return -1;
    }
    if (len == 0) return 0;
    sw->crc = crc32c_extend(sw->crc, buf, len);
    sw->body_len += len;
    const unsigned char *p = buf;
    while (len) {
        if (sw->used == WBUF_BYTES && wflush(sw, err) != 0) return -1;
        if (sw->used == 0 && len >= WBUF_BYTES) {
            /* Big chunk: straight to the file. */
            if (write_all(sw->fd, p, len, 0, false) != 0) {
                sw->failed = true;
                bv_err_set(err, "snapshot_io", sw->tmp, "write %s: %s", sw->tmp, strerror(errno));
                return -1;
            }
            return 0;
        }
        size_t n = WBUF_BYTES - sw->used;
        if (n > len) n = len;
        memcpy(sw->buf + sw->used, p, n);
        sw->used += n;
        p += n;
        len -= n;
    }
    return 0;
}

static void writer_free(snapfile_writer *sw, bool unlink_tmp) {
    if (sw->fd >= 0) close(sw->fd);
    if (unlink_tmp) unlink(sw->tmp);
    free(sw->buf);
    free(sw);
}

void snapfile_abort(snapfile_writer *sw) {
    if (sw) writer_free(sw, true);
}

static int prune_dir(const char *snap_dir, unsigned retain, snapfile_commit_info *info, bv_err *err);

int snapfile_commit(snapfile_writer *sw, unsigned retain, snapfile_commit_info *info, bv_err *err) {
    if (info) memset(info, 0, sizeof *info);
    if (sw->failed) {
        bv_err_set(err, "snapshot_io", sw->tmp, "snapshot writer already failed");
        goto fail;
    }
    if (wflush(sw, err) != 0) goto fail;
    unsigned char h[SHDR] = {0};
    memcpy(h, SNAP_MAGIC, 8);
    codec_put32(h + 8, SNAPFILE_FORMAT_VERSION);
    codec_put64(h + 16, sw->lsn);
    codec_put64(h + 24, sw->registry_version);
    codec_put64(h + 32, sw->created_ms);
    codec_put64(h + 40, sw->body_len);
    codec_put32(h + 48, sw->crc);
    codec_put32(h + 60, crc32c(h, 60));
    if (write_all(sw->fd, h, SHDR, 0, true) != 0 || fsync(sw->fd) != 0) {
        bv_err_set(err, "snapshot_io", sw->tmp, "write/fsync %s: %s", sw->tmp, strerror(errno));
        goto fail;
    }
    int rc = close(sw->fd);
    sw->fd = -1;
    if (rc != 0) {
        bv_err_set(err, "snapshot_io", sw->tmp, "close %s: %s", sw->tmp, strerror(errno));
        goto fail;
    }
    if (rename(sw->tmp, sw->final) != 0) {
        bv_err_set(err, "snapshot_io", sw->final, "rename %s -> %s: %s", sw->tmp, sw->final, strerror(errno));
        goto fail;
    }
    if (fsync_dir(sw->dir) != 0) {
        /* The rename happened but may not survive a crash; report it, keep the file. */
        bv_err_set(err, "snapshot_io", sw->dir, "fsync %s: %s", sw->dir, strerror(errno));
        writer_free(sw, false);
        return -1;
    }
    prune_dir(sw->dir, retain, info, NULL);
    if (info) info->bytes = SHDR + sw->body_len;
    writer_free(sw, false);
    return 0;
fail:
    writer_free(sw, true);
    return -1;
}

typedef struct snap_ent {
    uint64_t lsn;
    char name[NAME_LEN + 1];
    bool tmp;
} snap_ent;

static int ent_cmp_desc(const void *a, const void *b) {
    uint64_t x = ((const snap_ent *)a)->lsn, y = ((const snap_ent *)b)->lsn;
    return x > y ? -1 : x < y;
}

/* List snapshot files (.bvs, and .tmp when with_tmp), newest first. *out is malloc'd.
 * Returns the count, or -1 with errno (ENOENT: no directory). */
static long snap_list(const char *dir, bool with_tmp, snap_ent **out) {
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return -1;
    snap_ent *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t lsn;
        bool tmp = false;
        if (!snap_name_lsn(de->d_name, "bvs", &lsn)) {
            if (!with_tmp || !snap_name_lsn(de->d_name, "tmp", &lsn)) continue;
            tmp = true;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            snap_ent *p = realloc(v, cap * sizeof *p);
            if (!p) {
                free(v);
                closedir(d);
                errno = ENOMEM;
                return -1;
            }
            v = p;
        }
        v[n].lsn = lsn;
        v[n].tmp = tmp;
        memcpy(v[n].name, de->d_name, NAME_LEN + 1);
        n++;
    }
    closedir(d);
    if (n) qsort(v, n, sizeof *v, ent_cmp_desc);
    *out = v;
    return (long)n;
}

/* Retention; adds to the counters in info (may be NULL). */
static int prune_dir(const char *snap_dir, unsigned retain, snapfile_commit_info *info, bv_err *err) {
    if (retain == 0) retain = SNAPFILE_DEFAULT_RETAIN;
    snap_ent *v;
    long n = snap_list(snap_dir, true, &v);
    if (n < 0) {
        if (errno == ENOENT) return 0;
        bv_err_set(err, "snapshot_io", snap_dir, "cannot list %s: %s", snap_dir, strerror(errno));
        return -1;
    }
    unsigned kept = 0, removed = 0;
    for (long i = 0; i < n; i++) {
        if (!v[i].tmp && kept < retain) {
            kept++;
            continue;
        }
        char path[PATH_MAX + 64];
        msgf(path, sizeof path, "%s/%s", snap_dir, v[i].name);
        if (unlink(path) != 0 && errno != ENOENT) {
            if (info) info->prune_failures++;
            continue;
        }
        removed++;
        if (info) {
            if (v[i].tmp) info->removed_tmp++;
            else info->removed_old++;
        }
    }
    free(v);
    if (removed) fsync_dir(snap_dir); /* best effort: a resurrected old file is harmless */
    return 0;
}

int snapfile_prune(const char *snap_dir, unsigned retain, snapfile_commit_info *info, bv_err *err) {
    if (info) memset(info, 0, sizeof *info);
    return prune_dir(snap_dir, retain, info, err);
}

/* ---- loading ------------------------------------------------------------------------ */

/* Open and fully verify one snapshot file. Returns 0 with *out or -1 with why. */
static int snap_verify(const char *path, uint64_t name_lsn, snapfile_reader **out, char *why, size_t wn) {
    *out = NULL;
    unsigned char *buf = NULL;
    snapfile_reader *r = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    unsigned char h[SHDR];
    if (fd < 0 || fstat(fd, &sb) != 0) {
        msgf(why, wn, "%s: %s", path, strerror(errno));
        goto fail;
    }
    ssize_t got = pread(fd, h, SHDR, 0);
    if (got < 0) {
        msgf(why, wn, "%s: read: %s", path, strerror(errno));
        goto fail;
    }
    if (got < SHDR) {
        msgf(why, wn, "%s: truncated header (%zd bytes)", path, got);
        goto fail;
    }
    if (memcmp(h, SNAP_MAGIC, 8) != 0) {
        msgf(why, wn, "%s: bad magic", path);
        goto fail;
    }
    uint32_t version = codec_get32(h + 8);
    if (version != SNAPFILE_FORMAT_VERSION) {
        msgf(why, wn, "%s: unsupported format version %" PRIu32 " (this build reads %d)", path, version,
             SNAPFILE_FORMAT_VERSION);
        goto fail;
    }
    if (codec_get32(h + 60) != crc32c(h, 60)) {
        msgf(why, wn, "%s: header CRC mismatch", path);
        goto fail;
    }
    snapfile_header hd = {.lsn = codec_get64(h + 16), .registry_version = codec_get64(h + 24), .created_ms = codec_get64(h + 32),
                          .body_len = codec_get64(h + 40), .body_crc = codec_get32(h + 48)};
    if (hd.lsn != name_lsn) {
        msgf(why, wn, "%s: header LSN %" PRIu64 " does not match the file name", path, hd.lsn);
        goto fail;
    }
    if ((uint64_t)sb.st_size - SHDR != hd.body_len) {
        msgf(why, wn, "%s: body is %" PRIu64 " bytes, header says %" PRIu64, path, (uint64_t)sb.st_size - SHDR,
             hd.body_len);
        goto fail;
    }
    buf = malloc(WBUF_BYTES);
    if (!buf) {
        msgf(why, wn, "%s: out of memory", path);
        goto fail;
    }
    uint32_t crc = 0;
    uint64_t off = SHDR, end = SHDR + hd.body_len;
    while (off < end) {
        size_t want = end - off < WBUF_BYTES ? (size_t)(end - off) : WBUF_BYTES;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            msgf(why, wn, "%s: read body: %s", path, n < 0 ? strerror(errno) : "unexpected end of file");
            goto fail;
        }
        crc = crc32c_extend(crc, buf, (size_t)n);
        off += (uint64_t)n;
    }
    if (crc != hd.body_crc) {
        msgf(why, wn, "%s: body CRC mismatch", path);
        goto fail;
    }
    free(buf);
    buf = NULL;
    r = calloc(1, sizeof *r);
    if (!r || lseek(fd, SHDR, SEEK_SET) != SHDR) {
        msgf(why, wn, "%s: %s", path, r ? strerror(errno) : "out of memory");
        goto fail;
    }
    r->fd = fd;
    r->h = hd;
    msgf(r->path, sizeof r->path, "%s", path);
    *out = r;
    return 0;
fail:
    free(buf);
    free(r);
    if (fd >= 0) close(fd);
    return -1;
}

int snapfile_open_latest(const char *snap_dir, uint64_t below_lsn, snapfile_reader **out,
                         snapfile_load_stats *st, bv_err *err) {
    snapfile_load_stats local;
    if (!st) st = &local;
    memset(st, 0, sizeof *st);
    *out = NULL;
    snap_ent *v;
    long n = snap_list(snap_dir, false, &v);
    if (n < 0) {
        if (errno == ENOENT) return 0;
        bv_err_set(err, "snapshot_io", snap_dir, "cannot list %s: %s", snap_dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (long i = 0; i < n; i++)
        if (v[i].lsn < below_lsn) st->found++;
    for (long i = 0; i < n; i++) {
        if (v[i].lsn >= below_lsn) continue;
        char path[PATH_MAX + 64], why[384];
        msgf(path, sizeof path, "%s/%s", snap_dir, v[i].name);
        if (snap_verify(path, v[i].lsn, out, why, sizeof why) == 0) {
            rc = 1;
            break;
        }
        if (!st->rejected) msgf(st->first_error, sizeof st->first_error, "%s", why);
        st->rejected++;
    }
    free(v);
    return rc;
}

const snapfile_header *snapfile_reader_header(const snapfile_reader *r) { return &r->h; }

ssize_t snapfile_read(snapfile_reader *r, void *buf, size_t n, bv_err *err) {
    uint64_t left = r->h.body_len - r->pos;
    if (n > left) n = (size_t)left;
    size_t done = 0;
    while (done < n) {
        ssize_t k = read(r->fd, (unsigned char *)buf + done, n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            bv_err_set(err, "snapshot_io", r->path, "read %s: %s", r->path,
                       k < 0 ? strerror(errno) : "unexpected end of file");
            return -1;
        }
        done += (size_t)k;
    }
    r->crc = crc32c_extend(r->crc, buf, done);
    r->pos += done;
    if (r->pos == r->h.body_len && done && r->crc != r->h.body_crc) {
        bv_err_set(err, "snapshot_corrupt", r->path, "%s changed while being read: body CRC mismatch", r->path);
        return -1;
    }
    return (ssize_t)done;
}

int snapfile_read_all(snapfile_reader *r, void **body, size_t *len, bv_err *err) {
    *body = NULL;
    *len = 0;
    uint64_t left = r->h.body_len - r->pos;
    if (left > SIZE_MAX - 1) {
        bv_err_set(err, "snapshot_io", r->path, "snapshot body too large for memory");
        return -1;
    }
    unsigned char *b = malloc(left ? (size_t)left : 1);
    if (!b) {
        bv_err_set(err, "snapshot_io", r->path, "out of memory for a %" PRIu64 "-byte snapshot body", left);
        return -1;
    }
    size_t got = 0;
    while (got < left) {
        size_t want = left - got < WBUF_BYTES ? (size_t)(left - got) : WBUF_BYTES;
        ssize_t k = snapfile_read(r, b + got, want, err);
        if (k <= 0) {
            if (k == 0) bv_err_set(err, "snapshot_io", r->path, "short snapshot body");
            free(b);
            return -1;
        }
        got += (size_t)k;
    }
    *body = b;
    *len = got;
    return 0;
}

void snapfile_reader_close(snapfile_reader *r) {
    if (!r) return;
    close(r->fd);
    free(r);
}
