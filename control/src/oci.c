/*
 * oci.c — registry client: references, auth challenges, manifests, verified blob downloads.
 *
 * One `struct reg` per operation carries the base URL and the credentials; a bearer token
 * obtained on the first 401 is reused for the rest of that operation. Blobs stream into a
 * temp file in the store while an EVP SHA-256 context hashes them; the file is renamed to
 * its digest name only after the hash matched and the size matched the descriptor.
 */
#include "oci.h"
#include "http.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <curl/curl.h>

#define ACCEPT_MANIFESTS                                          \
    "Accept: application/vnd.oci.image.index.v1+json, "           \
    "application/vnd.oci.image.manifest.v1+json, "                \
    "application/vnd.docker.distribution.manifest.list.v2+json, " \
    "application/vnd.docker.distribution.manifest.v2+json"
#define MAX_MANIFEST (4u << 20)

/* Bounded copy; -1 when src does not fit. */
static int scopy(char *dst, size_t n, const char *src) {
    size_t l = strlen(src);
    if (l >= n) return -1;
    memcpy(dst, src, l + 1);
    return 0;
}

int oci_parse_ref(const char *s, struct oci_ref *r, char *err) {
    memset(r, 0, sizeof *r);
    if (!s || !*s || strlen(s) > 900) return ctl_errf(err, "image reference is empty or too long");
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    char *at = strchr(buf, '@');
    if (at) {
        *at = 0;
        if (!ctl_is_digest(at + 1)) return ctl_errf(err, "image '%s': digest must be sha256:<64 hex>", s);
        scopy(r->digest, sizeof r->digest, at + 1);
    }
    char *slash = strchr(buf, '/');
    if (!slash || slash == buf) return ctl_errf(err, "image '%s': expected HOST[:PORT]/NAME[:TAG][@DIGEST]", s);
    *slash = 0;
    if (!strchr(buf, '.') && !strchr(buf, ':') && strcmp(buf, "localhost"))
        return ctl_errf(err, "image '%s': the registry host is missing (e.g. 127.0.0.1:5000/beava)", s);
    if (scopy(r->host, sizeof r->host, buf) < 0) return ctl_errf(err, "image '%s': registry host too long", s);
    char *path = slash + 1;
    char *colon = strrchr(path, ':');
    if (colon && !strchr(colon, '/')) {
        *colon = 0;
        if (scopy(r->tag, sizeof r->tag, colon + 1) < 0) return ctl_errf(err, "image '%s': tag too long", s);
        for (const char *p = r->tag; *p; p++)
            if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-'))
                return ctl_errf(err, "image '%s': invalid tag", s);
        if (!*r->tag) return ctl_errf(err, "image '%s': empty tag", s);
    }
    if (!*path) return ctl_errf(err, "image '%s': empty repository name", s);
    for (const char *p = path; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || strchr("._-/", *p)))
            return ctl_errf(err, "image '%s': repository names are lower-case [a-z0-9._-/]", s);
    if (strstr(path, "..") || path[0] == '/' || path[strlen(path) - 1] == '/')
        return ctl_errf(err, "image '%s': invalid repository name", s);
    if (scopy(r->repo, sizeof r->repo, path) < 0) return ctl_errf(err, "image '%s': repository name too long", s);
    if (!*r->tag && !*r->digest) snprintf(r->tag, sizeof r->tag, "latest");
    return 0;
}

bool oci_ref_in_repository(const struct oci_ref *r, const char *repository) {
    char full[1024];
    snprintf(full, sizeof full, "%s/%s", r->host, r->repo);
    return repository && *repository && !strcmp(full, repository);
}

void oci_ref_format(const struct oci_ref *r, char *buf, size_t len) {
    snprintf(buf, len, "%s/%s%s%s%s%s", r->host, r->repo, *r->tag ? ":" : "", r->tag, *r->digest ? "@" : "", r->digest);
}

const char *oci_revision_label(json_t *config) {
    json_t *labels = json_object_get(json_object_get(config, "config"), "Labels");
    return json_string_value(json_object_get(labels, "org.opencontainers.image.revision"));
}

