/*
 * listeners.h — the server's listening sockets, held by the daemon (process and bwrap
 * runtimes, runtime.hold_sockets) so they outlive every server process.
 *
 * The daemon binds http_addr, admin_addr and 127.0.0.1:tcp_port (BEAVA_TCP_HOST from
 * runtime.env when set) once and passes them to each server it starts, by the systemd
 * convention: fds 3.. named "http", "admin", "tcp" in LISTEN_FDNAMES (see
 * beava/src/server/listenfd.h). While one server stops and the next recovers, clients'
 * connections wait in the kernel backlog instead of being refused.
 *
 * A restarted daemon cannot bind what the running server holds: it takes the sockets back
 * from that server with pidfd_getfd (the instance records which fds it got). When that
 * is not possible the listener is bound again before the next start, once the old server
 * has stopped (that one deploy may refuse connections briefly).
 *
 * Owned by struct ctl_ctx; used only on the daemon's worker thread.
 */
#ifndef CTL_LISTENERS_H
#define CTL_LISTENERS_H

#include "config.h"
#include <jansson.h>

#define LISTENERS_N 3

struct ctl_listeners {
    int fd[LISTENERS_N]; /* -1 = not held */
};

extern const char *const LISTENER_NAMES[LISTENERS_N];

void listeners_init(struct ctl_listeners *l);
/* Hold every listener not held yet: bind it, or take it back from instance (may be NULL).
 * Returns a report {"<name>": "bound"|"taken from pid N"|"<why not>"} (caller owns). */
json_t *listeners_acquire(struct ctl_listeners *l, const struct ctl_config *cfg, json_t *instance);
void listeners_close(struct ctl_listeners *l);

#endif
