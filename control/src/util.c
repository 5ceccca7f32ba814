/*
 * util.c — file, time, digest and error helpers for beava-control.
 *
 * Everything here is synchronous and blocking; durability helpers (atomic write, fsync of
 * the parent directory) are the building blocks of the journal and the state files, so a
 * crash at any instant leaves either the old or the new content, never a torn file.
 */
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>

int ctl_errf(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, CTL_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int64_t ctl_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ctl_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ctl_iso_time(int64_t epoch_ms, char *buf, size_t len) {
    time_t s = (time_t)(epoch_ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", base, (int)(epoch_ms % 1000));
}

char *ctl_strdup(const char *s) {
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}

void *ctl_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) abort();
    return q;
}

void *ctl_calloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) abort();
    return p;
}

char *ctl_asprintf(const char *fmt, ...) {
    va_list ap;
    char *out = NULL;
    va_start(ap, fmt);
    if (vasprintf(&out, fmt, ap) < 0) abort();
    va_end(ap);
    return out;
}

int ctl_read_file(const char *path, size_t max_bytes, char **out, size_t *len_out, char *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ctl_errf(err, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ctl_errf(err, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return ctl_errf(err, "%s: file is %lld bytes, more than the limit of %zu", path, (long long)st.st_size,
                        max_bytes);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) abort();
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = 0;
    *out = buf;
    if (len_out) *len_out = got;
    return 0;
}

int ctl_fsync_dir(const char *path, char *err) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ctl_errf(err, "%s: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc < 0) return ctl_errf(err, "fsync %s: %s", path, strerror(errno));
    return 0;
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ctl_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, char *err) {
    char *tmp = ctl_asprintf("%s.tmp.%d", path, (int)getpid());
    char *dir = ctl_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) *slash = 0;
    else if (slash) dir[1] = 0;
    else strcpy(dir, ".");
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        ctl_errf(err, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    if (write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        ctl_errf(err, "write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        ctl_errf(err, "rename %s -> %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = ctl_fsync_dir(dir, err);
out:
    free(tmp);
    free(dir);
    return rc;
}

int ctl_mkdirs(const char *path, mode_t mode, char *err) {
    char *p = ctl_strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, mode) < 0 && errno != EEXIST) {
            ctl_errf(err, "mkdir %s: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = 0;
    if (mkdir(p, mode) < 0 && errno != EEXIST) rc = ctl_errf(err, "mkdir %s: %s", p, strerror(errno));
    free(p);
    return rc;
}

int ctl_rmtree(const char *path, char *err) {
    struct stat st;
    if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : ctl_errf(err, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) < 0) return ctl_errf(err, "unlink %s: %s", path, strerror(errno));
        return 0;
    }
    DIR *d = opendir(path);
    if (!d) return ctl_errf(err, "%s: %s", path, strerror(errno));
    /* Directories in an unpacked image may be read-only (0555): make them writable. */
    chmod(path, (st.st_mode & 07777) | S_IRWXU);
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *c = ctl_asprintf("%s/%s", path, e->d_name);
        if (ctl_rmtree(c, err) < 0) rc = -1;
        free(c);
        if (rc < 0) break;
    }
    closedir(d);
    if (rc == 0 && rmdir(path) < 0) return ctl_errf(err, "rmdir %s: %s", path, strerror(errno));
    return rc;
}

static int copy_file(const char *src, const char *dst, mode_t mode, char *err) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return ctl_errf(err, "%s: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 07777);
    if (out < 0) {
        close(in);
        return ctl_errf(err, "%s: %s", dst, strerror(errno));
    }
    char buf[65536];
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = ctl_errf(err, "read %s: %s", src, strerror(errno));
            break;
        }
        if (n == 0) break;
        if (write_all(out, buf, (size_t)n) < 0) {
            rc = ctl_errf(err, "write %s: %s", dst, strerror(errno));
            break;
        }
    }
    if (rc == 0 && fsync(out) < 0) rc = ctl_errf(err, "fsync %s: %s", dst, strerror(errno));
    close(in);
    close(out);
    return rc;
}

int ctl_copytree(const char *src, const char *dst, char *err) {
    struct stat st;
    if (lstat(src, &st) < 0) return ctl_errf(err, "%s: %s", src, strerror(errno));
    if (S_ISLNK(st.st_mode)) {
        char target[4096];
        ssize_t n = readlink(src, target, sizeof target - 1);
        if (n < 0) return ctl_errf(err, "readlink %s: %s", src, strerror(errno));
        target[n] = 0;
        if (symlink(target, dst) < 0) return ctl_errf(err, "symlink %s: %s", dst, strerror(errno));
        return 0;
    }
    if (S_ISREG(st.st_mode)) return copy_file(src, dst, st.st_mode, err);
    if (!S_ISDIR(st.st_mode)) return 0; /* sockets, fifos: not data */
    if (mkdir(dst, (st.st_mode & 07777) | S_IRWXU) < 0 && errno != EEXIST)
        return ctl_errf(err, "mkdir %s: %s", dst, strerror(errno));
    DIR *d = opendir(src);
    if (!d) return ctl_errf(err, "%s: %s", src, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *s = ctl_asprintf("%s/%s", src, e->d_name);
        char *t = ctl_asprintf("%s/%s", dst, e->d_name);
        rc = ctl_copytree(s, t, err);
        free(s);
        free(t);
    }
    closedir(d);
    if (rc == 0) rc = ctl_fsync_dir(dst, err);
    return rc;
}

uint64_t ctl_tree_bytes(const char *path) {
    struct stat st;
    if (lstat(path, &st) < 0) return 0;
    if (S_ISREG(st.st_mode)) return (uint64_t)st.st_size;
    if (!S_ISDIR(st.st_mode)) return 0;
    DIR *d = opendir(path);
    if (!d) return 0;
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *c = ctl_asprintf("%s/%s", path, e->d_name);
        total += ctl_tree_bytes(c);
        free(c);
    }
    closedir(d);
    return total;
}

void ctl_hex(const unsigned char *in, size_t len, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * len] = 0;
}

void ctl_sha256_digest(const void *data, size_t len, char *out) {
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    memcpy(out, "sha256:", 7);
    ctl_hex(md, 32, out + 7);
}

bool ctl_is_digest(const char *s) {
    if (!s || strncmp(s, "sha256:", 7) != 0 || strlen(s) != 71) return false;
    for (const char *p = s + 7; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
    return true;
}
