/*
 * site.c - maps request paths to files under the site root, safely; the /api allow-list.
 *
 * Design. A request path is decoded one segment at a time into a relative path ("a/b.css")
 * and every segment is checked on its own, AFTER decoding, so that "%2e%2e", "%2f", "%00"
 * and "\" cannot smuggle a traversal past the check. Nothing is ever joined as text onto
 * "/" and handed to open(): the relative path is opened against a directory fd of the
 * root with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so the kernel refuses any
 * ".." or symlink that would leave the root, at the moment of opening (no check-then-use
 * race). Where openat2 is missing (kernel < 5.6, or a seccomp filter that answers ENOSYS /
 * EPERM) we fall back to realpath() + "is it under the root" + open(O_NOFOLLOW); that
 * fallback has a window between the check and the open in which someone who can already
 * write to the site dir could swap a directory for a symlink. The site dir is operator
 * content, so we accept that and prefer openat2 whenever the kernel has it.
 *
 * Invariants: only regular files are served (a FIFO cannot block us: files are opened
 * O_NONBLOCK and the flag is cleared once fstat says "regular"); directories are never
 * listed, they serve their index.html or 404; dot-files (".git", ".env") are 404.
 *
 * Not done here: methods, Range, compression, Last-Modified/If-Modified-Since. The HTTP
 * layer owns those (ETag + If-None-Match is enough for a 300 s cache on a small site).
 */
#include "site.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct bv_site {
    int root_fd;      /* O_PATH | O_DIRECTORY on root */
    char *root;       /* realpath of the site dir */
    size_t root_len;
    bool use_openat2; /* probed once at open; never changes afterwards */
};

/* "/index.html" appended to a directory, plus the NUL. */
#define INDEX_NAME "index.html"
#define REL_MAX (BV_SITE_MAX_PATH + sizeof "/" INDEX_NAME)

/* ---- opening ------------------------------------------------------------------------ */

static int sys_openat2(int dirfd, const char *path, uint64_t flags, uint64_t resolve) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = flags;
    how.resolve = resolve;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

