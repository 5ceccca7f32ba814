/*
 * trigger.c — HMAC-SHA256 signatures (OpenSSL) and the delivery-id replay guard.
 */
#include "trigger.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static void mac(const void *secret, size_t secret_len, const char *ts, const void *body,
                size_t body_len, unsigned char *out)
{
    size_t tl = strlen(ts);
    unsigned char *msg = ctl_calloc(tl + 1 + body_len + 1, 1);
    memcpy(msg, ts, tl);
    msg[tl] = '.';
    if (body_len)
        memcpy(msg + tl + 1, body, body_len);
    unsigned int ol = 0;
    HMAC(EVP_sha256(), secret, (int)secret_len, msg, tl + 1 + body_len, out, &ol);
    free(msg);
}

void trigger_sign(const void *secret, size_t secret_len, const char *timestamp, const void *body,
                  size_t body_len, char *out)
{
    unsigned char m[32];
    mac(secret, secret_len, timestamp, body, body_len, m);
    memcpy(out, "sha256=", 7);
    ctl_hex(m, 32, out + 7);
}

static int unhex(const char *h, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = (char)tolower((unsigned char)h[2 * i + k]);
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= c - '0';
            else if (c >= 'a' && c <= 'f')
                v |= c - 'a' + 10;
            else
                return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

int trigger_verify(const void *secret, size_t secret_len, const char *timestamp,
                   const char *signature, const void *body, size_t body_len, int64_t now_s,
                   int64_t window_s, char *err)
{
    if (!secret_len)
        return ctl_errf(err, "no trigger secret configured");
    if (!timestamp || !*timestamp)
        return ctl_errf(err, "missing %s header", TRIGGER_HDR_TS);
    if (!signature || !*signature)
        return ctl_errf(err, "missing %s header", TRIGGER_HDR_SIG);
    char *end;
    errno = 0;
    long long ts = strtoll(timestamp, &end, 10);
    if (errno || *end || end == timestamp || strlen(timestamp) > 12)
        return ctl_errf(err, "%s is not a unix time in seconds", TRIGGER_HDR_TS);
    if (ts < now_s - window_s || ts > now_s + window_s)
        return ctl_errf(err, "stale request: timestamp %lld is outside the %llds replay window",
                        ts, (long long)window_s);
    if (strncmp(signature, "sha256=", 7) != 0 || strlen(signature) != 71)
        return ctl_errf(err, "%s must be sha256=<64 hex>", TRIGGER_HDR_SIG);
    unsigned char got[32], want[32];
    if (unhex(signature + 7, got, 32) < 0)
        return ctl_errf(err, "%s must be sha256=<64 hex>", TRIGGER_HDR_SIG);
    mac(secret, secret_len, timestamp, body, body_len, want);
    if (CRYPTO_memcmp(got, want, 32) != 0)
        return ctl_errf(err, "bad signature");
    return 0;
}

struct trigger_seen {
    char *path;
    json_t *ids; /* id -> unix seconds */
};

int trigger_seen_open(const char *path, struct trigger_seen **out, char *err)
{
    struct trigger_seen *s = ctl_calloc(1, sizeof *s);
    s->path = ctl_strdup(path);
    char *text = NULL;
    size_t len = 0;
    char e2[CTL_ERR_LEN];
    if (ctl_read_file(path, 16u << 20, &text, &len, e2) == 0) {
        s->ids = json_loadb(text, len, 0, NULL);
        free(text);
        if (!json_is_object(s->ids)) {
            json_decref(s->ids);
            free(s->path);
            free(s);
            return ctl_errf(err, "%s: not a JSON object (delete it to reset the replay guard)", path);
        }
    } else {
        s->ids = json_object();
    }
    *out = s;
    return 0;
}

void trigger_seen_close(struct trigger_seen *s)
{
    if (!s)
        return;
    json_decref(s->ids);
    free(s->path);
    free(s);
}

int trigger_seen_check_add(struct trigger_seen *s, const char *id, int64_t now_s, int64_t window_s,
                           char *err)
{
    if (!id || !*id)
        return ctl_errf(err, "missing %s header", TRIGGER_HDR_DELIVERY);
    size_t n = strlen(id);
    if (n > 128)
        return ctl_errf(err, "%s longer than 128 characters", TRIGGER_HDR_DELIVERY);
    for (const char *p = id; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'))
            return ctl_errf(err, "%s may only contain [A-Za-z0-9._-]", TRIGGER_HDR_DELIVERY);
    if (json_object_get(s->ids, id))
        return ctl_errf(err, "replayed delivery %s", id);
    /* Drop ids older than twice the window: their timestamps can no longer pass. */
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(s->ids, tmp, k, v) {
        if (json_integer_value(v) < now_s - 2 * window_s)
            json_object_del(s->ids, k);
    }
    json_object_set_new(s->ids, id, json_integer(now_s));
    char *text = json_dumps(s->ids, JSON_COMPACT);
    int rc = ctl_write_file_atomic(s->path, text, strlen(text), 0600, err);
    free(text);
    if (rc < 0) {
        json_object_del(s->ids, id);
        return -1;
    }
    return 0;
}
