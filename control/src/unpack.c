/*
 * unpack.c — libarchive reader, and a writer of our own that resolves every path in the
 * kernel beneath the rootfs (see unpack.h for the policy).
 *
 * The writer keeps one O_PATH descriptor of the rootfs. For an entry `p/q/name` it asks
 * the kernel for `p/q` with openat2(rootfd, "p/q", RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
 * (creating missing directories one component at a time, each again resolved beneath),
 * then acts on `name` relative to that descriptor with *at() calls that do not follow a
 * final symlink (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, unlinkat, symlinkat, linkat without
 * AT_SYMLINK_FOLLOW). Removal of trees walks descriptors too (openat O_NOFOLLOW), so a
 * symlink met anywhere is removed as a link, never entered. No path string is ever checked
 * for safety: the only textual rule left is the refusal of `..` components in entry names,
 * which keeps error messages clear; the kernel is what keeps the writes inside.
 *
 * Each layer keeps a set of the paths it created so an opaque whiteout only removes what
 * lower layers put there. Directory modes are applied at the end of the layer (deepest
 * first) so a read-only directory can still receive its entries.
 */
#include "unpack.h"
#include "oci.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Deepest directory nesting walked when removing a tree or checking links. */
#define UNPACK_MAX_DEPTH 256
/* openat2 answers EAGAIN when a concurrent rename races the walk; retry that often. */
#define UNPACK_OPENAT2_RETRIES 8

struct layer_ctx {
    int rootfd;           /* O_PATH descriptor of the rootfs */
    const char *name;     /* layer digest, for messages */
    json_t *created;      /* rel path -> true, for opaque whiteouts */
    json_t *dir_modes;    /* rel path -> mode, applied at the end of the layer */
    uint64_t max_bytes;   /* uncompressed bytes this layer may take */
    const char *limit;    /* the setting that max_bytes comes from, for messages */
    uint64_t limit_value; /* its value */
    char *err;
};

/* ---- kernel-resolved paths ----------------------------------------------------------- */

static int open_beneath(int rootfd, const char *rel, int flags) {
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd = -1;
    for (int i = 0; i < UNPACK_OPENAT2_RETRIES; i++) {
        fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
        if (fd >= 0 || errno != EAGAIN) break;
    }
    return (int)fd;
}

/* Descriptor (O_PATH) of directory rel beneath the rootfs; "" is the rootfs. With create,
 * missing components are made (0755), each resolved beneath again. -1 with errno. */
static int open_dir(int rootfd, const char *rel, int create) {
    if (!*rel) return fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
    int fd = open_beneath(rootfd, rel, O_PATH | O_DIRECTORY);
    if (fd >= 0 || errno != ENOENT || !create) return fd;
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", rel);
    int cur = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
    char *comp = buf;
    while (cur >= 0) {
        char *slash = strchr(comp, '/');
        if (slash) *slash = 0;
        int next = open_beneath(rootfd, buf, O_PATH | O_DIRECTORY);
        if (next < 0 && errno == ENOENT) {
            if (mkdirat(cur, comp, 0755) < 0 && errno != EEXIST) {
                int e = errno;
                close(cur);
                errno = e;
                return -1;
            }
            next = open_beneath(rootfd, buf, O_PATH | O_DIRECTORY);
        }
        int e = errno;
        close(cur);
        errno = e;
        cur = next;
        if (!slash) break;
        *slash = '/';
        comp = slash + 1;
    }
    return cur;
}

static const char *why(int e) { return e == EXDEV ? "resolves outside the rootfs" : strerror(e); }

/* rm -rf of name in dirfd: links are removed, never followed; directories are entered
 * through O_NOFOLLOW descriptors. Missing is success. */
static int rm_at(int dfd, const char *name, int depth) {
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlinkat(dfd, name, 0) < 0 && errno != ENOENT ? -1 : 0;
    if (depth >= UNPACK_MAX_DEPTH) {
        errno = ELOOP;
        return -1;
    }
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        rc = rm_at(dirfd(d), e->d_name, depth + 1);
    }
    closedir(d);
    if (rc == 0 && unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) rc = -1;
    return rc;
}

/* ---- entry names ------------------------------------------------------------------------ */

/* Normalise an entry path into out: strip leading "/" and "./", collapse "//" and "/./".
 * Returns -1 for a ".." component (or too long), 1 for the root itself, 0 otherwise. */
