/*
 * port_guard.h — the control port's defence against slow and half-open clients.
 *
 * libmicrohttpd enforces the per-address and total connection limits and an idle timeout
 * (set where the daemon is started, daemon.c); an idle timeout alone does not stop a
 * client that sends one byte just often enough. The guard adds a deadline per request:
 * from the moment a connection opens (or its previous request ended) until the request's
 * headers and body have been read, at most `deadline_ms` may pass. A sweeper thread
 * shuts down (shutdown(2), never close) the socket of a connection past its deadline;
 * libmicrohttpd then sees the end of the stream and closes it through its own path.
 *
 * Thread safety: the notify callbacks and port_guard_request_read run on libmicrohttpd's
 * thread, the sweeper on its own; one mutex guards the list. libmicrohttpd reports a
 * connection closed before it closes the socket, and that report takes the mutex, so the
 * sweeper never touches a descriptor that was closed (and possibly reused).
 */
#ifndef CTL_PORT_GUARD_H
#define CTL_PORT_GUARD_H

#include <microhttpd.h>
#include <stdint.h>

struct port_guard;

/* Start the sweeper. NULL when the thread cannot start. Free with port_guard_free. */
struct port_guard *port_guard_new(int64_t deadline_ms);
/* Stop the sweeper; call after MHD_stop_daemon (no callback runs any more). */
void port_guard_free(struct port_guard *g);

/* MHD_OPTION_NOTIFY_CONNECTION callback; cls is the guard. */
void port_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode code);
/* The request on c has been read completely: its deadline no longer applies. */
void port_guard_request_read(struct MHD_Connection *c);
/* The request on c was answered (MHD_OPTION_NOTIFY_COMPLETED): the next one on the same
 * connection gets a fresh deadline. */
void port_guard_request_done(struct MHD_Connection *c);

#endif
