/*
 * runtime.c — start, watch and stop the server as a plain or bubblewrapped process.
 *
 * Spawning: every allocation (argv, envp, bwrap's argument list) happens before fork; the
 * child only calls async-signal-safe functions (setsid, dup2, setgid/setuid, execve), as a
 * fork from a multi-threaded daemon must. bwrap reports the sandboxed process's pid on
 * --info-fd; that pid (not bwrap's monitor) is what gets the signals, because bwrap does
 * not forward them.
 *
 * Descriptors: the server gets the soft RLIMIT_NOFILE raised to the hard limit (the default
 * soft limit of 1024 is far below what a server holding client connections needs; the
 * packaging units set LimitNOFILE= for the hard one), and inherits no descriptor of ours
 * beyond 0-2 (and bwrap's info pipe).
 *
 * Waiting for a process to end takes no polling: its pidfd (Linux 5.3+) turns readable when
 * it exits, and poll() sleeps on that with the deadline as the timeout (wait_gone). Only a
 * kernel without pidfd_open (or no descriptor to spare) falls back to looking again every
 * RUNTIME_EXIT_POLL_MS.
 */
#include "runtime.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define RT_FD_PARK 64 /* fds passed to the server are parked above this before dup2 */
/* How long a stop waits after SIGKILL, for bwrap's monitor after its child, and how long a
 * start waits for an exec failure (exit 126/127) to show before it records the instance. */
#define RUNTIME_KILL_WAIT_MS 10000
#define RUNTIME_MONITOR_WAIT_MS 2000
#define RUNTIME_EXEC_FAIL_WAIT_MS 50
/* runtime_kill_unrecorded: rounds of scan + SIGKILL at most, and how long they may take */
#define RUNTIME_KILL_ROUNDS 100
#define RUNTIME_KILL_UNRECORDED_MS 2000
/* Without a pidfd: look again this often. */
#define RUNTIME_EXIT_POLL_MS 20

struct strv {
    char **v;
    size_t n, cap;
};

static void sv_add(struct strv *s, const char *x) {
    if (s->n + 2 > s->cap) {
        s->cap = s->cap ? s->cap * 2 : 32;
        s->v = ctl_realloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = ctl_strdup(x);
    s->v[s->n] = NULL;
}

static void sv_free(struct strv *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static long long proc_starttime(pid_t pid, char *state) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    p += 2; /* state */
    if (state) *state = *p;
    /* fields after ')' start at field 3 (state); starttime is field 22 */
    int field = 3;
    while (*p && field < 22) {
        if (*p == ' ') field++;
        p++;
    }
    return strtoll(p, NULL, 10);
}

static bool pid_alive(pid_t pid, long long start) {
    if (pid <= 0) return false;
    char st = 0;
    long long s = proc_starttime(pid, &st);
    if (s < 0 || st == 'Z' || st == 'X') return false;
    return start <= 0 || s == start;
}

/* A pidfd for pid, or -1 (no such process, no descriptor, or a kernel without pidfd_open). */
static int pid_fd(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* Sleep until the process behind pidfd fd exits or ctl_mono_ms() reaches deadline. */
static void pidfd_wait(int fd, int64_t deadline) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    for (;;) {
        int64_t left = deadline - ctl_mono_ms();
        if (left <= 0) return;
        int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0 || (r < 0 && errno != EINTR)) return;
    }
}

/* Wait up to timeout_ms for pid (with start time `start`; 0 = any) to end. True when it is
 * gone; a zombie counts as gone and is left for the caller to reap (a test, the daemon's
 * reaper or runtime_stop want its status). */