static int norm_path(const char *in, char *out, size_t len) {
    size_t o = 0;
    const char *p = in;
    out[0] = 0;
    while (*p) {
        while (*p == '/') p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0) break;
        if (n == 2 && p[0] == '.' && p[1] == '.') return -1;
        if (!(n == 1 && p[0] == '.')) {
            if (o + n + 2 >= len) return -1;
            if (o) out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
            out[o] = 0;
        }
        p += n;
    }
    return o == 0 ? 1 : 0;
}

/* Split rel into parent (may be "") and the final name (points into rel). */
static const char *split(const char *rel, char *parent, size_t len) {
    const char *slash = strrchr(rel, '/');
    if (!slash) {
        parent[0] = 0;
        return rel;
    }
    snprintf(parent, len, "%.*s", (int)(slash - rel), rel);
    return slash + 1;
}

/* ---- whiteouts --------------------------------------------------------------------------- */

static int whiteout(struct layer_ctx *l, const char *path, const char *parent, const char *victim) {
    if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
        return ctl_errf(l->err, "layer %s: whiteout '%s' names no file (escapes the rootfs); refused", l->name, path);
    int dfd = open_dir(l->rootfd, parent, 0);
    if (dfd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) return 0; /* nothing below to delete */
        return ctl_errf(l->err, "layer %s: whiteout '%s': directory '%s' %s; refused", l->name, path, parent,
                        why(errno));
    }
    int rc = rm_at(dfd, victim, 0);
    int e = errno;
    close(dfd);
    if (rc < 0) return ctl_errf(l->err, "layer %s: whiteout '%s': %s", l->name, path, strerror(e));
    return 0;
}

static int opaque(struct layer_ctx *l, const char *path, const char *parent) {
    int dfd = open_dir(l->rootfd, parent, 1);
    if (dfd < 0)
        return ctl_errf(l->err, "layer %s: opaque whiteout '%s': directory '%s' %s; refused", l->name, path,
                        *parent ? parent : ".", why(errno));
    int rfd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = rfd >= 0 ? fdopendir(rfd) : NULL;
    if (!d) {
        int e = errno;
        if (rfd >= 0) close(rfd);
        close(dfd);
        return ctl_errf(l->err, "layer %s: opaque whiteout '%s': %s", l->name, path, strerror(e));
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *rel = *parent ? ctl_asprintf("%s/%s", parent, e->d_name) : ctl_strdup(e->d_name);
        if (!json_object_get(l->created, rel) && rm_at(dfd, e->d_name, 0) < 0)
            rc = ctl_errf(l->err, "layer %s: opaque whiteout '%s': removing '%s': %s", l->name, path, rel,
                          strerror(errno));
        free(rel);
    }
    closedir(d);
    close(dfd);
    return rc;
}

/* ---- entries ----------------------------------------------------------------------------- */

/* Does the symlink at rel (kernel-resolved from the rootfs, links followed) leave it?
 * A dangling link (ENOENT, ENOTDIR, ELOOP) does not: it resolves nowhere. */
static int link_escapes(int rootfd, const char *rel) {
    int fd = open_beneath(rootfd, rel, O_PATH);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return errno == EXDEV;
}

/* Make room for an entry of type `type` at name in dfd: a directory stays when a directory
 * comes, anything else is removed (trees through descriptors). */
static int make_room(struct layer_ctx *l, int dfd, const char *name, mode_t type, const char *path) {
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) return 0;
        return ctl_errf(l->err, "layer %s: '%s': %s", l->name, path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode) && type == AE_IFDIR) return 0;
    if (rm_at(dfd, name, 0) < 0)
        return ctl_errf(l->err, "layer %s: '%s': replacing the existing entry: %s", l->name, path, strerror(errno));
    return 0;
}

static void set_times(int dfd, const char *name, struct archive_entry *e, int fd) {
    if (!archive_entry_mtime_is_set(e)) return;
    struct timespec ts[2];
    ts[0].tv_sec = ts[1].tv_sec = archive_entry_mtime(e);
    ts[0].tv_nsec = ts[1].tv_nsec = archive_entry_mtime_nsec(e);
    /* times are cosmetic: a failure here is not worth refusing the image */
    if (fd >= 0) (void)futimens(fd, ts);
    else (void)utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW);
}

/* Has the uncompressed stream gone over the budget? Then say which limit, once. */
static int over_limit(struct layer_ctx *l, struct archive *a, const char *path) {
    if ((uint64_t)archive_filter_bytes(a, 0) <= l->max_bytes) return 0;
    return ctl_errf(l->err, "layer %s: '%s': the %s expands to more than %llu bytes (%s); refused", l->name, path,
                    strcmp(l->limit, "unpack.max_layer_bytes") ? "image" : "layer", (unsigned long long)l->limit_value,
                    l->limit);
}

