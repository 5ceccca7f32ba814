/*
 * server.h - the process: engine + listeners + (later) storage, in boot order.
 *
 * server_start() binds the admin port first (so /ready can say 503 while recovering),
 * recovers state, binds the data plane and the TCP listener, logs the bound addresses
 * as JSON lines, then flips readiness and notifies systemd. server_stop() runs the
 * graceful shutdown: stop accepting, drain, final fsync/snapshot, free.
 */
#ifndef BEAVA_SERVER_H
#define BEAVA_SERVER_H

#include "config.h"
#include "log.h"

typedef struct beava_server beava_server;

/* Start everything. Returns NULL with a message in err on failure (nothing left
 * running). The config must outlive the server. */
beava_server *server_start(const bv_config *cfg, const bv_log *log, char *err, size_t errlen);

/* Bound addresses ("ip:port"), for quickstart and tests. */
const char *server_http_addr(const beava_server *s);
const char *server_admin_addr(const beava_server *s);

/* Block until SIGTERM/SIGINT (which the caller must have blocked in every thread),
 * pinging the systemd watchdog when WATCHDOG_USEC is set. */
void server_wait_for_signal(beava_server *s);

void server_stop(beava_server *s);

#endif