bool oci_revision_matches(const char *label, const char *wanted) {
    if (!label || !wanted) return false;
    size_t a = strlen(label), b = strlen(wanted);
    size_t n = a < b ? a : b;
    if (n < 7) return !strcmp(label, wanted);
    return !strncasecmp(label, wanted, n);
}

/* ---- auth ---------------------------------------------------------------------------- */

static void challenge_param(const char *h, const char *name, char *out) {
    out[0] = 0;
    const char *p = h;
    size_t nl = strlen(name);
    while ((p = strstr(p, name))) {
        if ((p == h || p[-1] == ' ' || p[-1] == ',') && p[nl] == '=') {
            p += nl + 1;
            size_t i = 0;
            if (*p == '"') {
                p++;
                while (*p && *p != '"' && i < 511) out[i++] = *p++;
            } else {
                while (*p && *p != ',' && i < 511) out[i++] = *p++;
            }
            out[i] = 0;
            return;
        }
        p += nl;
    }
}

int oci_parse_challenge(const char *h, char *scheme, char *realm, char *service, char *scope) {
    scheme[0] = realm[0] = service[0] = scope[0] = 0;
    if (!h) return -1;
    while (*h == ' ') h++;
    if (!strncasecmp(h, "basic", 5)) {
        strcpy(scheme, "basic");
        return 0;
    }
    if (strncasecmp(h, "bearer", 6) != 0) return -1;
    strcpy(scheme, "bearer");
    h += 6;
    challenge_param(h, "realm", realm);
    challenge_param(h, "service", service);
    challenge_param(h, "scope", scope);
    return *realm ? 0 : -1;
}

struct reg {
    const struct ctl_config *cfg;
    char base[600]; /* scheme://host */
    char repo[512];
    char userpwd[1024]; /* "" = anonymous */
    char auth[4200];    /* "Authorization: ..." once known */
};

static bool is_loopback(const char *host) {
    return !strncmp(host, "127.", 4) || !strncmp(host, "localhost", 9) || !strncmp(host, "[::1]", 5);
}

static int reg_init(struct reg *g, const struct ctl_config *cfg, const struct oci_ref *r, char *err) {
    memset(g, 0, sizeof *g);
    g->cfg = cfg;
    bool http = cfg->registry_plain_http || is_loopback(r->host);
    snprintf(g->base, sizeof g->base, "%s://%s", http ? "http" : "https", r->host);
    snprintf(g->repo, sizeof g->repo, "%s", r->repo);
    if (*cfg->registry_username) {
        char *pw = NULL;
        size_t len = 0;
        if (*cfg->registry_password_file) {
            if (ctl_read_file(cfg->registry_password_file, 4096, &pw, &len, err) < 0) return -1;
            while (len && (pw[len - 1] == '\n' || pw[len - 1] == '\r')) pw[--len] = 0;
        }
        snprintf(g->userpwd, sizeof g->userpwd, "%s:%s", cfg->registry_username, pw ? pw : "");
        free(pw);
    }
    return 0;
}

static int fetch_token(struct reg *g, const char *challenge, char *err) {
    char scheme[16], realm[512], service[512], scope[512];
    if (oci_parse_challenge(challenge, scheme, realm, service, scope) < 0)
        return ctl_errf(err, "registry: unsupported auth challenge '%s'", challenge ? challenge : "");
    if (!strcmp(scheme, "basic")) {
        if (!*g->userpwd)
            return ctl_errf(err,
                            "registry %s asks for credentials (set registry.username and "
                            "registry.password_file)",
                            g->base);
        /* basic auth is sent by curl from userpwd */
        snprintf(g->auth, sizeof g->auth, "basic");
        return 0;
    }
    CURL *c = curl_easy_init();
    char *es = curl_easy_escape(c, service, 0), *sc = NULL;
    if (!*scope) {
        char s2[700];
        snprintf(s2, sizeof s2, "repository:%s:pull", g->repo);
        sc = curl_easy_escape(c, s2, 0);
    } else {
        sc = curl_easy_escape(c, scope, 0);
    }
    char *url = ctl_asprintf("%s%sservice=%s&scope=%s", realm, strchr(realm, '?') ? "&" : "?", es, sc);
    curl_free(es);
    curl_free(sc);
    curl_easy_cleanup(c);
    struct http_req req = { .url = url,
                            .timeout_ms = 30000,
                            .userpwd = *g->userpwd ? g->userpwd : NULL,
                            .max_body = 1u << 20,
                            .follow_redirects = 1 };
    struct http_resp resp;
    int rc = http_do(&req, &resp, err);
    if (rc == 0) {
        json_t *j = json_loads(resp.body, 0, NULL);
        const char *tok = json_string_value(json_object_get(j, "token"));
        if (!tok) tok = json_string_value(json_object_get(j, "access_token"));
        if (resp.status == 401 || resp.status == 403)
            rc = ctl_errf(err,
                          "registry token endpoint %s: status %ld: unauthorized (check registry.username / "
                          "password_file)",
                          realm, resp.status);
        else if (resp.status != 200 || !tok)
            rc = ctl_errf(err, "registry token endpoint %s: status %ld, no token", realm, resp.status);
        else snprintf(g->auth, sizeof g->auth, "Authorization: Bearer %s", tok);
        json_decref(j);
    }
    http_resp_free(&resp);
    free(url);
    return rc;
}