static bool wait_gone(pid_t pid, long long start, int64_t timeout_ms) {
    int64_t deadline = ctl_mono_ms() + timeout_ms;
    int fd = pid_fd(pid);
    if (fd >= 0) {
        /* checked after the open: if pid still has that start time, fd is that process */
        if (pid_alive(pid, start)) pidfd_wait(fd, deadline);
        close(fd);
    } else if (errno != ESRCH) {
        while (pid_alive(pid, start) && ctl_mono_ms() < deadline) usleep(RUNTIME_EXIT_POLL_MS * 1000);
    }
    return !pid_alive(pid, start);
}

void runtime_reap(json_t *exits) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (!exits) continue;
        char key[24];
        snprintf(key, sizeof key, "%d", (int)pid);
        json_object_set_new(exits, key, json_integer(status));
    }
}

char *runtime_exit_text(int status) {
    if (WIFEXITED(status)) return ctl_asprintf("exited with status %d", WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return ctl_asprintf("killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    return ctl_asprintf("ended (wait status %d)", status);
}

char *runtime_log_tail(const char *path, int lines) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ctl_strdup("");
    off_t end = lseek(fd, 0, SEEK_END);
    off_t start = end > 16384 ? end - 16384 : 0;
    size_t len = (size_t)(end - start);
    char *buf = ctl_calloc(len + 1, 1);
    ssize_t n = pread(fd, buf, len, start);
    close(fd);
    if (n < 0) n = 0;
    buf[n] = 0;
    int seen = 0;
    char *p = buf + n;
    if (p > buf && p[-1] == '\n') p--;
    while (p > buf) {
        if (p[-1] == '\n' && ++seen >= lines) break;
        p--;
    }
    char *out = ctl_strdup(p);
    free(buf);
    return out;
}

/* Bytes of the log read when looking for the server's last error. */
#define RUNTIME_LAST_ERROR_SCAN (64 * 1024)

static bool is_error_line(const char *line, size_t len) {
    if (!len || line[0] != '{') return false;
    json_t *j = json_loadb(line, len, 0, NULL);
    const char *lv = json_string_value(json_object_get(j, "level"));
    bool yes = lv && (!strcmp(lv, "error") || !strcmp(lv, "fatal"));
    json_decref(j);
    return yes;
}

char *runtime_log_last_error(const char *path, long long from) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    off_t end = lseek(fd, 0, SEEK_END);
    off_t start = from > 0 && from <= end ? (off_t)from : 0;
    if (end - start > RUNTIME_LAST_ERROR_SCAN) start = end - RUNTIME_LAST_ERROR_SCAN;
    size_t len = (size_t)(end - start);
    char *buf = ctl_calloc(len + 1, 1);
    ssize_t n = pread(fd, buf, len, start);
    close(fd);
    char *found = NULL, *last = NULL;
    size_t found_len = 0, last_len = 0;
    for (char *p = buf, *e; n > 0 && p < buf + n; p = e + 1) {
        e = memchr(p, '\n', (size_t)(buf + n - p));
        if (!e) e = buf + n;
        size_t l = (size_t)(e - p);
        while (l && (p[l - 1] == '\r' || p[l - 1] == ' ')) l--;
        if (!l) continue;
        last = p, last_len = l;
        if (is_error_line(p, l)) found = p, found_len = l;
    }
    char *out = NULL;
    if (found || last)
        out = found ? ctl_asprintf("%.*s", (int)found_len, found) : ctl_asprintf("%.*s", (int)last_len, last);
    free(buf);
    return out;
}

