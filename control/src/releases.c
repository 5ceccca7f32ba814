/*
 * releases.c — releases and backups from the journal, blob retention (see releases.h).
 */
#include "releases.h"
#include "journal.h"
#include "state.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIGEST_PREFIX_MIN 7

static json_t *read_journal(const char *state_dir) {
    char *p = ctl_asprintf("%s/journal", state_dir);
    json_t *recs = journal_read(p, NULL);
    free(p);
    return recs;
}

static json_t *image_labels(const char *state_dir, const char *digest) {
    if (!ctl_is_digest(digest)) return NULL;
    char *dir = ctl_asprintf("%s/images/%s", state_dir, digest + 7);
    json_t *img = state_load(dir, "image");
    free(dir);
    json_t *labels = json_object_get(json_object_get(json_object_get(img, "config"), "config"), "Labels");
    json_t *out = labels ? json_incref(labels) : NULL;
    json_decref(img);
    return out;
}

static bool in_store(const char *state_dir, const char *digest) {
    if (!ctl_is_digest(digest)) return false;
    char *dir = ctl_asprintf("%s/images/%s", state_dir, digest + 7);
    struct stat st;
    bool ok = stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
    free(dir);
    return ok;
}

static int cmp_last(const void *a, const void *b) {
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "last_deployed"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "last_deployed"));
    return strcmp(y ? y : "", x ? x : "");
}

json_t *releases_list(const char *state_dir) {
    json_t *recs = read_journal(state_dir);
    json_t *images = json_object(), *byd = json_object();
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        const char *ev = json_string_value(json_object_get(r, "event"));
        const char *id = json_string_value(json_object_get(r, "deploy"));
        if (!ev || !id) continue;
        if ((!strcmp(ev, "deploy.start") || !strcmp(ev, "deploy.queued")) && json_object_get(r, "image"))
            json_object_set(images, id, json_object_get(r, "image"));
        if (strcmp(ev, "deploy.end") || strcmp(json_string_value(json_object_get(r, "status")) ?: "", "succeeded"))
            continue;
        const char *dg = json_string_value(json_object_get(r, "digest"));
        if (!dg) continue;
        const char *ts = json_string_value(json_object_get(r, "ts"));
        json_t *e = json_object_get(byd, dg);
        if (!e) {
            e = json_pack("{s:s,s:s,s:[]}", "digest", dg, "first_deployed", ts ? ts : "", "deploys");
            json_object_set_new(byd, dg, e);
        }
        json_object_set_new(e, "last_deployed", json_string(ts ? ts : ""));
        json_array_append_new(json_object_get(e, "deploys"), json_string(id));
        const char *img = json_string_value(json_object_get(images, id));
        if (img && strcmp(img, "local")) json_object_set_new(e, "image", json_string(img));
        else if (img && !json_object_get(e, "image")) json_object_set_new(e, "image", json_string(img));
        json_t *lb = json_object_get(r, "labels");
        if (json_is_object(lb)) json_object_set(e, "journal_labels", lb);
    }
    json_t *cur = state_load(state_dir, "current");
    const char *cd = json_string_value(json_object_get(cur, "digest"));
    const char *pd = json_string_value(json_object_get(json_object_get(cur, "previous"), "digest"));
    size_t n = json_object_size(byd), k = 0;
    json_t **v = ctl_calloc(n ? n : 1, sizeof *v);
    const char *dg;
    json_t *e;
    json_object_foreach(byd, dg, e) {
        json_t *lb = image_labels(state_dir, dg);
        json_t *src = lb ? lb : json_object_get(e, "journal_labels");
        json_t *ver = json_object_get(src, "org.opencontainers.image.version");
        json_t *rev = json_object_get(src, "org.opencontainers.image.revision");
        json_object_set(e, "version", ver ? ver : json_null());
        json_object_set(e, "revision", rev ? rev : json_null());
        json_object_del(e, "journal_labels");
        json_decref(lb);
        json_object_set_new(e, "in_store", json_boolean(in_store(state_dir, dg)));
        json_object_set_new(e, "running", json_boolean(cd && !strcmp(cd, dg)));
        json_object_set_new(e, "previous", json_boolean(pd && !strcmp(pd, dg)));
        if (!json_object_get(e, "image")) json_object_set_new(e, "image", json_null());
        v[k++] = e;
    }
    qsort(v, k, sizeof *v, cmp_last);
    json_t *out = json_array();
    for (size_t j = 0; j < k; j++) json_array_append(out, v[j]);
    free(v);
    json_decref(cur);
    json_decref(byd);
    json_decref(images);
    json_decref(recs);
    return out;
}

/* The tag of an image reference ("host/name:tag" -> "tag"), or NULL. */
static const char *ref_tag(const char *ref, char *buf, size_t len) {
    if (!ref || strchr(ref, '@')) return NULL;
    const char *slash = strrchr(ref, '/');
    const char *colon = strrchr(slash ? slash : ref, ':');
    if (!colon) return NULL;
    snprintf(buf, len, "%s", colon + 1);
    return buf;
}