/* Copy the entry's data into fd, charging the layer's budget as the stream is read. */
static int write_data(struct layer_ctx *l, struct archive *a, int fd, const char *path) {
    const void *buf;
    size_t size;
    la_int64_t off;
    int r;
    while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
        if (over_limit(l, a, path) < 0) return -1;
        const char *p = buf;
        while (size) {
            ssize_t n = pwrite(fd, p, size, (off_t)off);
            if (n < 0) {
                if (errno == EINTR) continue;
                return ctl_errf(l->err, "layer %s: '%s': write: %s", l->name, path, strerror(errno));
            }
            p += n;
            off += n;
            size -= (size_t)n;
        }
    }
    if (r != ARCHIVE_EOF) return ctl_errf(l->err, "layer %s: '%s': %s", l->name, path, archive_error_string(a));
    return 0;
}

static int put_file(struct layer_ctx *l, struct archive *a, struct archive_entry *e, int dfd, const char *base,
                    const char *path) {
    la_int64_t size = archive_entry_size(e);
    uint64_t used = (uint64_t)archive_filter_bytes(a, 0);
    if (size > 0 && used + (uint64_t)size > l->max_bytes)
        return ctl_errf(l->err,
                        "layer %s: '%s' is %lld bytes: the %s would expand to more than %llu bytes (%s); "
                        "refused",
                        l->name, path, (long long)size, strcmp(l->limit, "unpack.max_layer_bytes") ? "image" : "layer",
                        (unsigned long long)l->limit_value, l->limit);
    int fd = openat(dfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return ctl_errf(l->err, "layer %s: '%s': %s", l->name, path, strerror(errno));
    int rc = write_data(l, a, fd, path);
    if (rc == 0 && size > 0 && ftruncate(fd, (off_t)size) < 0) /* a sparse tail */
        rc = ctl_errf(l->err, "layer %s: '%s': %s", l->name, path, strerror(errno));
    if (rc == 0 && fchmod(fd, archive_entry_perm(e) & 0777) < 0)
        rc = ctl_errf(l->err, "layer %s: '%s': chmod: %s", l->name, path, strerror(errno));
    if (rc == 0) set_times(dfd, base, e, fd);
    close(fd);
    return rc;
}

static int put_link(struct layer_ctx *l, struct archive_entry *e, int dfd, const char *base, const char *rel,
                    const char *path) {
    const char *t = archive_entry_symlink(e);
    if (!t || !*t || t[0] == '/')
        return ctl_errf(l->err,
                        "layer %s: '%s' is an absolute symlink (-> %s); refused "
                        "(images must use relative links)",
                        l->name, path, t ? t : "");
    if (symlinkat(t, dfd, base) < 0)
        return ctl_errf(l->err, "layer %s: '%s': symlink: %s", l->name, path, strerror(errno));
    if (link_escapes(l->rootfd, rel))
        return ctl_errf(l->err, "layer %s: symlink '%s' -> '%s' points outside the rootfs; refused", l->name, path, t);
    set_times(dfd, base, e, -1);
    return 0;
}

static int put_hardlink(struct layer_ctx *l, const char *hard, int dfd, const char *base, const char *path) {
    char tgt[PATH_MAX], tparent[PATH_MAX];
    if (norm_path(hard, tgt, sizeof tgt) != 0)
        return ctl_errf(l->err, "layer %s: hard link '%s' -> '%s' points outside the rootfs; refused", l->name, path,
                        hard);
    const char *tbase = split(tgt, tparent, sizeof tparent);
    int sfd = open_dir(l->rootfd, tparent, 0);
    if (sfd < 0)
        return ctl_errf(l->err, "layer %s: hard link '%s' -> '%s': the target's directory %s; refused", l->name, path,
                        hard, why(errno));
    struct stat st;
    int rc = 0;
    if (fstatat(sfd, tbase, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode))
        rc = ctl_errf(l->err, "layer %s: hard link '%s' -> '%s': no such file in the rootfs; refused", l->name, path,
                      hard);
    else if (linkat(sfd, tbase, dfd, base, 0) < 0 && errno != EEXIST)
        rc = ctl_errf(l->err, "layer %s: hard link '%s' -> '%s': %s", l->name, path, hard, strerror(errno));
    close(sfd);
    return rc;
}

static int put_entry(struct layer_ctx *l, struct archive *a, struct archive_entry *e, const char *path,
                     const char *rel) {
    mode_t type = archive_entry_filetype(e);
    const char *hard = archive_entry_hardlink(e);
    if (!hard) {
        if (type == AE_IFCHR || type == AE_IFBLK)
            return ctl_errf(l->err, "layer %s: '%s' is a device node; refused", l->name, path);
        if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
            return ctl_errf(l->err, "layer %s: '%s' is a special file (fifo/socket); refused", l->name, path);
    }
    char parent[PATH_MAX];
    const char *base = split(rel, parent, sizeof parent);
    int dfd = open_dir(l->rootfd, parent, 1);
    if (dfd < 0)
        return ctl_errf(l->err, "layer %s: '%s': directory '%s' %s; refused", l->name, path, parent, why(errno));
    int rc = make_room(l, dfd, base, hard ? AE_IFREG : type, path);
    if (rc == 0) {
        if (hard) {
            rc = put_hardlink(l, hard, dfd, base, path);
        } else if (type == AE_IFDIR) {
            if (mkdirat(dfd, base, 0700) < 0 && errno != EEXIST)
                rc = ctl_errf(l->err, "layer %s: '%s': mkdir: %s", l->name, path, strerror(errno));
            else json_object_set_new(l->dir_modes, rel, json_integer(archive_entry_perm(e) & 0777));
        } else if (type == AE_IFLNK) {
            rc = put_link(l, e, dfd, base, rel, path);
        } else {
            rc = put_file(l, a, e, dfd, base, path);
        }
    }
    close(dfd);
    return rc;
}

/* ---- after a layer ------------------------------------------------------------------------ */

static int by_length_desc(const void *x, const void *y) {
    size_t a = strlen(*(const char *const *)x), b = strlen(*(const char *const *)y);
    return a < b ? 1 : a > b ? -1 : 0;
}

/* Directory modes, deepest first (a parent made read-only last). */
static int apply_dir_modes(struct layer_ctx *l) {
    size_t n = json_object_size(l->dir_modes), i = 0;
    if (!n) return 0;
    const char **keys = ctl_calloc(n, sizeof *keys);
    const char *k;
    json_t *v;
    json_object_foreach(l->dir_modes, k, v) keys[i++] = k;
    qsort(keys, n, sizeof *keys, by_length_desc);
    int rc = 0;
    for (i = 0; i < n && rc == 0; i++) {
        int fd = open_beneath(l->rootfd, keys[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (fd < 0) continue; /* replaced or removed by a later entry of the layer */
        mode_t m = (mode_t)json_integer_value(json_object_get(l->dir_modes, keys[i]));
        if (fchmod(fd, m) < 0) rc = ctl_errf(l->err, "layer %s: chmod '%s': %s", l->name, keys[i], strerror(errno));
        close(fd);
    }
    free(keys);
    return rc;
}

/* Every symlink in the tree, resolved by the kernel beneath the rootfs: one that leaves it
 * (a chain completed by a later entry or layer) refuses the layer. */
static int check_links(struct layer_ctx *l, int dfd, const char *rel, int depth) {
    if (depth >= UNPACK_MAX_DEPTH)
        return ctl_errf(l->err, "layer %s: directories nested deeper than %d levels below '%s'; refused", l->name,
                        UNPACK_MAX_DEPTH, rel);
    int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return ctl_errf(l->err, "layer %s: reading '%s': %s", l->name, *rel ? rel : ".", strerror(errno));
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat st;
        if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
        char *child = *rel ? ctl_asprintf("%s/%s", rel, e->d_name) : ctl_strdup(e->d_name);
        if (S_ISLNK(st.st_mode) && link_escapes(l->rootfd, child)) {
            char t[PATH_MAX];
            ssize_t n = readlinkat(dfd, e->d_name, t, sizeof t - 1);
            t[n > 0 ? n : 0] = 0;
            rc = ctl_errf(l->err,
                          "layer %s: symlink '%s' -> '%s' points outside the rootfs (through other links); "
                          "refused",
                          l->name, child, t);
        } else if (S_ISDIR(st.st_mode)) {
            int sub = openat(dfd, e->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) {
                rc = check_links(l, sub, child, depth + 1);
                close(sub);
            }
        }
        free(child);
    }
    closedir(d);
    return rc;
}

/* ---- layers ------------------------------------------------------------------------------- */

static int apply_layer(struct archive *a, struct layer_ctx *l) {
    struct archive_entry *e;
    char rel[PATH_MAX];
    for (;;) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) return 0;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
            return ctl_errf(l->err, "layer %s: %s", l->name, archive_error_string(a));
        const char *path = archive_entry_pathname(e);
        if (!path) return ctl_errf(l->err, "layer %s: entry without a name", l->name);
        if (over_limit(l, a, path) < 0) return -1;
        int nr = norm_path(path, rel, sizeof rel);
        if (nr < 0) return ctl_errf(l->err, "layer %s: entry '%s' escapes the rootfs (..); refused", l->name, path);
        if (nr == 1) continue; /* the root directory itself */
        char parent[PATH_MAX];
        const char *base = split(rel, parent, sizeof parent);
        int rc;
        if (!strcmp(base, ".wh..wh..opq")) rc = opaque(l, path, parent);
        else if (!strncmp(base, ".wh.", 4)) rc = whiteout(l, path, parent, base + 4);
        else if ((rc = put_entry(l, a, e, path, rel)) == 0) json_object_set_new(l->created, rel, json_true());
        if (rc < 0) return -1;
    }
}