/* Resolve the image's User ("uid[:gid]" or a name in the rootfs's /etc/passwd). */
static int image_user(const char *rootfs, json_t *image_config, uid_t *uid, gid_t *gid) {
    const char *u = json_string_value(json_object_get(image_config, "User"));
    *uid = 0;
    *gid = 0;
    if (!u || !*u) return 0;
    char name[256];
    snprintf(name, sizeof name, "%s", u);
    char *colon = strchr(name, ':');
    if (colon) *colon = 0;
    char *end;
    long v = strtol(name, &end, 10);
    if (!*end) {
        *uid = (uid_t)v;
        *gid = colon ? (gid_t)strtol(colon + 1, NULL, 10) : (gid_t)v;
        return 0;
    }
    char *pw = ctl_asprintf("%s/etc/passwd", rootfs);
    FILE *f = fopen(pw, "re");
    free(pw);
    if (!f) return -1;
    char line[512];
    int rc = -1;
    while (fgets(line, sizeof line, f)) {
        char *save = NULL, *n = strtok_r(line, ":", &save);
        strtok_r(NULL, ":", &save);
        char *us = strtok_r(NULL, ":", &save), *gs = strtok_r(NULL, ":", &save);
        if (n && us && gs && !strcmp(n, name)) {
            *uid = (uid_t)atoi(us);
            *gid = (gid_t)atoi(gs);
            rc = 0;
            break;
        }
    }
    fclose(f);
    return rc;
}

static void chown_tree(const char *path, uid_t uid, gid_t gid) {
    struct stat st;
    if (lstat(path, &st) < 0) return;
    /* a failed lchown is reported when the server fails to write */
    if ((st.st_uid != uid || st.st_gid != gid) && lchown(path, uid, gid) < 0) {}
    if (!S_ISDIR(st.st_mode)) return;
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *c = ctl_asprintf("%s/%s", path, e->d_name);
        chown_tree(c, uid, gid);
        free(c);
    }
    closedir(d);
}

/* Keys the daemon owns: the listen addresses, the data dir and the inherited sockets. An
 * image (or runtime.env) setting one of them is overridden, and the override reported. */
static const char *const DAEMON_KEYS[] = { "BEAVA_LISTEN_ADDR", "BEAVA_ADMIN_ADDR", "BEAVA_TCP_PORT", "BEAVA_DATA_DIR",
                                           "LISTEN_FDS",        "LISTEN_PID",       "LISTEN_FDNAMES", NULL };

static bool daemon_key(const char *kv) {
    size_t n = strcspn(kv, "=");
    for (int i = 0; DAEMON_KEYS[i]; i++)
        if (strlen(DAEMON_KEYS[i]) == n && !strncmp(kv, DAEMON_KEYS[i], n)) return true;
    return false;
}

/* Index of the entry of env whose name is kv's name, or -1. */
static long env_find(const struct strv *env, const char *kv) {
    size_t n = strcspn(kv, "=");
    for (size_t i = 0; i < env->n; i++)
        if (!strncmp(env->v[i], kv, n) && env->v[i][n] == '=') return (long)i;
    return -1;
}

static void note_override(json_t *overrides, const char *kv, const char *by, const char *used) {
    size_t n = strcspn(kv, "=");
    char *key = ctl_asprintf("%.*s", (int)n, kv);
    json_array_append_new(
        overrides,
        json_pack("{s:s,s:s,s:s,s:s}", "key", key, "image_value", kv[n] ? kv + n + 1 : "", "by", by, "value", used));
    free(key);
}

/* Set kv (replacing an entry of the same name). */
static void env_set(struct strv *env, const char *kv) {
    long i = env_find(env, kv);
    if (i < 0) {
        sv_add(env, kv);
        return;
    }
    free(env->v[i]);
    env->v[i] = ctl_strdup(kv);
}

/* The server's environment: the image's Env (BEAVA_* included), then runtime.env, then
 * the daemon's own keys. Every image entry replaced on the way is listed in overrides. */
