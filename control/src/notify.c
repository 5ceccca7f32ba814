/*
 * notify.c — the deploy webhook sender (see notify.h).
 */
#include "notify.h"
#include "dlog.h"
#include "http.h"
#include "util.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NOTIFY_ATTEMPTS 5
#define NOTIFY_QUEUE_MAX 64
#define NOTIFY_TIMEOUT_MS 10000
#define NOTIFY_SECRET_MAX 4096

struct notifier {
    char *url;
    char *secret;
    size_t secret_len;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    json_t *queue; /* array of bodies, oldest first */
    bool stop;
};

static void sign(const struct notifier *n, const char *ts, const char *body, char *out, size_t outlen) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    char *msg = ctl_asprintf("%s.%s", ts, body);
    HMAC(EVP_sha256(), n->secret, (int)n->secret_len, (const unsigned char *)msg, strlen(msg), mac, &len);
    free(msg);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    ctl_hex(mac, len, hex);
    snprintf(out, outlen, "X-Beava-Signature-256: sha256=%.64s", hex); /* SHA-256: 64 hex digits */
}

/* One attempt: 0 on a 2xx answer, else -1 with why. */
static int send_once(struct notifier *n, json_t *body, char *why, size_t wl) {
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    char ts[32], h_ts[64], h_sig[128], h_del[200];
    snprintf(ts, sizeof ts, "%lld", (long long)(ctl_now_ms() / 1000));
    snprintf(h_ts, sizeof h_ts, "X-Beava-Timestamp: %s", ts);
    snprintf(h_del, sizeof h_del, "X-Beava-Delivery: %s.%s", json_string_value(json_object_get(body, "deploy")),
             json_string_value(json_object_get(body, "status")));
    sign(n, ts, text, h_sig, sizeof h_sig);
    const char *hdrs[] = { "Content-Type: application/json", h_ts, h_sig, h_del, NULL };
    struct http_req req = { .method = "POST",
                            .url = n->url,
                            .body = text,
                            .body_len = strlen(text),
                            .headers = hdrs,
                            .timeout_ms = NOTIFY_TIMEOUT_MS,
                            .max_body = 65536 };
    struct http_resp resp;
    char err[CTL_ERR_LEN];
    int rc = http_do(&req, &resp, err);
    if (rc < 0) snprintf(why, wl, "%s", err);
    else if (resp.status < 200 || resp.status >= 300) rc = -1, snprintf(why, wl, "status %ld", resp.status);
    http_resp_free(&resp);
    free(text);
    return rc;
}

/* Sleep up to ms unless stopping; returns true when stopping. */
static bool wait_or_stop(struct notifier *n, long ms) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) t.tv_sec++, t.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&n->mu);
    while (!n->stop && pthread_cond_timedwait(&n->cv, &n->mu, &t) == 0) {}
    bool stop = n->stop;
    pthread_mutex_unlock(&n->mu);
    return stop;
}

static void *sender(void *arg) {
    struct notifier *n = arg;
    for (;;) {
        pthread_mutex_lock(&n->mu);
        while (!n->stop && json_array_size(n->queue) == 0) pthread_cond_wait(&n->cv, &n->mu);
        if (n->stop) {
            pthread_mutex_unlock(&n->mu);
            break;
        }
        json_t *body = json_incref(json_array_get(n->queue, 0));
        json_array_remove(n->queue, 0);
        pthread_mutex_unlock(&n->mu);
        char why[CTL_ERR_LEN] = "";
        int attempt = 1;
        bool stopped = false;
        for (;; attempt++) {
            if (send_once(n, body, why, sizeof why) == 0) {
                dlog("notify.sent",
                     json_pack("{s:O,s:O,s:i}", "deploy", json_object_get(body, "deploy"), "status",
                               json_object_get(body, "status"), "attempts", attempt));
                break;
            }
            if (attempt >= NOTIFY_ATTEMPTS) {
                dlog("notify.failed",
                     json_pack("{s:O,s:O,s:i,s:s}", "deploy", json_object_get(body, "deploy"), "status",
                               json_object_get(body, "status"), "attempts", attempt, "reason", why));
                break;
            }
            if ((stopped = wait_or_stop(n, 1000L << (attempt - 1)))) break;
        }
        json_decref(body);
        if (stopped) break;
    }
    return NULL;
}

int notify_start(const struct ctl_config *cfg, struct notifier **out, char *err) {
    *out = NULL;
    if (!*cfg->notify_url) return 0;
    struct notifier *n = ctl_calloc(1, sizeof *n);
    if (*cfg->notify_secret_file) {
        if (ctl_read_file(cfg->notify_secret_file, NOTIFY_SECRET_MAX, &n->secret, &n->secret_len, err) < 0) {
            free(n);
            return -1;
        }
        while (n->secret_len && (n->secret[n->secret_len - 1] == '\n' || n->secret[n->secret_len - 1] == '\r'))
            n->secret[--n->secret_len] = 0;
    }
    if (n->secret_len < 16) {
        free(n->secret);
        free(n);
        return ctl_errf(err, "notify.url is set: notify.secret_file must hold a secret of at least 16 bytes");
    }
    n->url = ctl_strdup(cfg->notify_url);
    n->queue = json_array();
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    if (pthread_create(&n->thread, NULL, sender, n) != 0) {
        notify_stop(n);
        return ctl_errf(err, "cannot start the notification thread");
    }
    *out = n;
    return 0;
}

void notify_deploy(struct notifier *n, json_t *rec) {
    if (!n) return;
    const char *status = json_string_value(json_object_get(rec, "status"));
    if (!status || (strcmp(status, "succeeded") && strcmp(status, "failed") && strcmp(status, "rolled_back"))) return;
    char ev[64], ts[40];
    snprintf(ev, sizeof ev, "deploy.%s", status);
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    json_t *body = json_pack("{s:s,s:s}", "event", ev, "ts", ts);
    const char *keys[] = { "id", "kind", "source", "status", "message", "image", "digest", "rolled_back_to", NULL };
    for (int i = 0; keys[i]; i++)
        if (json_object_get(rec, keys[i]))
            json_object_set(body, !strcmp(keys[i], "id") ? "deploy" : keys[i], json_object_get(rec, keys[i]));
    pthread_mutex_lock(&n->mu);
    if (json_array_size(n->queue) >= NOTIFY_QUEUE_MAX) {
        json_t *old = json_array_get(n->queue, 0);
        dlog("notify.dropped",
             json_pack("{s:O,s:s}", "deploy", json_object_get(old, "deploy"), "reason", "queue full"));
        json_array_remove(n->queue, 0);
    }
    json_array_append_new(n->queue, body);
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

void notify_stop(struct notifier *n) {
    if (!n) return;
    pthread_mutex_lock(&n->mu);
    n->stop = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    if (n->thread) pthread_join(n->thread, NULL);
    size_t i;
    json_t *b;
    json_array_foreach(n->queue, i, b) dlog(
        "notify.dropped", json_pack("{s:O,s:s}", "deploy", json_object_get(b, "deploy"), "reason", "daemon stopping"));
    json_decref(n->queue);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n->url);
    free(n->secret);
    free(n);
}
