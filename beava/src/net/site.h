/*
 * site.h - the website's static files (config `site.dir`) and the /api alias allow-list.
 *
 * Pure resolution logic: no sockets, no libmicrohttpd. The HTTP layer calls
 * bv_site_resolve() for a GET/HEAD it did not route elsewhere, gets back an open fd plus
 * the headers to send, and hands the fd to its response (it owns the fd from then on).
 *
 * A bv_site is immutable after bv_site_open(), so any number of threads may call
 * bv_site_resolve() on it at once.
 */
#ifndef BEAVA_SERVER_SITE_H
#define BEAVA_SERVER_SITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "names.h"

#define BV_SITE_MAX_PATH 1024 /* bytes of the request path (query excluded); longer => 414 */
#define BV_SITE_ETAG_MAX 64   /* room for the quoted ETag and its NUL */
#define BV_SITE_MAX_NAME BV_NAME_MAX /* longest event name the /api/push alias accepts */

/* Headers the HTTP layer should add to every static-file response (the site needs nothing
 * from outside the server: no inline script, no CDN, no external font). */
#define BV_SITE_CSP                                                                       \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "     \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "        \
    "frame-ancestors 'none'"
#define BV_SITE_NOSNIFF "nosniff" /* X-Content-Type-Options */

/* bv_site_open() flags. */
#define BV_SITE_NO_OPENAT2 0x1u /* never use openat2(RESOLVE_BENEATH); use the realpath check */

typedef struct bv_site bv_site;

/* A resolved file. fd is open O_RDONLY|O_CLOEXEC on a regular file; the CALLER closes it
 * (or gives it to a response object that closes it). The strings point into static storage
 * or into this struct; they live as long as the struct. */
typedef struct bv_site_file {
    int fd;
    uint64_t size;
    const char *content_type;       /* e.g. "text/html; charset=utf-8" */
    const char *cache_control;      /* "no-cache" for html, "public, max-age=300" otherwise */
    char etag[BV_SITE_ETAG_MAX];    /* strong: "\"<size hex>-<mtime ns hex>\"" */
    int64_t mtime_s;                /* for Last-Modified, if wanted */
} bv_site_file;

/* Open the site directory: realpath()s it and keeps a directory fd. flags: 0 or
 * BV_SITE_NO_OPENAT2. On success *out is set and 0 returned; free with bv_site_close().
 * On failure returns -1, *out is NULL and err says why (code "site_dir_unusable",
 * path = dir). */
int bv_site_open(const char *dir, unsigned flags, bv_site **out, bv_err *err);

/* Free a site (NULL is fine). Files already resolved stay valid (they own their fds). */
void bv_site_close(bv_site *s);

/* The realpath of the site root. Owned by s. */
const char *bv_site_root(const bv_site *s);

/*
 * Resolve a request target (the raw path as received, e.g. "/docs/?x=1") to a file.
 * Returns an HTTP status:
 *   200  found: *out is filled and out->fd must be closed by the caller;
 *   400  malformed or hostile path: not starting with '/', bad %-escape, NUL, control
 *        bytes, backslash, an encoded '/', a "." or ".." segment, an empty segment ("//");
 *   404  no such file, a directory without index.html (never listed), a dot-file, a
 *        symlink that leaves the root, anything that is not a regular file;
 *   414  path longer than BV_SITE_MAX_PATH;
 *   500  an unexpected I/O error (errno is left as the failing call set it).
 * On any status but 200, out->fd is -1 and nothing needs closing.
 * "/" and paths naming a directory ("/docs", "/docs/") map to that directory's index.html.
 * The query ("?...") and fragment ("#...") are ignored; the path is %-decoded once.
 */
int bv_site_resolve(const bv_site *s, const char *target, bv_site_file *out);

/* True when an If-None-Match header value (may be NULL) matches etag, i.e. the answer is
 * 304 Not Modified. Understands "*", lists ("a", "b") and weak tags (W/"a"), compared
 * weakly as RFC 9110 §13.1.2 requires for If-None-Match. */
bool bv_site_not_modified(const char *if_none_match, const char *etag);

/* ---- /api aliases (README "The website") ---------------------------------------------------- */

/* The config lists site.public_tables / site.public_events. Borrowed pointers: the
 * struct and the strings must outlive every call. An empty list allows nothing. */
typedef struct bv_site_allow {
    char **public_tables;
    size_t n_public_tables;
    char **public_events;
    size_t n_public_events;
} bv_site_allow;

bool bv_site_table_allowed(const bv_site_allow *a, const char *table); /* /api/get {table} */
bool bv_site_event_allowed(const bv_site_allow *a, const char *event); /* /api/push/<event> */

typedef enum bv_site_api {
    BV_SITE_API_NONE = 0,  /* not under /api: route it as usual */
    BV_SITE_API_GET,       /* "/api/get": POST, body as /get; check the body's table */
    BV_SITE_API_PUSH,      /* "/api/push/<event>": POST, bare object as /push/<event> */
    BV_SITE_API_NOT_FOUND, /* anything else under /api (incl. "/api" itself): 404 */
} bv_site_api;

/* Classify a raw request target. Like the data-plane router, the query is dropped and
 * trailing '/' are stripped; no %-decoding. For BV_SITE_API_PUSH the event name is copied
 * to event (BV_SITE_MAX_NAME + 1 bytes, NUL-terminated); a longer or empty name, or one
 * containing '/', is BV_SITE_API_NOT_FOUND. event may be NULL when not wanted. */
bv_site_api bv_site_api_route(const char *target, char event[BV_SITE_MAX_NAME + 1]);

#endif
