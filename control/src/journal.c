/*
 * journal.c — fsync'd JSON-lines journal and its reader.
 *
 * The journal is the record of truth for "what happened": the daemon's recovery after a
 * crash reads it to find a deploy that started and never ended. Appends are O_APPEND
 * writes of one line followed by fdatasync; the file is never rewritten (rotation is left
 * to the operator, see README).
 */
#include "journal.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JOURNAL_MAX_BYTES (256u << 20)

struct journal {
    int fd;
    pthread_mutex_t mu;
};

int journal_open(const char *path, struct journal **out, char *err) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return ctl_errf(err, "journal %s: %s", path, strerror(errno));
    struct journal *j = ctl_calloc(1, sizeof *j);
    j->fd = fd;
    pthread_mutex_init(&j->mu, NULL);
    /* Terminate a torn last line so the next record starts on its own line. */
    int rfd = open(path, O_RDONLY | O_CLOEXEC);
    if (rfd >= 0) {
        off_t end = lseek(rfd, 0, SEEK_END);
        char c = '\n';
        if (end > 0 && pread(rfd, &c, 1, end - 1) == 1 && c != '\n') {
            /* best effort */
            if (write(fd, "\n", 1) != 1) {}
        }
        close(rfd);
    }
    *out = j;
    return 0;
}

void journal_close(struct journal *j) {
    if (!j) return;
    close(j->fd);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

int journal_append(struct journal *j, json_t *rec, char *err) {
    json_t *copy = json_copy(rec);
    if (!json_object_get(copy, "ts")) {
        char ts[40];
        ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
        json_object_set_new(copy, "ts", json_string(ts));
    }
    char *line = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    if (!line) return ctl_errf(err, "journal: record does not serialise");
    size_t len = strlen(line);
    line = ctl_realloc(line, len + 2);
    line[len++] = '\n';
    pthread_mutex_lock(&j->mu);
    int rc = 0;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(j->fd, line + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = ctl_errf(err, "journal write: %s", strerror(errno));
            break;
        }
        off += (size_t)n;
    }
    if (rc == 0 && fdatasync(j->fd) < 0) rc = ctl_errf(err, "journal fsync: %s", strerror(errno));
    pthread_mutex_unlock(&j->mu);
    free(line);
    return rc;
}

json_t *journal_read(const char *path, size_t *skipped) {
    json_t *out = json_array();
    char *text = NULL;
    size_t len = 0, bad = 0;
    char err[CTL_ERR_LEN];
    if (ctl_read_file(path, JOURNAL_MAX_BYTES, &text, &len, err) < 0) {
        if (skipped) *skipped = 0;
        return out;
    }
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *rec = json_loads(line, 0, NULL);
        if (!json_is_object(rec)) {
            json_decref(rec);
            bad++;
            continue;
        }
        json_array_append_new(out, rec);
    }
    free(text);
    if (skipped) *skipped = bad;
    return out;
}

json_t *journal_history(json_t *records, size_t limit) {
    json_t *byid = json_object();
    json_t *order = json_array();
    size_t i;
    json_t *rec;
    json_array_foreach(records, i, rec) {
        const char *id = json_string_value(json_object_get(rec, "deploy"));
        const char *ev = json_string_value(json_object_get(rec, "event"));
        if (!id || !ev) continue;
        json_t *d = json_object_get(byid, id);
        if (!strcmp(ev, "supervisor.restart")) {
            /* a crash restart is its own entry: no queued/started records precede it */
            bool ok = json_is_true(json_object_get(rec, "ok"));
            d = json_pack("{s:s,s:s,s:s,s:s,s:O?,s:O?,s:O?,s:[]}", "id", id, "kind", "restart", "source", "supervisor",
                          "status", ok ? "succeeded" : "failed", "started", json_object_get(rec, "ts"), "ended",
                          json_object_get(rec, "ts"), "digest", json_object_get(rec, "digest"), "steps");
            const char *keys[] = { "exit", "log_tail", "restarts", "old_pid", "new_pid", "image", "ms", NULL };
            for (int k = 0; keys[k]; k++)
                if (json_object_get(rec, keys[k])) json_object_set(d, keys[k], json_object_get(rec, keys[k]));
            const char *ex = json_string_value(json_object_get(rec, "exit"));
            const char *msg = json_string_value(json_object_get(rec, "message"));
            char *m = ctl_asprintf("the server %s; %s", ex ? ex : "died",
                                   ok ? "restarted by the supervisor" : (msg ? msg : "restart failed"));
            json_object_set_new(d, "message", json_string(m));
            free(m);
            json_object_set_new(byid, id, d);
            json_array_append_new(order, json_string(id));
            continue;
        }
        if (!d) {
            d = json_pack("{s:s,s:s,s:[]}", "id", id, "status", "queued", "steps");
            json_object_set_new(byid, id, d);
            json_array_append_new(order, json_string(id));
        }
        if (!strcmp(ev, "deploy.queued") || !strcmp(ev, "deploy.start")) {
            const char *keys[] = { "kind", "image", "revision", "manifests", "source", "target", NULL };
            for (int k = 0; keys[k]; k++)
                if (json_object_get(rec, keys[k])) json_object_set(d, keys[k], json_object_get(rec, keys[k]));
            json_object_set(d, !strcmp(ev, "deploy.start") ? "started" : "queued_at", json_object_get(rec, "ts"));
            if (!strcmp(ev, "deploy.start")) json_object_set_new(d, "status", json_string("running"));
        } else if (!strcmp(ev, "step")) {
            json_t *s = json_copy(rec);
            json_object_del(s, "deploy");
            json_object_del(s, "event");
            json_array_append_new(json_object_get(d, "steps"), s);
            if (json_object_get(rec, "digest")) json_object_set(d, "digest", json_object_get(rec, "digest"));
        } else if (!strcmp(ev, "deploy.end") || !strcmp(ev, "recovery")) {
            const char *keys[] = { "status", "message", "digest", "manifests_hash", "rolled_back_to", "labels", NULL };
            for (int k = 0; keys[k]; k++)
                if (json_object_get(rec, keys[k])) json_object_set(d, keys[k], json_object_get(rec, keys[k]));
            json_object_set(d, "ended", json_object_get(rec, "ts"));
        }
    }
    json_t *out = json_array();
    size_t n = json_array_size(order);
    for (size_t k = 0; k < n && k < limit; k++) {
        const char *id = json_string_value(json_array_get(order, n - 1 - k));
        json_array_append(out, json_object_get(byid, id));
    }
    json_decref(order);
    json_decref(byid);
    return out;
}
