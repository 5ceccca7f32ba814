/*
 * unpack.c — libarchive reader + disk writer with our own path policy in front.
 *
 * Policy is checked on the entry names before libarchive sees them; libarchive's secure
 * flags are a second line of defence. Each layer keeps a set of the paths it created so an
 * opaque whiteout only removes what lower layers put there.
 */
#include "unpack.h"
#include "oci.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Normalise an entry path into out: strip leading "/" and "./", collapse "//" and "/./".
 * Returns -1 for a ".." component, 1 for the root itself, 0 otherwise. */
static int norm_path(const char *in, char *out, size_t len)
{
    size_t o = 0;
    const char *p = in;
    out[0] = 0;
    while (*p) {
        while (*p == '/')
            p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0)
            break;
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return -1;
        if (!(n == 1 && p[0] == '.')) {
            if (o + n + 2 >= len)
                return -1;
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
            out[o] = 0;
        }
        p += n;
    }
    return o == 0 ? 1 : 0;
}

/* Does a relative symlink target, resolved from the link's directory, stay inside? */
static int symlink_inside(const char *linkpath, const char *target)
{
    int depth = 0;
    for (const char *p = linkpath; *p; p++)
        if (*p == '/')
            depth++;
    const char *p = target;
    while (*p) {
        while (*p == '/')
            p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0)
            break;
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (--depth < 0)
                return 0;
        } else if (!(n == 1 && p[0] == '.')) {
            depth++;
        }
        p += n;
    }
    return 1;
}

static void opaque_clear(const char *rootfs, const char *dir, json_t *created)
{
    char *full = *dir ? ctl_asprintf("%s/%s", rootfs, dir) : ctl_strdup(rootfs);
    DIR *d = opendir(full);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *rel = *dir ? ctl_asprintf("%s/%s", dir, e->d_name) : ctl_strdup(e->d_name);
            if (!json_object_get(created, rel)) {
                char *c = ctl_asprintf("%s/%s", rootfs, rel);
                char err[CTL_ERR_LEN];
                ctl_rmtree(c, err);
                free(c);
            }
            free(rel);
        }
        closedir(d);
    }
    free(full);
}