static int layer_at(int rootfd, const char *layer_path, const char *name, const struct unpack_limits *lim,
                    uint64_t *image_used, char *err) {
    uint64_t used_before = image_used ? *image_used : 0;
    uint64_t image_left = lim->max_image_bytes > used_before ? lim->max_image_bytes - used_before : 0;
    struct layer_ctx l = { .rootfd = rootfd,
                           .name = name,
                           .created = json_object(),
                           .dir_modes = json_object(),
                           .max_bytes = lim->max_layer_bytes,
                           .limit = "unpack.max_layer_bytes",
                           .limit_value = lim->max_layer_bytes,
                           .err = err };
    if (image_left < l.max_bytes) {
        l.max_bytes = image_left;
        l.limit = "unpack.max_image_bytes";
        l.limit_value = lim->max_image_bytes;
    }
    struct archive *a = archive_read_new();
    int rc = -1;
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    if (archive_read_open_filename(a, layer_path, 65536) != ARCHIVE_OK) {
        ctl_errf(err, "layer %s: %s", name, archive_error_string(a));
        goto out;
    }
    rc = apply_layer(a, &l);
    if (rc == 0) rc = apply_dir_modes(&l);
    if (rc == 0) rc = check_links(&l, rootfd, "", 0);
    if (image_used) *image_used = used_before + (uint64_t)archive_filter_bytes(a, 0);
out:
    archive_read_free(a);
    json_decref(l.created);
    json_decref(l.dir_modes);
    return rc;
}

