/*
 * listenfd.c - inherited listening sockets (see listenfd.h).
 */
#include "listenfd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

void listenfd_init(listenfd_set *s, const bv_log *log) {
    memset(s, 0, sizeof *s);
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names);
    if (n < 0) {
        bv_log_msg(log, LOG_WARN, "server.listen_fds", "inherited sockets not usable: %s", strerror(-n));
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        const char *nm = names && names[i] ? names[i] : "";
        if (s->n < LISTENFD_MAX && *nm && strlen(nm) < sizeof s->name[0]) {
            s->fd[s->n] = fd;
            snprintf(s->name[s->n], sizeof s->name[0], "%s", nm);
            s->n++;
            bv_log_msg(log, LOG_INFO, "server.listen_fd", "inherited listening socket '%s' (fd %d)", nm, fd);
        } else {
            bv_log_msg(log, LOG_WARN, "server.listen_fd", "inherited fd %d ('%s') ignored and closed", fd, nm);
            close(fd);
        }
    }
    if (names) {
        for (int i = 0; i < n; i++) free(names[i]);
        free(names);
    }
}

const char *listenfd_addr(listenfd_set *s, const char *name) {
    for (int i = 0; s && i < s->n; i++) {
        if (!s->taken[i] && strcmp(s->name[i], name) == 0) {
            s->taken[i] = true;
            snprintf(s->addr[i], sizeof s->addr[i], "fd:%d", s->fd[i]);
            return s->addr[i];
        }
    }
    return NULL;
}

void listenfd_close_unused(listenfd_set *s, const bv_log *log) {
    for (int i = 0; i < s->n; i++) {
        if (s->taken[i]) continue;
        bv_log_msg(log, LOG_WARN, "server.listen_fd", "inherited socket '%s' (fd %d) is not one beava uses "
                   "(http, admin, tcp); closed", s->name[i], s->fd[i]);
        close(s->fd[i]);
        s->taken[i] = true;
    }
}

bool listenfd_is_addr(const char *addr) { return strncmp(addr, "fd:", 3) == 0; }

int listenfd_adopt(const char *addr, char *bound, size_t boundlen, char *err, size_t errlen) {
    char *end = NULL;
    long fd = strtol(addr + 3, &end, 10);
    if (!end || *end || fd < SD_LISTEN_FDS_START || fd > 65535) {
        snprintf(err, errlen, "'%s' is not an inherited socket address", addr);
        return -1;
    }
    if (sd_is_socket((int)fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
        snprintf(err, errlen, "inherited fd %ld is not a listening stream socket", fd);
        return -1;
    }
    fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getsockname((int)fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    snprintf(bound, boundlen, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
    return (int)fd;
}
