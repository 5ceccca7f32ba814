/*
 * dlog.h — the daemon's own log: one JSON object per line on stdout (journald keeps it
 * under the unit, `journalctl -u beava-control`).
 *
 * Every line has "ts" (RFC 3339 UTC) and "kind"; the kinds written:
 *   control.ready / control.stopping            the daemon itself
 *   deploy.step                                  every pipeline step (deploy, ok, ms, message)
 *   deploy.end                                   a deploy's outcome
 *   trigger.accepted / trigger.rejected          every request on the control port: status,
 *                                                reason, remote address, delivery id
 *   supervisor.restart                           a crashed server restarted: exit status, log tail
 *   server.env_override                          an image environment entry the daemon replaced
 *   notify.sent / notify.failed                  the webhook
 * Lines are written with one stdio call each (stdio locks the stream), so threads never
 * interleave within a line.
 */
#ifndef CTL_DLOG_H
#define CTL_DLOG_H

#include <jansson.h>

/* Write {"ts","kind",...fields} as one line. fields is consumed (may be NULL). */
void dlog(const char *kind, json_t *fields);

#endif
