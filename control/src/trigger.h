/*
 * trigger.h — authentication of CI deploy triggers on the control port.
 *
 * Headers (documented in control/README.md):
 *   X-Beava-Timestamp: <unix seconds>
 *   X-Beava-Delivery: <unique id, 1..128 of [A-Za-z0-9._-]>   (required on POST)
 *   X-Beava-Signature-256: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
 * The signature is compared in constant time; the timestamp must be within the replay
 * window of the daemon's clock (either direction); a delivery id is accepted once (the
 * set of ids seen within the window is persisted, so a restart does not reopen replays).
 */
#ifndef CTL_TRIGGER_H
#define CTL_TRIGGER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define TRIGGER_HDR_TS "X-Beava-Timestamp"
#define TRIGGER_HDR_SIG "X-Beava-Signature-256"
#define TRIGGER_HDR_DELIVERY "X-Beava-Delivery"

/* "sha256=<64 hex>" into out (>= 72 bytes). */
void trigger_sign(const void *secret, size_t secret_len, const char *timestamp, const void *body,
                  size_t body_len, char *out);

/* 0 when the signature and timestamp are good; -1 with the reason otherwise. */
int trigger_verify(const void *secret, size_t secret_len, const char *timestamp,
                   const char *signature, const void *body, size_t body_len, int64_t now_s,
                   int64_t window_s, char *err);

/* Delivery-id de-duplication, persisted in a JSON file. */
struct trigger_seen;
int trigger_seen_open(const char *path, struct trigger_seen **out, char *err);
void trigger_seen_close(struct trigger_seen *s);
/* 0 when id is new (it is recorded, expired ids are dropped, the file is rewritten
 * atomically); -1 when it was seen already or cannot be recorded. */
int trigger_seen_check_add(struct trigger_seen *s, const char *id, int64_t now_s, int64_t window_s,
                           char *err);

#endif
