/*
 * listeners.c — the listening sockets the daemon holds for the server (see listeners.h).
 */
#include "listeners.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024
#define FIRST_PASSED_FD 3 /* SD_LISTEN_FDS_START */

const char *const LISTENER_NAMES[LISTENERS_N] = { "http", "admin", "tcp" };

void listeners_init(struct ctl_listeners *l) {
    for (int i = 0; i < LISTENERS_N; i++) l->fd[i] = -1;
}

void listeners_close(struct ctl_listeners *l) {
    for (int i = 0; i < LISTENERS_N; i++) {
        if (l->fd[i] >= 0) close(l->fd[i]);
        l->fd[i] = -1;
    }
}

static int parse_v4(const char *addr, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    long port = strtol(colon + 1, NULL, 10);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 && port > 0 && port <= 65535 ? 0 : -1;
}

static bool same_addr(int fd, const struct sockaddr_in *want) {
    struct sockaddr_in got;
    socklen_t sl = sizeof got;
    int acc = 0;
    socklen_t al = sizeof acc;
    return getsockname(fd, (struct sockaddr *)&got, &sl) == 0 && got.sin_family == AF_INET &&
        got.sin_port == want->sin_port && got.sin_addr.s_addr == want->sin_addr.s_addr &&
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) == 0 && acc;
}

/* The running server's copy of listener `name`, through pidfd_getfd; -1 when not possible. */
static int take_back(json_t *instance, const char *name, const struct sockaddr_in *want, char *why, size_t wl) {
    json_t *names = json_object_get(instance, "listen_fds");
    json_int_t pid = json_integer_value(json_object_get(instance, "pid"));
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n) {
        if (strcmp(json_string_value(n) ? json_string_value(n) : "", name)) continue;
        int pfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
        if (pfd < 0) {
            snprintf(why, wl, "pidfd_open(%lld): %s", (long long)pid, strerror(errno));
            return -1;
        }
        int fd = (int)syscall(SYS_pidfd_getfd, pfd, FIRST_PASSED_FD + (int)i, 0);
        int e = errno;
        close(pfd);
        if (fd < 0) {
            snprintf(why, wl, "pidfd_getfd(pid %lld, fd %d): %s", (long long)pid, FIRST_PASSED_FD + (int)i,
                     strerror(e));
            return -1;
        }
        if (!same_addr(fd, want)) {
            close(fd);
            snprintf(why, wl, "fd %d of pid %lld is not the listener", FIRST_PASSED_FD + (int)i, (long long)pid);
            return -1;
        }
        return fd;
    }
    snprintf(why, wl, "the running server did not get it from this daemon");
    return -1;
}

json_t *listeners_acquire(struct ctl_listeners *l, const struct ctl_config *cfg, json_t *instance) {
    json_t *report = json_object();
    const char *tcp_host = json_string_value(json_object_get(cfg->runtime_env, "BEAVA_TCP_HOST"));
    char tcp_addr[96];
    snprintf(tcp_addr, sizeof tcp_addr, "%s:%lld", tcp_host ? tcp_host : "127.0.0.1", (long long)cfg->runtime_tcp_port);
    const char *addrs[LISTENERS_N] = { cfg->runtime_http_addr, cfg->runtime_admin_addr, tcp_addr };
    for (int i = 0; i < LISTENERS_N; i++) {
        if (l->fd[i] >= 0) continue;
        struct sockaddr_in sa;
        char why[CTL_ERR_LEN] = "";
        if (parse_v4(addrs[i], &sa) < 0 || sa.sin_port == 0) {
            json_object_set_new(report, LISTENER_NAMES[i],
                                json_sprintf("not held: '%s' is not IPv4:PORT (the server binds it)", addrs[i]));
            continue;
        }
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, LISTEN_BACKLOG) == 0) {
            l->fd[i] = fd;
            json_object_set_new(report, LISTENER_NAMES[i], json_sprintf("bound %s", addrs[i]));
            continue;
        }
        int e = errno;
        if (fd >= 0) close(fd);
        if (e == EADDRINUSE && instance) {
            fd = take_back(instance, LISTENER_NAMES[i], &sa, why, sizeof why);
            if (fd >= 0) {
                l->fd[i] = fd;
                json_object_set_new(report, LISTENER_NAMES[i],
                                    json_sprintf("taken back from pid %lld",
                                                 (long long)json_integer_value(json_object_get(instance, "pid"))));
                continue;
            }
        }
        json_object_set_new(report, LISTENER_NAMES[i],
                            json_sprintf("not held: %s: %s%s%s", addrs[i], strerror(e), *why ? "; " : "", why));
    }
    return report;
}