/* One registry request with the auth dance: on 401, answer the challenge once and retry. */
static int reg_request(struct reg *g, const char *method, const char *path, const char *accept, http_sink_fn sink,
                       void *ctx, size_t max_body, long timeout_ms, struct http_resp *resp, char *err) {
    char *url = ctl_asprintf("%s/v2/%s%s", g->base, g->repo, path);
    int rc = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        const char *hdrs[3];
        size_t nh = 0;
        if (accept) hdrs[nh++] = accept;
        if (*g->auth && strcmp(g->auth, "basic")) hdrs[nh++] = g->auth;
        hdrs[nh] = NULL;
        struct http_req req = { .method = method,
                                .url = url,
                                .headers = hdrs,
                                .timeout_ms = timeout_ms,
                                .max_body = max_body,
                                .follow_redirects = 1,
                                .sink = sink,
                                .sink_ctx = ctx,
                                .userpwd = (!strcmp(g->auth, "basic") && *g->userpwd) ? g->userpwd : NULL };
        if (attempt) http_resp_free(resp);
        rc = http_do(&req, resp, err);
        if (rc < 0 || resp->status != 401 || attempt == 1) break;
        if (sink) /* the 401 body went to the sink: the caller must restart; never happens
                     because blob GETs are preceded by an authenticated HEAD */
            break;
        const char *ch = json_string_value(json_object_get(resp->headers, "www-authenticate"));
        if (fetch_token(g, ch, err) < 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && resp->status == 401)
        rc = ctl_errf(err, "registry %s: %s %s: unauthorized (check registry.username / password_file)", g->base,
                      method, path);
    free(url);
    return rc;
}

/* ---- manifests --------------------------------------------------------------------- */

static bool is_index(json_t *m, const char *ctype) {
    const char *mt = json_string_value(json_object_get(m, "mediaType"));
    if (!mt) mt = ctype;
    if (mt && (strstr(mt, "image.index") || strstr(mt, "manifest.list"))) return true;
    return json_is_array(json_object_get(m, "manifests"));
}

