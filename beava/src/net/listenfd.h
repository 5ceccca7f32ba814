/*
 * listenfd.h - listening sockets inherited from a supervisor.
 *
 * The systemd socket-activation convention (sd_listen_fds_with_names): LISTEN_PID is this
 * process, LISTEN_FDS sockets start at fd 3, LISTEN_FDNAMES names them, ':'-separated.
 * beava-control (process and bwrap runtimes) and beava.socket (packaging/debian) pass
 * them under these names:
 *   "http"   the data plane      (instead of listen_addr / BEAVA_LISTEN_ADDR)
 *   "admin"  the admin sidecar   (instead of admin_addr / BEAVA_ADMIN_ADDR)
 *   "tcp"    the framed TCP port (instead of tcp.host + tcp.port)
 * An inherited socket stays open in the supervisor, so connections made while one server
 * stops and the next recovers wait in the kernel's backlog instead of being refused.
 *
 * An inherited listener is handed to the binding code as the address "fd:N"
 * (listenfd_addr); http_bind_listen adopts it through listenfd_adopt. Without inherited
 * sockets nothing changes: every listener binds its configured address.
 */
#ifndef BEAVA_LISTENFD_H
#define BEAVA_LISTENFD_H

#include <stdbool.h>
#include <stddef.h>

#include "log.h"

#define LISTENFD_MAX 8

typedef struct listenfd_set {
    int n;
    int fd[LISTENFD_MAX];
    char name[LISTENFD_MAX][32];
    bool taken[LISTENFD_MAX];
    char addr[LISTENFD_MAX][16];   /* "fd:N", handed out by listenfd_addr */
} listenfd_set;

/* Read (and unset) LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES into s; logs what was inherited.
 * Sockets beyond LISTENFD_MAX or without a name are closed. */
void listenfd_init(listenfd_set *s, const bv_log *log);

/* "fd:N" for the inherited socket called name (marked taken), or NULL. */
const char *listenfd_addr(listenfd_set *s, const char *name);

/* Close the inherited sockets nobody took (names beava does not know, logged). */
void listenfd_close_unused(listenfd_set *s, const bv_log *log);

/* Is addr an "fd:N" address? */
bool listenfd_is_addr(const char *addr);

/* Adopt "fd:N": it must be a listening stream socket. Returns the fd (close-on-exec set)
 * and writes its bound "ip:port" into bound, or -1 with err. */
int listenfd_adopt(const char *addr, char *bound, size_t boundlen, char *err, size_t errlen);

#endif
