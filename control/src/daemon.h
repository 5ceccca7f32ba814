/*
 * daemon.h — `beava-control serve`: the HTTP APIs, the deploy queue and its worker.
 *
 * Two listeners, one libmicrohttpd handler:
 *   - the unix socket (mode 0660, optional group) for the local CLI: trusted by file
 *     permissions; routes POST /v1/deploys, /v1/apply, /v1/rollback and the GETs;
 *   - listen_addr (optional) for CI: every request must carry a valid HMAC signature
 *     (trigger.h); only POST /v1/deploys and the GETs exist there.
 *   GET /v1/deploys/<id>, GET /v1/status, GET /v1/history[?limit=N]
 * Deploys are queued in arrival order and run one at a time on a single worker thread,
 * which also supervises the running server when idle. The host lock (state.h) keeps a
 * second daemon off the same state dir. SIGTERM/SIGINT: stop accepting, let the running
 * deploy finish, exit; the beava server keeps running.
 */
#ifndef CTL_DAEMON_H
#define CTL_DAEMON_H

#include "config.h"

int daemon_serve(struct ctl_config *cfg, char *err);

#endif
