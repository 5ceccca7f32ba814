/*
 * trigger.h — authentication of CI deploy triggers on the control port.
 *
 * Headers (documented in control/README.md):
 *   X-Beava-Timestamp: <unix seconds>
 *   X-Beava-Delivery: <unique id, 1..128 of [A-Za-z0-9._-]>   (required on POST)
 *   X-Beava-Signature-256: sha256=<hex HMAC-SHA256(secret, signing string)>
 * The signing string binds everything a replay could change:
 *   <METHOD> "\n" <path, without the query> "\n" <timestamp> "\n" <delivery id, "" if none>
 *   "\n" <raw body>
 * The signature is compared in constant time; the timestamp must be within the replay
 * window of the daemon's clock (either direction); a delivery id is accepted once, compared
 * exactly (case-sensitive); and an image + revision deployed from one delivery is refused
 * from another within the window. Both sets are persisted (deliveries.json), so a restart
 * does not reopen replays.
 */
#ifndef CTL_TRIGGER_H
#define CTL_TRIGGER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define TRIGGER_HDR_TS "X-Beava-Timestamp"
#define TRIGGER_HDR_SIG "X-Beava-Signature-256"
#define TRIGGER_HDR_DELIVERY "X-Beava-Delivery"

/* What a signature covers. delivery NULL = none (GETs). */
struct trigger_req {
    const char *method;
    const char *path;
    const char *timestamp;
    const char *delivery;
    const void *body;
    size_t body_len;
};

/* "sha256=<64 hex>" into out (>= 72 bytes). */
void trigger_sign(const void *secret, size_t secret_len, const struct trigger_req *r, char *out);

/* 0 when the signature and timestamp are good; -1 with the reason otherwise. A missing
 * timestamp (NULL) or signature is refused. */
int trigger_verify(const void *secret, size_t secret_len, const struct trigger_req *r, const char *signature,
                   int64_t now_s, int64_t window_s, char *err);

/* Delivery-id de-duplication, persisted in a JSON file. */
struct trigger_seen;
int trigger_seen_open(const char *path, struct trigger_seen **out, char *err);
void trigger_seen_close(struct trigger_seen *s);
/* 0 when id is new (it is recorded, expired ids are dropped, the file is rewritten
 * atomically); -1 when it was seen already or cannot be recorded. */
int trigger_seen_check_add(struct trigger_seen *s, const char *id, int64_t now_s, int64_t window_s, char *err);
/* -1 (saying which delivery) when image + revision (revision may be NULL) were deployed
 * from another delivery within the window; 0 otherwise. */
int trigger_seen_body_check(struct trigger_seen *s, const char *image, const char *revision, int64_t now_s,
                            int64_t window_s, char *err);
/* Record that delivery id queued a deploy of image + revision (file rewritten atomically). */
int trigger_seen_body_add(struct trigger_seen *s, const char *image, const char *revision, const char *id,
                          int64_t now_s, char *err);

#endif
