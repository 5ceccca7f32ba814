/*
 * ctl.c - control-plane HTTP through one reused libcurl easy handle (see ctl.h).
 */
#include "ctl.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
    bbuf_put((bbuf *)ud, p, size * n);
    return size * n;
}

int ctl_init(ctl *c) {
    c->curl = curl_easy_init();
    return c->curl ? 0 : -1;
}

void ctl_free(ctl *c) {
    if (c->curl) curl_easy_cleanup(c->curl);
    c->curl = NULL;
}

int ctl_request(ctl *c, const char *method, const char *addr, const char *path, const char *ctype,
                const char *body, size_t blen, long *status, bbuf *resp) {
    CURL *h = c->curl;
    char url[512];
    snprintf(url, sizeof url, "http://%s%s", addr, path);
    bbuf_reset(resp);
    *status = 0;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    struct curl_slist *hdrs = NULL;
    char ct[128];
    if (ctype) {
        snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
        hdrs = curl_slist_append(hdrs, ct);
    }
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? blen : 0));
    }
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        bbuf_reset(resp);
        bbuf_printf(resp, "%s: %s", url, curl_easy_strerror(rc));
        return -1;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    return 0;
}

double ctl_metric(ctl *c, const char *admin_addr, const char *name) {
    bbuf b;
    bbuf_init(&b);
    long st;
    double v = -1;
    if (ctl_request(c, "GET", admin_addr, "/metrics", NULL, NULL, 0, &st, &b) == 0 && st == 200 && b.data) {
        size_t nl = strlen(name);
        for (const char *l = b.data; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
            if (strncmp(l, name, nl) == 0 && (l[nl] == ' ' || l[nl] == '{')) {
                const char *sp = strchr(l + nl, ' ');
                if (sp) v = strtod(sp + 1, NULL);
                break;
            }
        }
    }
    bbuf_free(&b);
    return v;
}