static const struct unpack_limits DEFAULT_LIMITS = { UNPACK_DEFAULT_MAX_LAYER_BYTES, UNPACK_DEFAULT_MAX_IMAGE_BYTES };

int unpack_layer(const char *layer_path, const char *name, const char *rootfs, const struct unpack_limits *lim,
                 uint64_t *image_used, char *err) {
    int rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) return ctl_errf(err, "rootfs %s: %s", rootfs, strerror(errno));
    int rc = layer_at(rootfd, layer_path, name, lim ? lim : &DEFAULT_LIMITS, image_used, err);
    close(rootfd);
    return rc;
}

int unpack_image(const char *store_dir, json_t *layers, const char *final, const struct unpack_limits *lim, char *err) {
    struct stat st;
    if (stat(final, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    if (!lim) lim = &DEFAULT_LIMITS;
    char *tmp = ctl_asprintf("%s.tmp.%d", final, (int)getpid());
    int rc = -1, rootfd = -1;
    uint64_t used = 0;
    if (ctl_rmtree(tmp, err) < 0 || ctl_mkdirs(tmp, 0755, err) < 0) goto out;
    rootfd = open(tmp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0) {
        ctl_errf(err, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l) {
        const char *d = json_string_value(json_object_get(l, "digest"));
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        if (!ctl_is_digest(d)) {
            ctl_errf(err, "layer %zu: invalid digest", i);
            goto fail;
        }
        if (mt && (strstr(mt, "nondistributable") || strstr(mt, "foreign"))) {
            ctl_errf(err, "layer %s: media type %s is not supported", d, mt);
            goto fail;
        }
        char *p = oci_blob_path(store_dir, d);
        int x = layer_at(rootfd, p, d, lim, &used, err);
        free(p);
        if (x < 0) goto fail;
    }
    if (fchmodat(AT_FDCWD, tmp, 0755, 0) < 0) {
        ctl_errf(err, "chmod %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, final) < 0) {
        ctl_errf(err, "rename %s -> %s: %s", tmp, final, strerror(errno));
        goto fail;
    }
    rc = 0;
    goto out;
fail : {
    char e2[CTL_ERR_LEN];
    ctl_rmtree(tmp, e2);
}
out:
    if (rootfd >= 0) close(rootfd);
    free(tmp);
    return rc;
}