int bv_site_open(const char *dir, unsigned flags, bv_site **out, bv_err *err) {
    bv_site *s = NULL;
    *out = NULL;
    if (!dir || !*dir) {
        bv_err_set(err, "site_dir_unusable", "", "site.dir is empty");
        return -1;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        bv_err_set(err, "site_dir_unusable", dir, "out of memory");
        return -1;
    }
    s->root_fd = -1;
    s->root = realpath(dir, NULL);
    if (!s->root) {
        bv_err_set(err, "site_dir_unusable", dir, "realpath: %s", strerror(errno));
        goto err;
    }
    s->root_len = strlen(s->root);
    s->root_fd = open(s->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (s->root_fd < 0) {
        bv_err_set(err, "site_dir_unusable", dir, "%s: %s", s->root, strerror(errno));
        goto err;
    }
    if (!(flags & BV_SITE_NO_OPENAT2)) {
        int probe = sys_openat2(s->root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC,
                                RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
        if (probe >= 0) {
            close(probe);
            s->use_openat2 = true;
        }
    }
    *out = s;
    return 0;
err:
    bv_site_close(s);
    return -1;
}

void bv_site_close(bv_site *s) {
    if (!s) return;
    if (s->root_fd >= 0) close(s->root_fd);
    free(s->root);
    free(s);
}

const char *bv_site_root(const bv_site *s) { return s->root; }

/* Open rel (relative, already validated) beneath the root. Returns an fd (O_NONBLOCK still
 * set) or -1 with errno; EXDEV/ELOOP mean "would leave the root". */
static int open_beneath(const bv_site *s, const char *rel) {
    const int oflags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    if (s->use_openat2) {
        int fd = -1;
        /* EAGAIN: the kernel saw a concurrent rename during resolution; try again, briefly. */
        for (int tries = 0; tries < 8; tries++) {
            fd = sys_openat2(s->root_fd, rel, oflags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
            if (fd >= 0 || errno != EAGAIN) break;
        }
        return fd;
    }
    /* Fallback: resolve every symlink, then insist the result is the root or below it. */
    char full[PATH_MAX];
    int n = snprintf(full, sizeof full, "%s/%s", s->root, rel);
    if (n < 0 || (size_t)n >= sizeof full) {
        errno = ENAMETOOLONG;
        return -1;
    }
    char *real = realpath(full, NULL);
    if (!real) return -1;
    bool inside = strncmp(real, s->root, s->root_len) == 0 &&
                  (real[s->root_len] == '/' || real[s->root_len] == 0 ||
                   s->root_len == 1 /* root is "/" */);
    int fd = -1;
    if (!inside)
        errno = EXDEV;
    else
        fd = open(real, oflags | O_NOFOLLOW);
    int saved = errno;
    free(real);
    errno = saved;
    return fd;
}

/* ---- path decoding ------------------------------------------------------------------ */

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode the path part of target into rel ("" for "/", "a/b" for "/a/b"). *dir_slash is
 * set when the path ends in '/'. Returns 0, or the HTTP status to answer (400/404/414). */
static int decode_path(const char *target, char rel[REL_MAX], bool *dir_slash) {
    size_t len = strcspn(target, "?#");
    size_t o = 0;
    *dir_slash = false;
    rel[0] = 0;
    if (len == 0 || target[0] != '/') return 400;
    if (len > BV_SITE_MAX_PATH) return 414;

    size_t i = 1;
    while (i < len) {
        if (target[i] == '/') return 400; /* "//": empty segment, e.g. "//etc/passwd" */
        if (o > 0) rel[o++] = '/';
        size_t seg_start_out = o;
        while (i < len && target[i] != '/') {
            unsigned char c = (unsigned char)target[i];
            if (c == '%') {
                if (i + 2 >= len) return 400; /* "%" or "%X" cut short */
                int hi = hexval((unsigned char)target[i + 1]);
                int lo = hexval((unsigned char)target[i + 2]);
                if (hi < 0 || lo < 0) return 400;
                c = (unsigned char)(hi * 16 + lo);
                i += 3;
            } else {
                i++;
            }
            if (c == 0 || c == '/' || c == '\\' || c < 0x20 || c == 0x7f) return 400;
            rel[o++] = (char)c; /* o < len <= BV_SITE_MAX_PATH: decoding never grows */
        }
        rel[o] = 0;
        const char *seg = rel + seg_start_out;
        if (strcmp(seg, ".") == 0 || strcmp(seg, "..") == 0) return 400;
        if (seg[0] == '.') return 404; /* dot-files are never served */
        if (i < len) {                 /* at a '/' */
            i++;
            if (i == len) *dir_slash = true;
        }
    }
    if (len == 1) *dir_slash = true; /* "/" */
    return 0;
}

/* ---- content type, caching ---------------------------------------------------------- */

static const struct {
    const char *ext;
    const char *type;
} TYPES[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"webp", "image/webp"},
    {"ico", "image/x-icon"},
    {"txt", "text/plain; charset=utf-8"},
    {"woff2", "font/woff2"},
};

static const char *content_type_of(const char *rel) {
    const char *slash = strrchr(rel, '/');
    const char *base = slash ? slash + 1 : rel;
    const char *dot = strrchr(base, '.');
    if (dot && dot[1]) {
        for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
            if (strcasecmp(dot + 1, TYPES[i].ext) == 0) return TYPES[i].type;
    }
    return "application/octet-stream";
}

/* ---- resolve ------------------------------------------------------------------------ */

/* rel (length rl) names a directory: make it name its index.html. decode_path() keeps
 * rl < BV_SITE_MAX_PATH, and REL_MAX leaves room for "/index.html" and the NUL. */
static void append_index(char rel[REL_MAX], size_t rl) {
    if (rl > 0) rel[rl++] = '/';
    memcpy(rel + rl, INDEX_NAME, sizeof INDEX_NAME);
}

/* errno of a failed open => status. Everything "not there / not allowed / would escape"
 * is a plain 404 so that probing the file system through the site learns nothing. */
static int open_errno_status(int e) {
    switch (e) {
    case ENOENT: case ENOTDIR: case ELOOP: case EXDEV: case EACCES: case EPERM:
    case ENAMETOOLONG: case ENXIO: case ENODEV:
        return 404;
    default:
        return 500;
    }
}

int bv_site_resolve(const bv_site *s, const char *target, bv_site_file *out) {
    char rel[REL_MAX];
    bool dir_slash;
    struct stat st;
    int fd = -1;
    int status;

    memset(out, 0, sizeof *out);
    out->fd = -1;
    if (!s || !target) return 400;

    status = decode_path(target, rel, &dir_slash);
    if (status) return status;

    size_t rl = strlen(rel);
    if (dir_slash) append_index(rel, rl);
    fd = open_beneath(s, rel);
    if (fd < 0) {
        status = open_errno_status(errno);
        goto err;
    }
    if (fstat(fd, &st) < 0) {
        status = 500;
        goto err;
    }
    if (S_ISDIR(st.st_mode) && !dir_slash) {
        /* "/docs" names a directory: serve its index.html, resolved afresh from the root
         * so that the same beneath-the-root rule applies to it. */
        close(fd);
        append_index(rel, rl);
        fd = open_beneath(s, rel);
        if (fd < 0) {
            status = open_errno_status(errno);
            goto err;
        }
        if (fstat(fd, &st) < 0) {
            status = 500;
            goto err;
        }
    }
    if (!S_ISREG(st.st_mode)) {
        status = 404; /* a directory "index.html", a FIFO, a device: never served */
        goto err;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        status = 500;
        goto err;
    }

    uint64_t mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
    out->fd = fd;
    out->size = (uint64_t)st.st_size;
    out->content_type = content_type_of(rel);
    out->cache_control = strncmp(out->content_type, "text/html", 9) == 0
                             ? "no-cache"
                             : "public, max-age=300";
    snprintf(out->etag, sizeof out->etag, "\"%llx-%llx\"", (unsigned long long)out->size,
             (unsigned long long)mtime_ns);
    out->mtime_s = (int64_t)st.st_mtim.tv_sec;
    return 200;
err:
    if (fd >= 0) {
        int saved = errno;
        close(fd);
        errno = saved;
    }
    return status;
}

/* ---- If-None-Match ------------------------------------------------------------------ */

bool bv_site_not_modified(const char *inm, const char *etag) {
    if (!inm || !etag || etag[0] != '"') return false;
    /* Compare opaque tags weakly: the quoted part only, "W/" ignored on both sides. */
    const char *want = etag;
    size_t want_len = strlen(etag);
    const char *p = inm;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p) return false;
        if (*p == '*') return true;
        if (p[0] == 'W' && p[1] == '/') p += 2;
        if (*p != '"') return false; /* malformed list: no match, serve the file */
        const char *end = strchr(p + 1, '"');
        if (!end) return false;
        size_t n = (size_t)(end - p) + 1;
        if (n == want_len && memcmp(p, want, n) == 0) return true;
        p = end + 1;
    }
}

