/*
 * proc.c - spawning and stopping the servers under test (see proc.h).
 *
 * beava is started with --http-addr/--admin-addr/--tcp-addr 127.0.0.1:0 and its stdout
 * goes to a file in the child's directory; the parent polls that file for the three
 * server.*_bound JSON lines. A file rather than a pipe so that a long run never blocks
 * the server on a full pipe nobody reads.
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

static void sleep_ms(long ms) {
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *dir) {
    if (dir[0]) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int make_dir(server_proc *p, const char *prefix, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    p->pid = -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(p->dir, sizeof p->dir, "%s/%s-XXXXXX", tmp && tmp[0] ? tmp : "/tmp", prefix);
    if (!mkdtemp(p->dir)) {
        snprintf(err, errlen, "mkdtemp %s: %s", p->dir, strerror(errno));
        p->dir[0] = '\0';
        return -1;
    }
    snprintf(p->log, sizeof p->log, "%s/server.log", p->dir);
    return 0;
}

/* fork + exec argv with cwd = p->dir and stdout/stderr to p->log. A relative program
 * path is resolved first (the child changes directory). */
static int start_child(server_proc *p, char *const argv[], char *err, size_t errlen) {
    char prog[PATH_MAX];
    if (strchr(argv[0], '/') && !realpath(argv[0], prog)) {
        snprintf(err, errlen, "%s: %s", argv[0], strerror(errno));
        return -1;
    }
    int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "open %s: %s", p->log, strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, STDIN_FILENO);
        if (chdir(p->dir) != 0) _exit(127);
        execvp(strchr(argv[0], '/') ? prog : argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    p->pid = pid;
    return 0;
}

static void log_tail(const server_proc *p, char *err, size_t errlen) {
    FILE *f = fopen(p->log, "r");
    if (!f) return;
    char buf[1024];
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, sz > 600 ? sz - 600 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    size_t l = strlen(err);
    if (l + 20 < errlen) snprintf(err + l, errlen - l, "\n--- server log tail ---\n%s", buf);
}

/* Finds "kind":"<kind>" ... "addr":"X" in the log; copies X. */
static bool find_bound(const char *log, const char *kind, char *out, size_t outlen) {
    char needle[64];
    snprintf(needle, sizeof needle, "\"kind\":\"%s\"", kind);
    const char *line = strstr(log, needle);
    if (!line) return false;
    const char *eol = strchr(line, '\n');
    /* the kind may come after addr in the line: search the whole line */
    const char *bol = line;
    while (bol > log && bol[-1] != '\n') bol--;
    const char *a = strstr(bol, "\"addr\":\"");
    if (!a || (eol && a > eol)) return false;
    a += 8;
    const char *e = strchr(a, '"');
    if (!e || (size_t)(e - a) >= outlen) return false;
    memcpy(out, a, (size_t)(e - a));
    out[e - a] = '\0';
    return true;
}

int proc_spawn_beava(const char *bin, const char *durability, const char *data_dir, char *const *extra,
                     server_proc *p, char *err, size_t errlen) {
    if (make_dir(p, "beava-bench", err, errlen) != 0) return -1;
    char ddir[300];
    snprintf(ddir, sizeof ddir, "%s/data", data_dir && data_dir[0] ? data_dir : p->dir);
    if (data_dir && data_dir[0]) snprintf(ddir, sizeof ddir, "%s", data_dir);
    const char *argv[64];
    size_t n = 0;
    argv[n++] = bin;
    argv[n++] = "--http-addr";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--admin-addr";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--tcp-addr";
    argv[n++] = "127.0.0.1:0";
    if (!durability || strcmp(durability, "memory") == 0) {
        argv[n++] = "--memory-only";
    } else {
        argv[n++] = "--data-dir";
        argv[n++] = ddir;
        argv[n++] = "--durability";
        argv[n++] = durability;
    }
    for (size_t i = 0; extra && extra[i] && n < 62; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    if (start_child(p, (char *const *)argv, err, errlen) != 0) goto err;
    for (int waited = 0; waited < 60000; waited += 20) {
        FILE *f = fopen(p->log, "r");
        if (f) {
            bbuf b;
            bbuf_init(&b);
            char chunk[4096];
            size_t r;
            while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) bbuf_put(&b, chunk, r);
            fclose(f);
            bool ok = b.data && find_bound(b.data, "server.http_bound", p->http, sizeof p->http) &&
                      find_bound(b.data, "server.tcp_bound", p->tcp, sizeof p->tcp) &&
                      find_bound(b.data, "server.admin_bound", p->admin, sizeof p->admin);
            bbuf_free(&b);
            if (ok) return 0;
        }
        int st;
        if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
            p->pid = -1;
            snprintf(err, errlen, "beava exited before binding (status %d)", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            log_tail(p, err, errlen);
            goto err;
        }
        sleep_ms(20);
    }
    snprintf(err, errlen, "beava did not log its bound addresses within 60 s");
    log_tail(p, err, errlen);
err:
    proc_stop(p, 5);
    return -1;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0 };
    socklen_t l = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

int proc_spawn_redis(const char *bin, server_proc *p, char *err, size_t errlen) {
    if (make_dir(p, "beava-bench-redis", err, errlen) != 0) return -1;
    int port = free_port();
    if (port < 0) {
        snprintf(err, errlen, "no free port: %s", strerror(errno));
        goto err;
    }
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    const char *argv[] = { bin, "--port", ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                           "--daemonize", "no", "--dir", p->dir, "--protected-mode", "no", NULL };
    if (start_child(p, (char *const *)argv, err, errlen) != 0) goto err;
    snprintf(p->tcp, sizeof p->tcp, "127.0.0.1:%d", port);
    for (int waited = 0; waited < 20000; waited += 20) {
        struct timeval tv = { 1, 0 };
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r && r->type == REDIS_REPLY_STATUS;
            if (r) freeReplyObject(r);
            redisFree(c);
            if (ok) return 0;
        } else if (c) {
            redisFree(c);
        }
        int st;
        if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
            p->pid = -1;
            snprintf(err, errlen, "redis-server exited at start");
            log_tail(p, err, errlen);
            goto err;
        }
        sleep_ms(20);
    }
    snprintf(err, errlen, "redis-server did not answer PING within 20 s");
    log_tail(p, err, errlen);
err:
    proc_stop(p, 5);
    return -1;
}

int proc_stop(server_proc *p, double timeout_s) {
    int status = -1;
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        int st = 0;
        bool done = false;
        for (double waited = 0; waited < timeout_s; waited += 0.02) {
            if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
                done = true;
                break;
            }
            sleep_ms(20);
        }
        if (!done) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
        }
        status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        p->pid = -1;
    }
    if (!p->keep) rm_tree(p->dir);
    p->dir[0] = '\0';
    return status;
}

long proc_status_kb(pid_t pid, const char *field) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    size_t fl = strlen(field);
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}