/* GET a manifest by tag or digest; verifies the digest when fetching by digest. */
static int get_manifest(struct reg *g, const char *ref, char *digest_out, json_t **out, long *status, char *err) {
    char path[700];
    struct http_resp resp;
    snprintf(path, sizeof path, "/manifests/%s", ref);
    *out = NULL;
    *status = 0;
    if (reg_request(g, "GET", path, ACCEPT_MANIFESTS, NULL, NULL, MAX_MANIFEST, 30000, &resp, err) < 0) {
        http_resp_free(&resp);
        return -1;
    }
    *status = resp.status;
    if (resp.status != 200) {
        ctl_errf(err, "registry: GET %s/%s%s: status %ld %.200s", g->base, g->repo, path, resp.status,
                 resp.body ? resp.body : "");
        http_resp_free(&resp);
        return -1;
    }
    char d[80];
    ctl_sha256_digest(resp.body, resp.len, d);
    const char *hdr = json_string_value(json_object_get(resp.headers, "docker-content-digest"));
    if (ctl_is_digest(ref) && strcmp(d, ref) != 0) {
        ctl_errf(err, "manifest digest mismatch: asked for %s, content hashes to %s", ref, d);
        http_resp_free(&resp);
        return -1;
    }
    if (hdr && ctl_is_digest(hdr) && strcmp(hdr, d) != 0) {
        ctl_errf(err, "manifest digest mismatch: registry says %s, content hashes to %s", hdr, d);
        http_resp_free(&resp);
        return -1;
    }
    json_t *m = json_loadb(resp.body, resp.len, 0, NULL);
    if (!json_is_object(m)) {
        json_decref(m);
        ctl_errf(err, "manifest %s is not a JSON object", ref);
        http_resp_free(&resp);
        return -1;
    }
    const char *ct = json_string_value(json_object_get(resp.headers, "content-type"));
    if (ct && !json_object_get(m, "mediaType")) json_object_set_new(m, "mediaType", json_string(ct));
    snprintf(digest_out, 80, "%s", d);
    *out = m;
    http_resp_free(&resp);
    return 0;
}

int oci_resolve(const struct ctl_config *cfg, const struct oci_ref *r, long wait_s, char *digest_out, long *waited_ms,
                char *err) {
    struct reg g;
    int64_t t0 = ctl_mono_ms(), deadline = t0 + wait_s * 1000;
    if (waited_ms) *waited_ms = 0;
    if (reg_init(&g, cfg, r, err) < 0) return -1;
    const char *ref = *r->digest ? r->digest : r->tag;
    for (;;) {
        json_t *m = NULL;
        long status = 0;
        char e2[CTL_ERR_LEN];
        int rc = get_manifest(&g, ref, digest_out, &m, &status, e2);
        json_decref(m);
        if (rc == 0) {
            if (waited_ms) *waited_ms = (long)(ctl_mono_ms() - t0);
            return 0;
        }
        /* Unauthorized and malformed answers are final; absence and outages are waited out. */
        bool retry = status == 404 || status == 0 || status >= 500 || status == 429;
        if (strstr(e2, "unauthorized") || strstr(e2, "mismatch")) retry = false;
        if (!retry || ctl_mono_ms() >= deadline) {
            if (retry)
                return ctl_errf(err, "image %s/%s:%s did not appear within %lds (last: %s)", r->host, r->repo, ref,
                                wait_s, e2);
            return ctl_errf(err, "%s", e2);
        }
        usleep(500000);
    }
}

static void host_platform(const struct ctl_config *cfg, char *os, char *arch, char *variant) {
    strcpy(os, "linux");
    variant[0] = 0;
    if (*cfg->registry_platform) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", cfg->registry_platform);
        char *save = NULL, *a = strtok_r(buf, "/", &save), *b = strtok_r(NULL, "/", &save),
             *c = strtok_r(NULL, "/", &save);
        if (a) scopy(os, 32, a);
        if (b) scopy(arch, 32, b);
        if (c) scopy(variant, 32, c);
        return;
    }
    struct utsname u;
    uname(&u);
    const char *m = u.machine;
    if (!strcmp(m, "x86_64")) strcpy(arch, "amd64");
    else if (!strcmp(m, "aarch64")) strcpy(arch, "arm64");
    else if (!strncmp(m, "armv7", 5)) strcpy(arch, "arm"), strcpy(variant, "v7");
    else if (!strcmp(m, "i686") || !strcmp(m, "i386")) strcpy(arch, "386");
    else if (scopy(arch, 32, m) < 0) strcpy(arch, "unknown");
}

/* ---- blobs ------------------------------------------------------------------------- */

char *oci_blob_path(const char *store_dir, const char *digest) {
    return ctl_asprintf("%s/blobs/sha256/%s", store_dir, digest + 7);
}

struct blob_sink {
    int fd;
    EVP_MD_CTX *md;
    long long got, limit;
};

