/*
 * trigger.c — HMAC-SHA256 signatures (OpenSSL) and the replay guard (delivery ids, and
 * image + revision per delivery), persisted as {"ids":{id:t},"bodies":{key:{t,delivery}}}.
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

/* The signing string (trigger.h): method, path, timestamp, delivery, each ended by "\n",
 * then the raw body. */
static void mac(const void *secret, size_t secret_len, const struct trigger_req *r, unsigned char *out) {
    const char *parts[] = { r->method ? r->method : "", r->path ? r->path : "", r->timestamp ? r->timestamp : "",
                            r->delivery ? r->delivery : "" };
    size_t n = r->body_len;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) n += strlen(parts[i]) + 1;
    unsigned char *msg = ctl_calloc(n + 1, 1), *p = msg;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t l = strlen(parts[i]);
        memcpy(p, parts[i], l);
        p[l] = '\n';
        p += l + 1;
    }
    if (r->body_len) memcpy(p, r->body, r->body_len);
    unsigned int ol = 0;
    HMAC(EVP_sha256(), secret, (int)secret_len, msg, n, out, &ol);
    free(msg);
}

void trigger_sign(const void *secret, size_t secret_len, const struct trigger_req *r, char *out) {
    unsigned char m[32];
    mac(secret, secret_len, r, m);
    memcpy(out, "sha256=", 7);
    ctl_hex(m, 32, out + 7);
}