static void build_env(const struct ctl_config *cfg, json_t *image_config, struct strv *env, json_t *overrides) {
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(image_config, "Env"), i, v) {
        if (json_is_string(v) && strchr(json_string_value(v), '=')) env_set(env, json_string_value(v));
    }
    if (env_find(env, "PATH=") < 0) sv_add(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    size_t from_image = env->n;
    const char *k;
    json_object_foreach(cfg->runtime_env, k, v) {
        char *kv = ctl_asprintf("%s=%s", k, json_string_value(v));
        long at = env_find(env, kv);
        if (daemon_key(kv)) {
            free(kv);
            continue; /* refused by config validation too; the daemon's value wins */
        }
        if (at >= 0 && (size_t)at < from_image && strcmp(env->v[at], kv))
            note_override(overrides, env->v[at], "runtime.env", json_string_value(v));
        env_set(env, kv);
        free(kv);
    }
    /* The data dir is passed as --data-dir (flags win over the environment). */
    long dd = env_find(env, "BEAVA_DATA_DIR=");
    if (dd >= 0) {
        note_override(overrides, env->v[dd], "daemon (--data-dir)", "");
        free(env->v[dd]);
        memmove(env->v + dd, env->v + dd + 1, (env->n - (size_t)dd) * sizeof *env->v);
        env->n--;
    }
    char buf[512];
    const char *owned[3][2] = { { "BEAVA_LISTEN_ADDR", cfg->runtime_http_addr },
                                { "BEAVA_ADMIN_ADDR", cfg->runtime_admin_addr },
                                { "BEAVA_TCP_PORT", NULL } };
    char port[24];
    snprintf(port, sizeof port, "%lld", (long long)cfg->runtime_tcp_port);
    owned[2][1] = port;
    for (int o = 0; o < 3; o++) {
        snprintf(buf, sizeof buf, "%s=%s", owned[o][0], owned[o][1]);
        long at = env_find(env, buf);
        if (at >= 0 && strcmp(env->v[at], buf)) note_override(overrides, env->v[at], "daemon", owned[o][1]);
        env_set(env, buf);
    }
    /* Inherited-socket variables of the image never reach the server: only the daemon's. */
    for (const char *const *ls = (const char *const[]){ "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", NULL }; *ls;
         ls++) {
        long at = env_find(env, *ls);
        if (at >= 0) {
            note_override(overrides, env->v[at], "daemon (inherited sockets)", "");
            free(env->v[at]);
            memmove(env->v + at, env->v + at + 1, (env->n - (size_t)at) * sizeof *env->v);
            env->n--;
        }
    }
}

