/*
 * state.c — state directory helpers (see state.h for the layout).
 */
#include "state.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int state_init(const char *state_dir, char *err) {
    /* The image rootfs must be reachable by the image's (non-root) user under bwrap:
     * state_dir is traversable (0711) and images/ readable; backups hold data: 0700. */
    const char *subs[] = { "", "/blobs", "/blobs/sha256", "/images", "/backups", "/logs", NULL };
    const mode_t modes[] = { 0711, 0700, 0700, 0755, 0700, 0750 };
    for (int i = 0; subs[i]; i++) {
        char *p = ctl_asprintf("%s%s", state_dir, subs[i]);
        int rc = ctl_mkdirs(p, modes[i], err);
        if (rc == 0 && chmod(p, modes[i]) < 0) rc = ctl_errf(err, "chmod %s: %s", p, strerror(errno));
        free(p);
        if (rc < 0) return -1;
    }
    return 0;
}

int state_lock(const char *state_dir, int *fd_out, char *err) {
    char *p = ctl_asprintf("%s/lock", state_dir);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        ctl_errf(err, "%s: %s", p, strerror(errno));
        free(p);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char buf[32] = "";
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = 0;
        buf[strcspn(buf, "\r\n")] = 0;
        ctl_errf(err, "another beava-control (pid %s) holds %s: one daemon per host", *buf ? buf : "?", p);
        close(fd);
        free(p);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    /* the pid is informational only: a failed write is ignored */
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {}
    free(p);
    *fd_out = fd;
    return 0;
}

json_t *state_load(const char *state_dir, const char *name) {
    char *p = ctl_asprintf("%s/%s.json", state_dir, name);
    char *text = NULL;
    size_t len = 0;
    char err[CTL_ERR_LEN];
    json_t *v = NULL;
    if (ctl_read_file(p, 64u << 20, &text, &len, err) == 0) v = json_loadb(text, len, 0, NULL);
    free(text);
    free(p);
    return v;
}

int state_save(const char *state_dir, const char *name, json_t *v, char *err) {
    char *p = ctl_asprintf("%s/%s.json", state_dir, name);
    int rc = 0;
    if (!v) {
        if (unlink(p) < 0 && errno != ENOENT) rc = ctl_errf(err, "unlink %s: %s", p, strerror(errno));
        else rc = ctl_fsync_dir(state_dir, err);
    } else {
        char *text = json_dumps(v, JSON_INDENT(1) | JSON_SORT_KEYS);
        rc = ctl_write_file_atomic(p, text, strlen(text), 0640, err);
        free(text);
    }
    free(p);
    return rc;
}