/* ---- /api aliases ------------------------------------------------------------------- */

static bool in_list(char **list, size_t n, const char *name) {
    if (!list || !name) return false;
    for (size_t i = 0; i < n; i++)
        if (list[i] && strcmp(list[i], name) == 0) return true;
    return false;
}

bool bv_site_table_allowed(const bv_site_allow *a, const char *table) {
    return a && in_list(a->public_tables, a->n_public_tables, table);
}

bool bv_site_event_allowed(const bv_site_allow *a, const char *event) {
    return a && in_list(a->public_events, a->n_public_events, event);
}

bv_site_api bv_site_api_route(const char *target, char event[BV_SITE_MAX_NAME + 1]) {
    static const char push[] = "/api/push/";
    size_t len = strcspn(target, "?");
    if (event) event[0] = 0;
    if (len < 4 || strncmp(target, "/api", 4) != 0 || (len > 4 && target[4] != '/'))
        return BV_SITE_API_NONE;
    while (len > 0 && target[len - 1] == '/') len--;
    if (len == 8 && strncmp(target, "/api/get", 8) == 0) return BV_SITE_API_GET;
    if (len > sizeof push - 1 && strncmp(target, push, sizeof push - 1) == 0) {
        const char *name = target + sizeof push - 1;
        size_t n = len - (sizeof push - 1);
        if (n > BV_SITE_MAX_NAME || memchr(name, '/', n)) return BV_SITE_API_NOT_FOUND;
        if (event) {
            memcpy(event, name, n);
            event[n] = 0;
        }
        return BV_SITE_API_PUSH;
    }
    return BV_SITE_API_NOT_FOUND;
}