int releases_resolve(const char *state_dir, const char *what, char *digest_out, char *err) {
    json_t *all = releases_list(state_dir);
    json_t *hits = json_array();
    size_t i;
    json_t *e;
    bool is_digest = !strncmp(what, "sha256:", 7);
    if (is_digest && strlen(what) < 7 + DIGEST_PREFIX_MIN) {
        json_decref(hits);
        json_decref(all);
        return ctl_errf(err, "'%s': give at least %d hex digits of the digest", what, DIGEST_PREFIX_MIN);
    }
    /* newest first, so the first hit of a tag is its most recent release */
    json_array_foreach(all, i, e) {
        const char *dg = json_string_value(json_object_get(e, "digest"));
        const char *img = json_string_value(json_object_get(e, "image"));
        char tb[256];
        const char *tag = ref_tag(img, tb, sizeof tb);
        bool hit = false;
        if (is_digest) {
            hit = !strncmp(dg, what, strlen(what));
        } else {
            size_t k;
            json_t *id;
            json_array_foreach(json_object_get(e, "deploys"), k, id) hit = hit || !strcmp(json_string_value(id), what);
            hit = hit || (img && !strcmp(img, what)) || (tag && !strcmp(tag, what));
        }
        if (hit) json_array_append(hits, e);
    }
    int rc = 0;
    if (json_array_size(hits) == 0) {
        rc = ctl_errf(err, "no release matches '%s' (see `beava-control releases`)", what);
    } else if (is_digest && json_array_size(hits) > 1) {
        rc = ctl_errf(err, "'%s' matches %zu releases; give more of the digest", what, json_array_size(hits));
    } else {
        snprintf(digest_out, 80, "%s", json_string_value(json_object_get(json_array_get(hits, 0), "digest")));
    }
    json_decref(hits);
    json_decref(all);
    return rc;
}

static int cmp_when(const void *a, const void *b) {
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "when"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "when"));
    return strcmp(y ? y : "", x ? x : "");
}

json_t *backups_list(const char *state_dir) {
    json_t *recs = read_journal(state_dir);
    json_t *images = json_object();
    json_t *list = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        const char *ev = json_string_value(json_object_get(r, "event"));
        const char *id = json_string_value(json_object_get(r, "deploy"));
        const char *st = json_string_value(json_object_get(r, "step"));
        if (!ev || !id) continue;
        if (!strcmp(ev, "deploy.start") && json_object_get(r, "image"))
            json_object_set(images, id, json_object_get(r, "image"));
        if (strcmp(ev, "step") || !st || !json_is_true(json_object_get(r, "ok"))) continue;
        json_t *det = json_object_get(r, "detail");
        json_t *b = NULL;
        if (!strcmp(st, "backup") || !strcmp(st, "restore.backup")) {
            const char *path = json_string_value(json_object_get(det, "path"));
            if (!path) path = json_string_value(json_object_get(r, "message"));
            const char *img = json_string_value(json_object_get(images, id));
            char *why = !strcmp(st, "restore.backup")
                ? ctl_strdup("the data dir before a restore")
                : ctl_asprintf("a copy of the data dir before deploying %s", img ? img : "a release");
            b = json_pack("{s:s,s:s,s:s,s:s?,s:O?,s:n,s:O?}", "id", id, "why", why, "kind", "data", "path", path,
                          "bytes", json_object_get(det, "bytes"), "lsn", "release", json_object_get(det, "release"));
            free(why);
        } else if (!strcmp(st, "apply.backup")) {
            char *why = ctl_asprintf("a snapshot before a destructive manifest change");
            b = json_pack("{s:s,s:s,s:s,s:O?,s:O?,s:O?,s:O?}", "id", id, "why", why, "kind", "snapshot", "path",
                          json_object_get(det, "backup"), "bytes", json_object_get(det, "bytes"), "lsn",
                          json_object_get(det, "lsn"), "release", json_object_get(det, "release"));
            free(why);
        }
        if (!b) continue;
        json_object_set(b, "when", json_object_get(r, "ts"));
        const char *p = json_string_value(json_object_get(b, "path"));
        struct stat sb;
        json_object_set_new(b, "exists", json_boolean(p && stat(p, &sb) == 0));
        json_array_append_new(list, b);
    }
    size_t n = json_array_size(list);
    json_t **v = ctl_calloc(n ? n : 1, sizeof *v);
    for (size_t k = 0; k < n; k++) v[k] = json_array_get(list, k);
    qsort(v, n, sizeof *v, cmp_when);
    json_t *out = json_array();
    for (size_t k = 0; k < n; k++) json_array_append(out, v[k]);
    free(v);
    json_decref(list);
    json_decref(images);
    json_decref(recs);
    return out;
}

static bool is_hex64(const char *s) {
    size_t n = 0;
    for (; s[n]; n++)
        if (!isxdigit((unsigned char)s[n]) || isupper((unsigned char)s[n])) return false;
    return n == 64;
}

int releases_gc_blobs(const char *state_dir) {
    char *idir = ctl_asprintf("%s/images", state_dir);
    DIR *d = opendir(idir);
    json_t *keep = json_object();
    bool complete = true;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *dir = ctl_asprintf("%s/%s", idir, e->d_name);
        char *ij = ctl_asprintf("%s/image.json", dir);
        if (access(ij, F_OK) == 0) {
            json_t *img = state_load(dir, "image");
            json_t *blobs = json_object_get(img, "blobs");
            if (!json_is_array(blobs)) complete = false;
            size_t i;
            json_t *b;
            json_array_foreach(blobs, i, b) if (json_is_string(b))
                json_object_set_new(keep, json_string_value(b), json_true());
            json_decref(img);
        }
        free(ij);
        free(dir);
    }
    if (d) closedir(d);
    free(idir);
    int removed = 0;
    char *bdir = ctl_asprintf("%s/blobs/sha256", state_dir);
    d = complete ? opendir(bdir) : NULL;
    while (d && (e = readdir(d))) {
        if (!is_hex64(e->d_name)) continue;
        char dg[80];
        snprintf(dg, sizeof dg, "sha256:%.64s", e->d_name);
        if (json_object_get(keep, dg)) continue;
        char *p = ctl_asprintf("%s/%s", bdir, e->d_name);
        if (unlink(p) == 0) removed++;
        free(p);
    }
    if (d) closedir(d);
    free(bdir);
    json_decref(keep);
    return removed;
}