static int blob_write(void *ctx, const char *data, size_t len) {
    struct blob_sink *b = ctx;
    b->got += (long long)len;
    if (b->limit >= 0 && b->got > b->limit) return -1;
    EVP_DigestUpdate(b->md, data, len);
    while (len) {
        ssize_t n = write(b->fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int oci_verify_file(const char *path, const char *digest, char *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ctl_errf(err, "%s: %s", path, strerror(errno));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) EVP_DigestUpdate(md, buf, (size_t)n);
    close(fd);
    unsigned char out[32];
    unsigned int ol = 0;
    EVP_DigestFinal_ex(md, out, &ol);
    EVP_MD_CTX_free(md);
    char hex[80] = "sha256:";
    ctl_hex(out, 32, hex + 7);
    if (strcmp(hex, digest) != 0)
        return ctl_errf(err, "digest mismatch: %s should be %s but hashes to %s", path, digest, hex);
    return 0;
}

/* Download one blob into the store unless already there; verified while streaming. */
static int fetch_blob(struct reg *g, const char *store, const char *digest, long long size, long long *fetched,
                      char *err) {
    if (!ctl_is_digest(digest))
        return ctl_errf(err, "descriptor digest '%s' is not sha256:<64 hex>", digest ? digest : "");
    char *final = oci_blob_path(store, digest);
    struct stat st;
    if (stat(final, &st) == 0 && (size < 0 || st.st_size == size)) {
        free(final);
        return 0;
    }
    char *tmp = ctl_asprintf("%s.partial.%d", final, (int)getpid());
    int rc = -1;
    struct http_resp resp = { 0 };
    char path[700];
    snprintf(path, sizeof path, "/blobs/%s", digest);
    /* Authenticate with a HEAD first so the streamed GET never receives a 401 body. */
    if (reg_request(g, "HEAD", path, NULL, NULL, NULL, 1 << 20, 30000, &resp, err) < 0) goto out;
    if (resp.status != 200) {
        ctl_errf(err, "blob %s: registry answered %ld", digest, resp.status);
        goto out;
    }
    http_resp_free(&resp);
    struct blob_sink b = { .fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644),
                           .md = EVP_MD_CTX_new(),
                           .limit = size };
    if (b.fd < 0) {
        EVP_MD_CTX_free(b.md);
        ctl_errf(err, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    EVP_DigestInit_ex(b.md, EVP_sha256(), NULL);
    int hr = reg_request(g, "GET", path, NULL, blob_write, &b, 0, 3600000, &resp, err);
    unsigned char md[32];
    unsigned int ml = 0;
    EVP_DigestFinal_ex(b.md, md, &ml);
    EVP_MD_CTX_free(b.md);
    int fs = fsync(b.fd);
    close(b.fd);
    if (hr < 0) {
        if (size >= 0 && b.got > size)
            ctl_errf(err, "blob %s: more than the %lld bytes its descriptor declares", digest, size);
        unlink(tmp);
        goto out;
    }
    if (resp.status != 200) {
        ctl_errf(err, "blob %s: registry answered %ld", digest, resp.status);
        unlink(tmp);
        goto out;
    }
    char hex[80] = "sha256:";
    ctl_hex(md, 32, hex + 7);
    if (strcmp(hex, digest) != 0) {
        ctl_errf(err, "digest mismatch: blob %s hashes to %s; refused", digest, hex);
        unlink(tmp);
        goto out;
    }
    if (size >= 0 && b.got != size) {
        ctl_errf(err, "blob %s: %lld bytes, descriptor says %lld", digest, b.got, size);
        unlink(tmp);
        goto out;
    }
    if (fs < 0 || rename(tmp, final) < 0) {
        ctl_errf(err, "storing blob %s: %s", digest, strerror(errno));
        unlink(tmp);
        goto out;
    }
    *fetched += b.got;
    rc = 0;
out:
    http_resp_free(&resp);
    free(tmp);
    free(final);
    return rc;
}

static int load_blob_json(const char *store, const char *digest, json_t **out, char *err) {
    char *p = oci_blob_path(store, digest);
    char *text = NULL;
    size_t len = 0;
    int rc = ctl_read_file(p, MAX_MANIFEST, &text, &len, err);
    free(p);
    if (rc < 0) return -1;
    *out = json_loadb(text, len, 0, NULL);
    free(text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return ctl_errf(err, "blob %s is not a JSON object", digest);
    }
    return 0;
}

int oci_pull(const struct ctl_config *cfg, const struct oci_ref *r, const char *digest, const char *store_dir,
             struct oci_image *img, char *err) {
    struct reg g;
    memset(img, 0, sizeof *img);
    snprintf(img->digest, sizeof img->digest, "%s", digest);
    char *dir = ctl_asprintf("%s/blobs/sha256", store_dir);
    int rc = ctl_mkdirs(dir, 0755, err);
    free(dir);
    if (rc < 0 || reg_init(&g, cfg, r, err) < 0) return -1;
    json_t *m = NULL;
    char d[80];
    long status;
    if (get_manifest(&g, digest, d, &m, &status, err) < 0) return -1;
    if (is_index(m, NULL)) {
        char os[32], arch[32], variant[32];
        host_platform(cfg, os, arch, variant);
        const char *pick = NULL;
        size_t i;
        json_t *e;
        char have[400] = "";
        json_array_foreach(json_object_get(m, "manifests"), i, e) {
            json_t *p = json_object_get(e, "platform");
            const char *pos = json_string_value(json_object_get(p, "os"));
            const char *parch = json_string_value(json_object_get(p, "architecture"));
            const char *pvar = json_string_value(json_object_get(p, "variant"));
            if (pos && parch && !strcmp(pos, os) && !strcmp(parch, arch) &&
                (!*variant || !pvar || !strcmp(pvar, variant))) {
                pick = json_string_value(json_object_get(e, "digest"));
                break;
            }
            size_t hl = strlen(have);
            if (hl < sizeof have - 80)
                snprintf(have + hl, sizeof have - hl, "%s%s/%s%s%s", hl ? ", " : "", pos ? pos : "?",
                         parch ? parch : "?", pvar ? "/" : "", pvar ? pvar : "");
        }
        if (!pick) {
            json_decref(m);
            return ctl_errf(err, "image index %s has no manifest for %s/%s%s%s (it has: %s); refused", digest, os, arch,
                            *variant ? "/" : "", variant, *have ? have : "nothing");
        }
        char pd[80];
        snprintf(pd, sizeof pd, "%s", pick);
        json_decref(m);
        m = NULL;
        if (!ctl_is_digest(pd) || get_manifest(&g, pd, d, &m, &status, err) < 0)
            return pd[0] && ctl_is_digest(pd) ? -1 : ctl_errf(err, "index entry digest '%s' invalid", pd);
        if (is_index(m, NULL)) {
            json_decref(m);
            return ctl_errf(err, "nested image index %s", pd);
        }
    }
    snprintf(img->manifest_digest, sizeof img->manifest_digest, "%s", d);
    json_t *cfgd = json_object_get(m, "config");
    json_t *layers = json_object_get(m, "layers");
    if (!json_is_object(cfgd) || !json_is_array(layers)) {
        json_decref(m);
        return ctl_errf(err, "manifest %s has no config or layers", d);
    }
    const char *cdig = json_string_value(json_object_get(cfgd, "digest"));
    json_int_t csize =
        json_is_integer(json_object_get(cfgd, "size")) ? json_integer_value(json_object_get(cfgd, "size")) : -1;
    snprintf(img->config_digest, sizeof img->config_digest, "%s", cdig ? cdig : "");
    if (fetch_blob(&g, store_dir, cdig, csize, &img->bytes_fetched, err) < 0 ||
        load_blob_json(store_dir, cdig, &img->config, err) < 0) {
        json_decref(m);
        return -1;
    }
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l) {
        const char *ld = json_string_value(json_object_get(l, "digest"));
        json_int_t ls =
            json_is_integer(json_object_get(l, "size")) ? json_integer_value(json_object_get(l, "size")) : -1;
        if (fetch_blob(&g, store_dir, ld, ls, &img->bytes_fetched, err) < 0) {
            json_decref(m);
            oci_image_free(img);
            return -1;
        }
    }
    img->layers = json_incref(layers);
    json_decref(m);
    return 0;
}

void oci_image_free(struct oci_image *img) {
    json_decref(img->config);
    json_decref(img->layers);
    img->config = img->layers = NULL;
}