int unpack_layer(const char *layer_path, const char *name, const char *rootfs, char *err)
{
    struct archive *a = archive_read_new();
    struct archive *w = archive_write_disk_new();
    json_t *created = json_object();
    int rc = -1;
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    archive_write_disk_set_options(w, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                                          ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                          ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_UNLINK);
    if (archive_read_open_filename(a, layer_path, 65536) != ARCHIVE_OK) {
        ctl_errf(err, "layer %s: %s", name, archive_error_string(a));
        goto out;
    }
    struct archive_entry *e;
    char rel[PATH_MAX], tgt[PATH_MAX];
    for (;;) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            ctl_errf(err, "layer %s: %s", name, archive_error_string(a));
            goto out;
        }
        const char *path = archive_entry_pathname(e);
        if (!path) {
            ctl_errf(err, "layer %s: entry without a name", name);
            goto out;
        }
        int nr = norm_path(path, rel, sizeof rel);
        if (nr < 0) {
            ctl_errf(err, "layer %s: entry '%s' escapes the rootfs (..); refused", name, path);
            goto out;
        }
        if (nr == 1)
            continue; /* the root directory itself */
        const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%.*s", (int)(base - rel ? base - rel - 1 : 0), rel);
        if (!strncmp(base, ".wh.", 4)) {
            if (!strcmp(base, ".wh..wh..opq")) {
                opaque_clear(rootfs, parent, created);
            } else {
                const char *w = base + 4;
                if (!*w || !strcmp(w, ".") || !strcmp(w, "..")) {
                    ctl_errf(err, "layer %s: whiteout '%s' names no file (escapes the rootfs); refused", name, path);
                    goto out;
                }
                char *victim = *parent ? ctl_asprintf("%s/%s/%s", rootfs, parent, base + 4)
                                       : ctl_asprintf("%s/%s", rootfs, base + 4);
                int x = ctl_rmtree(victim, err);
                free(victim);
                if (x < 0)
                    goto out;
            }
            continue;
        }
        mode_t type = archive_entry_filetype(e);
        const char *hard = archive_entry_hardlink(e);
        if (hard) {
            if (norm_path(hard, tgt, sizeof tgt) != 0) {
                ctl_errf(err, "layer %s: hard link '%s' -> '%s' points outside the rootfs; refused",
                         name, path, hard);
                goto out;
            }
            char *h = ctl_asprintf("%s/%s", rootfs, tgt);
            archive_entry_set_hardlink(e, h);
            free(h);
        } else if (type == AE_IFLNK) {
            const char *t = archive_entry_symlink(e);
            if (!t || t[0] == '/') {
                ctl_errf(err, "layer %s: '%s' is an absolute symlink (-> %s); refused "
                         "(images must use relative links)", name, path, t ? t : "");
                goto out;
            }
            if (!symlink_inside(rel, t)) {
                ctl_errf(err, "layer %s: symlink '%s' -> '%s' points outside the rootfs; refused",
                         name, path, t);
                goto out;
            }
        } else if (type == AE_IFCHR || type == AE_IFBLK) {
            ctl_errf(err, "layer %s: '%s' is a device node; refused", name, path);
            goto out;
        } else if (type != AE_IFREG && type != AE_IFDIR) {
            ctl_errf(err, "layer %s: '%s' is a special file (fifo/socket); refused", name, path);
            goto out;
        }
        char *full = ctl_asprintf("%s/%s", rootfs, rel);
        struct stat st;
        if (lstat(full, &st) == 0 && !hard && (S_ISDIR(st.st_mode) != (type == AE_IFDIR)))
            ctl_rmtree(full, err);
        archive_entry_set_pathname(e, full);
        free(full);
        archive_entry_set_perm(e, archive_entry_perm(e) & 0777);
        archive_entry_set_uid(e, geteuid());
        archive_entry_set_gid(e, getegid());
        if (archive_write_header(w, e) != ARCHIVE_OK) {
            ctl_errf(err, "layer %s: '%s': %s", name, path, archive_error_string(w));
            goto out;
        }
        if (type == AE_IFREG && !hard) {
            const void *buf;
            size_t size;
            la_int64_t off;
            while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
                if (archive_write_data_block(w, buf, size, off) != ARCHIVE_OK) {
                    ctl_errf(err, "layer %s: '%s': %s", name, path, archive_error_string(w));
                    goto out;
                }
            }
            if (r != ARCHIVE_EOF) {
                ctl_errf(err, "layer %s: '%s': %s", name, path, archive_error_string(a));
                goto out;
            }
        }
        if (archive_write_finish_entry(w) != ARCHIVE_OK) {
            ctl_errf(err, "layer %s: '%s': %s", name, path, archive_error_string(w));
            goto out;
        }
        json_object_set_new(created, rel, json_true());
    }
    if (archive_write_close(w) != ARCHIVE_OK) {
        ctl_errf(err, "layer %s: %s", name, archive_error_string(w));
        goto out;
    }
    rc = 0;
out:
    archive_read_free(a);
    archive_write_free(w);
    json_decref(created);
    return rc;
}

int unpack_image(const char *store_dir, json_t *layers, const char *final, char *err)
{
    struct stat st;
    if (stat(final, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    char *tmp = ctl_asprintf("%s.tmp.%d", final, (int)getpid());
    int rc = -1;
    if (ctl_rmtree(tmp, err) < 0 || ctl_mkdirs(tmp, 0755, err) < 0)
        goto out;
    char real[PATH_MAX];
    if (!realpath(tmp, real)) {
        ctl_errf(err, "%s: %s", tmp, strerror(errno));
        goto out;
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
        int x = unpack_layer(p, d, real, err);
        free(p);
        if (x < 0)
            goto fail;
    }
    chmod(real, 0755);
    if (rename(tmp, final) < 0) {
        ctl_errf(err, "rename %s -> %s: %s", tmp, final, strerror(errno));
        goto fail;
    }
    rc = 0;
    goto out;
fail: {
    char e2[CTL_ERR_LEN];
    ctl_rmtree(tmp, e2);
}
out:
    free(tmp);
    return rc;
}