int runtime_start(const struct ctl_config *cfg, const struct rt_start *s, json_t **instance, char *err) {
    struct strv argv = { 0 }, env = { 0 };
    int info[2] = { -1, -1 };
    int rc = -1;
    const char *kind = cfg->runtime_kind;
    bool bwrap = !strcmp(kind, "bwrap");
    bool systemd = !strcmp(kind, "systemd");
    uid_t uid = 0;
    gid_t gid = 0;
    json_t *overrides = NULL;
    *instance = NULL;
    if ((bwrap || systemd) && !s->rootfs) return ctl_errf(err, "runtime %s needs an image rootfs", kind);
    if (ctl_mkdirs(cfg->runtime_data_dir, 0750, err) < 0) return -1;
    if (s->rootfs) {
        if (image_user(s->rootfs, s->image_config, &uid, &gid) < 0)
            return ctl_errf(err, "image user '%s' is not in the image's /etc/passwd",
                            json_string_value(json_object_get(s->image_config, "User")));
        /* the root is read-only: every mount point must already exist in the image */
        const char *mps[] = { "data", "dev", "proc", "tmp", NULL };
        for (int i = 0; mps[i]; i++) {
            char *d = ctl_asprintf("%s/%s", s->rootfs, mps[i]);
            struct stat st;
            int ok = stat(d, &st) == 0 && S_ISDIR(st.st_mode);
            free(d);
            if (!ok) return ctl_errf(err, "image rootfs has no /%s directory (a mount point)", mps[i]);
        }
        if (*cfg->runtime_config) {
            char *c = ctl_asprintf("%s/etc/beava/beava.yaml", s->rootfs);
            struct stat st;
            int ok = lstat(c, &st) == 0 && S_ISREG(st.st_mode);
            free(c);
            if (!ok)
                return ctl_errf(err,
                                "image rootfs has no file /etc/beava/beava.yaml, the mount point for "
                                "runtime.config (images from packaging/oci/build-image have one)");
        }
        int ok;
        char *b = ctl_asprintf("%s%s", s->rootfs, s->binary);
        ok = access(b, X_OK) == 0;
        free(b);
        if (!ok) return ctl_errf(err, "image has no executable %s", s->binary);
    } else if (access(s->binary, X_OK) != 0) {
        return ctl_errf(err, "server binary %s: %s", s->binary, strerror(errno));
    }
    /* systemd switches users itself; for the others only root can. */
    bool has_user = s->rootfs && json_string_value(json_object_get(s->image_config, "User")) &&
        *json_string_value(json_object_get(s->image_config, "User"));
    long unit_uid = has_user ? (long)uid : -1, unit_gid = has_user ? (long)gid : -1;
    if (geteuid() != 0) uid = 0, gid = 0; /* cannot switch users: run as ourselves */
    if (uid != 0) chown_tree(cfg->runtime_data_dir, uid, gid);
    overrides = json_array();
    build_env(cfg, s->image_config, &env, overrides);
    struct stat lst;
    long long log_offset = s->log_path && stat(s->log_path, &lst) == 0 ? (long long)lst.st_size : 0;

    const char *data_arg = s->rootfs ? "/data" : cfg->runtime_data_dir;
    const char *conf_arg = *cfg->runtime_config ? (s->rootfs ? "/etc/beava/beava.yaml" : cfg->runtime_config) : NULL;
    /* Inherited listeners (listeners.h): fds 3.. in the server, named by LISTEN_FDNAMES.
     * LISTEN_PID must be the server's pid: under bwrap the server is pid 1 of its own pid
     * namespace; a plain process writes its pid into the reserved entry after fork. */
    int nl = systemd ? 0 : s->n_listen;
    char *listen_pid_digits = NULL;
    if (nl > 0) {
        char buf[160] = "LISTEN_FDNAMES=";
        for (int i = 0; i < nl; i++)
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? ":" : "", s->listen_names[i]);
        sv_add(&env, buf);
        snprintf(buf, sizeof buf, "LISTEN_FDS=%d", nl);
        sv_add(&env, buf);
        sv_add(&env, bwrap ? "LISTEN_PID=1" : "LISTEN_PID=0000000000");
        listen_pid_digits = env.v[env.n - 1] + strlen("LISTEN_PID=");
    }
    char *mark = ctl_asprintf("%s=%s", RUNTIME_MARK, cfg->state_dir);
    sv_add(&env, mark);
    free(mark);
    char info_fd[16];
    snprintf(info_fd, sizeof info_fd, "%d", 3 + nl);
    if (bwrap) {
        sv_add(&argv, "bwrap");
        sv_add(&argv, "--ro-bind");
        sv_add(&argv, s->rootfs);
        sv_add(&argv, "/");
        sv_add(&argv, "--dev");
        sv_add(&argv, "/dev");
        sv_add(&argv, "--proc");
        sv_add(&argv, "/proc");
        sv_add(&argv, "--tmpfs");
        sv_add(&argv, "/tmp");
        sv_add(&argv, "--bind");
        sv_add(&argv, cfg->runtime_data_dir);
        sv_add(&argv, "/data");
        if (conf_arg) {
            sv_add(&argv, "--ro-bind");
            sv_add(&argv, cfg->runtime_config);
            sv_add(&argv, conf_arg);
        }
        sv_add(&argv, "--unshare-ipc");
        sv_add(&argv, "--unshare-uts");
        sv_add(&argv, "--new-session");
        if (nl > 0) {
            sv_add(&argv, "--unshare-pid");
            sv_add(&argv, "--as-pid-1");
        }
        sv_add(&argv, "--chdir");
        sv_add(&argv, "/data");
        sv_add(&argv, "--info-fd");
        sv_add(&argv, info_fd);
        sv_add(&argv, "--");
    }
    sv_add(&argv, s->binary);
    sv_add(&argv, "--data-dir");
    sv_add(&argv, data_arg);
    if (conf_arg) {
        sv_add(&argv, "--config");
        sv_add(&argv, conf_arg);
    }
    if (systemd) {
        rc = rt_systemd_start(cfg, s, argv.v, env.v, unit_uid, unit_gid, instance, err);
        if (rc == 0) json_object_set_new(*instance, "log_offset", json_integer(log_offset));
        goto out;
    }

    int logfd = open(s->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (logfd < 0) {
        ctl_errf(err, "log %s: %s", s->log_path, strerror(errno));
        goto out;
    }
    if (bwrap && pipe2(info, O_CLOEXEC) < 0) {
        close(logfd);
        ctl_errf(err, "pipe: %s", strerror(errno));
        goto out;
    }
    struct rlimit nofile;
    bool raise_nofile = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max;
    nofile.rlim_cur = nofile.rlim_max;
    const char *exe = bwrap ? "/usr/bin/bwrap" : s->binary;
    if (bwrap && access(exe, X_OK) != 0) exe = "/usr/local/bin/bwrap";
    pid_t pid = fork();
    if (pid < 0) {
        close(logfd);
        ctl_errf(err, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        setsid();
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        /* move every fd to pass above the targets first: dup2 onto itself would keep
         * close-on-exec set */
        int hi[RT_MAX_LISTEN + 1];
        for (int i = 0; i < nl; i++) hi[i] = fcntl(s->listen_fds[i], F_DUPFD_CLOEXEC, RT_FD_PARK);
        if (bwrap) hi[nl] = fcntl(info[1], F_DUPFD_CLOEXEC, RT_FD_PARK);
        for (int i = 0; i < nl; i++) dup2(hi[i], 3 + i);
        if (bwrap) dup2(hi[nl], 3 + nl);
        close_range((unsigned)(3 + nl + (bwrap ? 1 : 0)), ~0U, 0);
        if (listen_pid_digits) {
            if (!bwrap) { /* async-signal-safe formatting of getpid() */
                char d[12];
                int k = 0;
                for (long v = (long)getpid(); v > 0 && k < 11; v /= 10) d[k++] = (char)('0' + v % 10);
                int j = 0;
                while (k > 0) listen_pid_digits[j++] = d[--k];
                listen_pid_digits[j] = 0;
            }
        }
        if (raise_nofile) (void)setrlimit(RLIMIT_NOFILE, &nofile); /* bwrap passes it on to the server */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (uid != 0) {
            if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) _exit(126);
        }
        execve(exe, argv.v, env.v);
        _exit(127);
    }
    close(logfd);
    pid_t server = pid, monitor = 0;
    if (bwrap) {
        close(info[1]);
        info[1] = -1;
        char buf[4096];
        size_t got = 0;
        int64_t deadline = ctl_mono_ms() + 15000;
        json_t *js = NULL;
        while (!js && ctl_mono_ms() < deadline && got < sizeof buf - 1) {
            struct pollfd pfd = { .fd = info[0], .events = POLLIN };
            if (poll(&pfd, 1, 200) <= 0) continue;
            ssize_t n = read(info[0], buf + got, sizeof buf - 1 - got);
            if (n <= 0) break;
            got += (size_t)n;
            buf[got] = 0;
            js = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
        }
        json_int_t cp = json_integer_value(json_object_get(js, "child-pid"));
        json_decref(js);
        if (cp <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            char *tail = runtime_log_tail(s->log_path, 10);
            ctl_errf(err, "bwrap did not start the sandbox: %s", tail);
            free(tail);
            goto out;
        }
        monitor = pid;
        server = (pid_t)cp;
    }
    /* Give an exec failure (exit 126/127) a moment to show. */
    wait_gone(server, 0, RUNTIME_EXEC_FAIL_WAIT_MS);
    char ts[40];
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    *instance =
        json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:s,s:s}", "runtime", kind, "digest", s->digest ? s->digest : "", "pid",
                  (json_int_t)server, "pid_start", (json_int_t)proc_starttime(server, NULL), "monitor_pid",
                  (json_int_t)monitor, "monitor_start", (json_int_t)(monitor > 0 ? proc_starttime(monitor, NULL) : 0),
                  "log", s->log_path, "started", ts);
    json_object_set_new(*instance, "log_offset", json_integer(log_offset));
    if (nl > 0) {
        json_t *names = json_array();
        for (int i = 0; i < nl; i++) json_array_append_new(names, json_string(s->listen_names[i]));
        json_object_set_new(*instance, "listen_fds", names);
    }
    rc = 0;