static int unhex(const char *h, unsigned char *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = (char)tolower((unsigned char)h[2 * i + k]);
            v <<= 4;
            if (c >= '0' && c <= '9') v |= c - '0';
            else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
            else return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

int trigger_verify(const void *secret, size_t secret_len, const struct trigger_req *r, const char *signature,
                   int64_t now_s, int64_t window_s, char *err) {
    const char *timestamp = r->timestamp;
    if (!secret_len) return ctl_errf(err, "no trigger secret configured");
    if (!timestamp || !*timestamp) return ctl_errf(err, "missing %s header", TRIGGER_HDR_TS);
    if (!signature || !*signature) return ctl_errf(err, "missing %s header", TRIGGER_HDR_SIG);
    char *end;
    errno = 0;
    long long ts = strtoll(timestamp, &end, 10);
    if (errno || *end || end == timestamp || strlen(timestamp) > 12)
        return ctl_errf(err, "%s is not a unix time in seconds", TRIGGER_HDR_TS);
    if (ts < now_s - window_s || ts > now_s + window_s)
        return ctl_errf(err, "stale request: timestamp %lld is outside the %llds replay window", ts,
                        (long long)window_s);
    if (strncmp(signature, "sha256=", 7) != 0 || strlen(signature) != 71)
        return ctl_errf(err, "%s must be sha256=<64 hex>", TRIGGER_HDR_SIG);
    unsigned char got[32], want[32];
    if (unhex(signature + 7, got, 32) < 0) return ctl_errf(err, "%s must be sha256=<64 hex>", TRIGGER_HDR_SIG);
    mac(secret, secret_len, r, want);
    if (CRYPTO_memcmp(got, want, 32) != 0) return ctl_errf(err, "bad signature");
    return 0;
}

struct trigger_seen {
    char *path;
    json_t *doc;    /* {"ids": {id: unix seconds}, "bodies": {key: {"t", "delivery"}}} */
    json_t *ids;    /* borrowed from doc */
    json_t *bodies; /* borrowed from doc */
};

int trigger_seen_open(const char *path, struct trigger_seen **out, char *err) {
    char *text = NULL;
    size_t len = 0;
    char e2[CTL_ERR_LEN];
    json_t *doc = NULL;
    if (ctl_read_file(path, 16u << 20, &text, &len, e2) == 0) {
        doc = json_loadb(text, len, 0, NULL);
        free(text);
        if (!json_is_object(doc)) {
            json_decref(doc);
            return ctl_errf(err, "%s: not a JSON object (delete it to reset the replay guard)", path);
        }
        if (!json_is_object(json_object_get(doc, "ids"))) /* the older flat {id: t} file */
            doc = json_pack("{s:o}", "ids", doc);
    } else {
        doc = json_pack("{s:o}", "ids", json_object());
    }
    if (!json_is_object(json_object_get(doc, "bodies"))) json_object_set_new(doc, "bodies", json_object());
    struct trigger_seen *s = ctl_calloc(1, sizeof *s);
    s->path = ctl_strdup(path);
    s->doc = doc;
    s->ids = json_object_get(doc, "ids");
    s->bodies = json_object_get(doc, "bodies");
    *out = s;
    return 0;
}

void trigger_seen_close(struct trigger_seen *s) {
    if (!s) return;
    json_decref(s->doc);
    free(s->path);
    free(s);
}

static int seen_save(struct trigger_seen *s, char *err) {
    char *text = json_dumps(s->doc, JSON_COMPACT);
    int rc = ctl_write_file_atomic(s->path, text, strlen(text), 0600, err);
    free(text);
    return rc;
}

/* Drop entries older than twice the window: their timestamps can no longer pass. */
static void seen_prune(struct trigger_seen *s, int64_t now_s, int64_t window_s) {
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(s->ids, tmp, k, v) {
        if (json_integer_value(v) < now_s - 2 * window_s) json_object_del(s->ids, k);
    }
    json_object_foreach_safe(s->bodies, tmp, k, v) {
        if (json_integer_value(json_object_get(v, "t")) < now_s - 2 * window_s) json_object_del(s->bodies, k);
    }
}

int trigger_seen_check_add(struct trigger_seen *s, const char *id, int64_t now_s, int64_t window_s, char *err) {
    if (!id || !*id) return ctl_errf(err, "missing %s header", TRIGGER_HDR_DELIVERY);
    size_t n = strlen(id);
    if (n > 128) return ctl_errf(err, "%s longer than 128 characters", TRIGGER_HDR_DELIVERY);
    for (const char *p = id; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'))
            return ctl_errf(err, "%s may only contain [A-Za-z0-9._-]", TRIGGER_HDR_DELIVERY);
    if (json_object_get(s->ids, id)) /* jansson keys compare byte for byte: exact */
        return ctl_errf(err, "replayed delivery %s", id);
    seen_prune(s, now_s, window_s);
    json_object_set_new(s->ids, id, json_integer(now_s));
    if (seen_save(s, err) < 0) {
        json_object_del(s->ids, id);
        return -1;
    }
    return 0;
}

/* "sha256:<hex>" of image "\n" revision: fixed-size keys whatever the strings hold. */
static void body_key(const char *image, const char *revision, char *out) {
    char *k = ctl_asprintf("%s\n%s", image ? image : "", revision ? revision : "");
    ctl_sha256_digest(k, strlen(k), out);
    free(k);
}

int trigger_seen_body_check(struct trigger_seen *s, const char *image, const char *revision, int64_t now_s,
                            int64_t window_s, char *err) {
    char key[80];
    body_key(image, revision, key);
    json_t *v = json_object_get(s->bodies, key);
    if (!v || json_integer_value(json_object_get(v, "t")) < now_s - window_s) return 0;
    return ctl_errf(err,
                    "image %s at revision %s was already deployed from delivery %s %llds ago (within the "
                    "%llds replay window); a replay under a new delivery id is refused",
                    image ? image : "", revision && *revision ? revision : "(none)",
                    json_string_value(json_object_get(v, "delivery")),
                    (long long)(now_s - json_integer_value(json_object_get(v, "t"))), (long long)window_s);
}

int trigger_seen_body_add(struct trigger_seen *s, const char *image, const char *revision, const char *id,
                          int64_t now_s, char *err) {
    char key[80];
    body_key(image, revision, key);
    json_object_set_new(s->bodies, key, json_pack("{s:I,s:s}", "t", (json_int_t)now_s, "delivery", id ? id : ""));
    return seen_save(s, err);
}
