/*
 * notify.h — the deploy webhook (notify.url, notify.secret_file): a signed JSON POST on
 * every deploy outcome (succeeded, failed, rolled_back; not noop or cancelled).
 *
 * Body: {"event":"deploy.<status>","deploy","kind","source","status","message","image",
 * "digest","rolled_back_to","ts"}. Headers: X-Beava-Timestamp (unix seconds),
 * X-Beava-Delivery (<deploy id>.<status>), X-Beava-Signature-256:
 * "sha256=" + hex HMAC-SHA256(secret, "<timestamp>.<raw body>").
 *
 * Never blocks a deploy: notify_deploy only queues; one thread of its own sends, retrying
 * a failed call (transport error or non-2xx) after 1, 2, 4, 8 s (NOTIFY_ATTEMPTS in all),
 * and logs notify.sent / notify.failed (dlog.h). The queue is bounded (NOTIFY_QUEUE_MAX;
 * the oldest is dropped, logged); what is still queued at shutdown is logged as dropped.
 */
#ifndef CTL_NOTIFY_H
#define CTL_NOTIFY_H

#include "config.h"
#include <jansson.h>

struct notifier;

/* Start the sender (NULL and no error when notify.url is empty). */
int notify_start(const struct ctl_config *cfg, struct notifier **out, char *err);
/* Queue the outcome of a deploy (a copy of rec is taken). n may be NULL. */
void notify_deploy(struct notifier *n, json_t *rec);
/* Stop the sender; pending notifications are logged as dropped. */
void notify_stop(struct notifier *n);

#endif