out:
    if (*instance && overrides) json_object_set(*instance, "env_overrides", overrides);
    json_decref(overrides);
    if (info[0] >= 0) close(info[0]);
    if (info[1] >= 0) close(info[1]);
    sv_free(&argv);
    sv_free(&env);
    return rc;
}

/* True when /proc/<pid>/environ holds exactly `kv` as one entry. */
static bool environ_has(const char *pid, const char *kv) {
    char path[sizeof "/proc//environ" + 256]; /* pid: a d_name, at most 255 bytes */
    snprintf(path, sizeof path, "/proc/%s/environ", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    size_t cap = 1 << 16, len = 0, klen = strlen(kv);
    char *buf = ctl_realloc(NULL, cap + 1);
    for (;;) {
        if (len == cap) {
            if (cap >= (1u << 22)) break; /* an environment this large is not one of ours */
            cap *= 2;
            buf = ctl_realloc(buf, cap + 1);
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    bool found = false;
    for (size_t i = 0; i < len && !found;) {
        size_t e = i;
        while (e < len && buf[e]) e++;
        found = e - i == klen && memcmp(buf + i, kv, klen) == 0;
        i = e + 1;
    }
    free(buf);
    return found;
}

/* The pid holding an flock on `path` (from /proc/locks, matched by device and inode; pids
 * there are in our own pid namespace, so a sandboxed server shows its host pid), 0 if none. */
static pid_t flock_holder(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    FILE *f = fopen("/proc/locks", "re");
    if (!f) return 0;
    char line[512], type[16];
    long pid = 0, p;
    unsigned maj, min;
    unsigned long long ino;
    while (fgets(line, sizeof line, f)) {
        /* "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF" (waiters read "1: -> FLOCK ...") */
        if (sscanf(line, "%*[^:]: %15s %*s %*s %ld %x:%x:%llu", type, &p, &maj, &min, &ino) == 5 &&
            !strcmp(type, "FLOCK") && ino == (unsigned long long)st.st_ino && makedev(maj, min) == st.st_dev) {
            pid = p;
            break;
        }
    }
    fclose(f);
    return (pid_t)pid;
}

int runtime_kill_unrecorded(const struct ctl_config *cfg, pid_t keep) {
    char *kv = ctl_asprintf("%s=%s", RUNTIME_MARK, cfg->state_dir);
    char *lock = ctl_asprintf("%s/LOCK", cfg->runtime_data_dir);
    int killed = 0;
    int64_t deadline = ctl_mono_ms() + RUNTIME_KILL_UNRECORDED_MS;
    for (int round = 0; round < RUNTIME_KILL_ROUNDS; round++) {
        int seen = 0;
        pid_t victim = 0;
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
            pid_t pid = (pid_t)atol(e->d_name);
            if (pid == getpid() || pid == keep || !environ_has(e->d_name, kv)) continue;
            seen++;
            if (round == 0) killed++;
            kill(pid, SIGKILL);
            victim = pid;
        }
        if (d) closedir(d);
        /* one without the mark (started by an older daemon) still holds the data dir's LOCK */
        pid_t holder = flock_holder(lock);
        if (holder > 0 && holder != getpid() && holder != keep) {
            seen++;
            if (round == 0) killed++;
            kill(holder, SIGKILL);
            victim = holder;
        }
        int64_t left = deadline - ctl_mono_ms();
        if (seen == 0 || left <= 0) break;
        /* SIGKILL is asynchronous: wait for the last one killed to end (the others were
         * signalled before it), then look again until none is left */
        wait_gone(victim, 0, left);
    }
    free(lock);
    free(kv);
    return killed;
}

bool runtime_alive(const struct ctl_config *cfg, json_t *instance) {
    const char *kind = json_string_value(json_object_get(instance, "runtime"));
    if (!kind) return false;
    if (!strcmp(kind, "systemd")) return rt_systemd_alive(cfg, instance);
    /* a zombie counts as gone; its status is left for the daemon's reaper */
    return pid_alive((pid_t)json_integer_value(json_object_get(instance, "pid")),
                     json_integer_value(json_object_get(instance, "pid_start")));
}

void runtime_wait_ended(json_t *instance, int64_t timeout_ms) {
    int64_t deadline = ctl_mono_ms() + timeout_ms;
    pid_t pid = (pid_t)json_integer_value(json_object_get(instance, "pid"));
    pid_t monitor = (pid_t)json_integer_value(json_object_get(instance, "monitor_pid"));
    /* the server first, then bwrap's monitor, which ends right after its child; their start
     * times tell a reused pid apart (an instance recorded without one: any process) */
    if (pid > 0) wait_gone(pid, json_integer_value(json_object_get(instance, "pid_start")), timeout_ms);
    int64_t left = deadline - ctl_mono_ms();
    if (monitor > 0 && left > 0)
        wait_gone(monitor, json_integer_value(json_object_get(instance, "monitor_start")), left);
}

int runtime_stop(const struct ctl_config *cfg, json_t *instance, json_t **how, char *err) {
    const char *kind = json_string_value(json_object_get(instance, "runtime"));
    if (how) *how = NULL;
    if (!kind) return 0;
    int64_t t0 = ctl_mono_ms();
    if (!strcmp(kind, "systemd")) {
        const char *via = "StopUnit";
        int rc = rt_systemd_stop(cfg, instance, &via, err);
        if (how) *how = json_pack("{s:s,s:I}", "via", via, "ms", (json_int_t)(ctl_mono_ms() - t0));
        return rc;
    }
    pid_t pid = (pid_t)json_integer_value(json_object_get(instance, "pid"));
    long long start = json_integer_value(json_object_get(instance, "pid_start"));
    pid_t monitor = (pid_t)json_integer_value(json_object_get(instance, "monitor_pid"));
    bool killed = false;
    if (pid_alive(pid, start)) {
        kill(pid, SIGTERM);
        if (!wait_gone(pid, start, (int64_t)cfg->stop_grace_s * 1000)) {
            kill(pid, SIGKILL);
            killed = true;
            wait_gone(pid, start, RUNTIME_KILL_WAIT_MS);
        }
    }
    /* bwrap's monitor exits when its child does; make sure, then reap. */
    long long monitor_start = json_integer_value(json_object_get(instance, "monitor_start"));
    if (monitor > 0 && !wait_gone(monitor, monitor_start, RUNTIME_MONITOR_WAIT_MS)) kill(monitor, SIGKILL);
    runtime_reap(NULL);
    if (pid_alive(pid, start)) return ctl_errf(err, "pid %d survived SIGKILL", (int)pid);
    if (how)
        *how = json_pack("{s:s,s:b,s:I}", "via", killed ? "SIGTERM, then SIGKILL after the grace period" : "SIGTERM",
                         "killed", killed, "ms", (json_int_t)(ctl_mono_ms() - t0));
    return 0;
}
