/*
 * test_site.c - static file resolution (beava/src/server/site.c): traversal in every
 * spelling, symlink escapes, directories and index.html, content types, ETag and
 * If-None-Match, and the /api alias allow-list.
 *
 * Every file-system test runs twice: once with openat2(RESOLVE_BENEATH) (when the kernel
 * has it) and once forced onto the realpath() fallback, since both must refuse the same
 * paths. The fixture is a fresh temp dir: <tmp>/root is the site, <tmp>/outside holds a
 * secret that no request may reach.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "site.h"

typedef struct fixture {
    char tmp[64];
    char root[128];
    bv_site *site;
} fixture;

static void write_file(const char *dir, const char *rel, const char *content) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    assert_int_equal(fclose(f), 0);
}

static void make_dir(const char *dir, const char *rel) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    assert_int_equal(mkdir(p, 0755), 0);
}

static void make_link(const char *dir, const char *rel, const char *target) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    assert_int_equal(symlink(target, p), 0);
}

static int rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb; (void)type; (void)ftw;
    return remove(path);
}

static int setup_tree(void **state, unsigned flags) {
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    snprintf(fx->tmp, sizeof fx->tmp, "/tmp/bv_site_test.XXXXXX");
    if (!mkdtemp(fx->tmp)) return -1;
    snprintf(fx->root, sizeof fx->root, "%s/root", fx->tmp);

    make_dir(fx->tmp, "root");
    make_dir(fx->tmp, "outside");
    write_file(fx->tmp, "outside/secret.txt", "SECRET");
    write_file(fx->tmp, "secret.txt", "SECRET");

    write_file(fx->root, "index.html", "<h1>home</h1>");
    write_file(fx->root, "style.css", "body{}");
    write_file(fx->root, "app.js", "1;");
    write_file(fx->root, "data.json", "{}");
    write_file(fx->root, "logo.svg", "<svg/>");
    write_file(fx->root, "img.png", "png");
    write_file(fx->root, "favicon.ico", "ico");
    write_file(fx->root, "notes.txt", "txt");
    write_file(fx->root, "font.woff2", "woff2");
    write_file(fx->root, "blob.bin", "bin");
    write_file(fx->root, "NOEXT", "noext");
    write_file(fx->root, "UPPER.CSS", "upper");
    write_file(fx->root, "%2e%2e", "a file literally named %2e%2e");
    write_file(fx->root, ".hidden", "hidden");
    make_dir(fx->root, "docs");
    write_file(fx->root, "docs/index.html", "<h1>docs</h1>");
    write_file(fx->root, "docs/page.html", "<h1>page</h1>");
    make_dir(fx->root, "docs/.git");
    write_file(fx->root, "docs/.git/config", "git");
    make_dir(fx->root, "empty");
    make_dir(fx->root, "indexdir");
    make_dir(fx->root, "indexdir/index.html");
    make_link(fx->root, "link_in", "style.css");
    make_link(fx->root, "docs/link_up", "../style.css");
    make_link(fx->root, "escape", "../outside/secret.txt");
    make_link(fx->root, "escape_abs", "/etc/passwd");
    make_link(fx->root, "escdir", "../outside");
    make_link(fx->root, "loop", "loop");
    char fifo[256];
    snprintf(fifo, sizeof fifo, "%s/fifo", fx->root);
    assert_int_equal(mkfifo(fifo, 0644), 0);

    bv_err err;
    bv_err_clear(&err);
    if (bv_site_open(fx->root, flags, &fx->site, &err) != 0) {
        fprintf(stderr, "bv_site_open: %s %s\n", err.code, err.reason);
        return -1;
    }
    *state = fx;
    return 0;
}

static int setup_openat2(void **state) { return setup_tree(state, 0); }
static int setup_fallback(void **state) { return setup_tree(state, BV_SITE_NO_OPENAT2); }

static int teardown_tree(void **state) {
    fixture *fx = *state;
    if (!fx) return 0;
    bv_site_close(fx->site);
    nftw(fx->tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

/* Resolve target, check the status, and (on 200) the body; always leaves no fd open. */
static void expect(fixture *fx, const char *target, int status, const char *body) {
    bv_site_file f;
    int got = bv_site_resolve(fx->site, target, &f);
    if (got != status) fail_msg("%s: got %d, want %d", target, got, status);
    if (status != 200) {
        assert_int_equal(f.fd, -1);
        return;
    }
    assert_true(f.fd >= 0);
    char buf[256];
    ssize_t n = pread(f.fd, buf, sizeof buf - 1, 0);
    assert_true(n >= 0);
    buf[n] = 0;
    assert_int_equal((uint64_t)n, f.size);
    if (body && strcmp(buf, body) != 0) fail_msg("%s: body '%s', want '%s'", target, buf, body);
    assert_int_equal(close(f.fd), 0);
}

/* ---- traversal -------------------------------------------------------------------- */

static void test_traversal(void **state) {
    fixture *fx = *state;
    static const char *const bad[] = {
        "/../etc/passwd",
        "/%2e%2e/",
        "/%2E%2E%2Fetc",
        "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/a/../../x",
        "/docs/../../secret.txt",
        "/..",
        "/.",
        "/./index.html",
        "/docs/./page.html",
        "/%2e%2e",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "//etc/passwd",
        "///etc/passwd",
        "/docs//page.html",
        "/%2fetc%2fpasswd",
        "/%2Fetc/passwd",
        "/\\..\\",
        "/..\\secret.txt",
        "/docs\\..\\..\\secret.txt",
        "/%5c..%5csecret.txt",
        "/index.html%00.txt",
        "/%00",
        "/docs%00/index.html",
        "/%",
        "/%4",
        "/%zz",
        "/%g0",
        "/a%0ab",
        "/tab%09",
        "/del%7f",
        "/ctl\x01",
        "etc/passwd",
        "",
        "?x=/etc/passwd",
        "*",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect(fx, bad[i], 400, NULL);
    /* Decoded exactly once: "%252e%252e" names the file literally called "%2e%2e". */
    expect(fx, "/%252e%252e", 200, "a file literally named %2e%2e");
}

static void test_path_length(void **state) {
    fixture *fx = *state;
    char p[BV_SITE_MAX_PATH + 64];
    memset(p, 'a', sizeof p);
    p[0] = '/';
    p[BV_SITE_MAX_PATH] = 0; /* exactly the cap: allowed (and simply not there) */
    expect(fx, p, 404, NULL);
    p[BV_SITE_MAX_PATH] = 'a';
    p[BV_SITE_MAX_PATH + 1] = 0;
    expect(fx, p, 414, NULL);
    /* The query does not count against the cap. */
    char q[4096];
    int n = snprintf(q, sizeof q, "/style.css?");
    memset(q + n, 'x', sizeof q - (size_t)n - 1);
    q[sizeof q - 1] = 0;
    expect(fx, q, 200, "body{}");
}

/* ---- symlinks, hidden, special files ---------------------------------------------- */

static void test_symlinks(void **state) {
    fixture *fx = *state;
    expect(fx, "/escape", 404, NULL);
    expect(fx, "/escape_abs", 404, NULL);
    expect(fx, "/escdir/secret.txt", 404, NULL);
    expect(fx, "/escdir/", 404, NULL);
    expect(fx, "/loop", 404, NULL);
    /* Symlinks that stay inside the root are fine. */
    expect(fx, "/link_in", 200, "body{}");
    expect(fx, "/docs/link_up", 200, "body{}");
}

static void test_hidden_and_special(void **state) {
    fixture *fx = *state;
    expect(fx, "/.hidden", 404, NULL);
    expect(fx, "/%2ehidden", 404, NULL);
    expect(fx, "/docs/.git/config", 404, NULL);
    expect(fx, "/fifo", 404, NULL); /* must not block either */
    expect(fx, "/missing.html", 404, NULL);
    expect(fx, "/style.css/", 404, NULL); /* a file is not a directory */
    expect(fx, "/style.css/x", 404, NULL);
}

/* ---- directories ------------------------------------------------------------------ */

static void test_directories(void **state) {
    fixture *fx = *state;
    expect(fx, "/", 200, "<h1>home</h1>");
    expect(fx, "/?utm=1", 200, "<h1>home</h1>");
    expect(fx, "/#top", 200, "<h1>home</h1>");
    expect(fx, "/index.html", 200, "<h1>home</h1>");
    expect(fx, "/docs/", 200, "<h1>docs</h1>");
    expect(fx, "/docs", 200, "<h1>docs</h1>");
    expect(fx, "/docs?x", 200, "<h1>docs</h1>");
    expect(fx, "/d%6fcs/page.html", 200, "<h1>page</h1>");
    /* Never a listing: a directory without index.html is 404, so is a dir named index.html. */
    expect(fx, "/empty", 404, NULL);
    expect(fx, "/empty/", 404, NULL);
    expect(fx, "/indexdir/", 404, NULL);
    expect(fx, "/indexdir", 404, NULL);
}

/* ---- content types and caching ---------------------------------------------------- */

static void check_type(fixture *fx, const char *target, const char *type, const char *cache) {
    bv_site_file f;
    assert_int_equal(bv_site_resolve(fx->site, target, &f), 200);
    assert_string_equal(f.content_type, type);
    assert_string_equal(f.cache_control, cache);
    close(f.fd);
}

static void test_content_types(void **state) {
    fixture *fx = *state;
    const char *pub = "public, max-age=300";
    check_type(fx, "/", "text/html; charset=utf-8", "no-cache");
    check_type(fx, "/docs", "text/html; charset=utf-8", "no-cache");
    check_type(fx, "/index.html", "text/html; charset=utf-8", "no-cache");
    check_type(fx, "/style.css", "text/css; charset=utf-8", pub);
    check_type(fx, "/UPPER.CSS", "text/css; charset=utf-8", pub);
    check_type(fx, "/app.js", "text/javascript; charset=utf-8", pub);
    check_type(fx, "/data.json", "application/json", pub);
    check_type(fx, "/logo.svg", "image/svg+xml", pub);
    check_type(fx, "/img.png", "image/png", pub);
    check_type(fx, "/favicon.ico", "image/x-icon", pub);
    check_type(fx, "/notes.txt", "text/plain; charset=utf-8", pub);
    check_type(fx, "/font.woff2", "font/woff2", pub);
    check_type(fx, "/blob.bin", "application/octet-stream", pub);
    check_type(fx, "/NOEXT", "application/octet-stream", pub);
    /* The type follows the name asked for, not the symlink's target. */
    check_type(fx, "/link_in", "application/octet-stream", pub);
}

static void test_fd_flags(void **state) {
    fixture *fx = *state;
    bv_site_file f;
    assert_int_equal(bv_site_resolve(fx->site, "/style.css", &f), 200);
    int fl = fcntl(f.fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fl & O_NONBLOCK, 0);
    assert_int_equal(fl & O_ACCMODE, O_RDONLY);
    assert_true(fcntl(f.fd, F_GETFD) & FD_CLOEXEC);
    close(f.fd);
}

/* ---- ETag / If-None-Match --------------------------------------------------------- */

static void etag_of(fixture *fx, const char *target, char out[BV_SITE_ETAG_MAX]) {
    bv_site_file f;
    assert_int_equal(bv_site_resolve(fx->site, target, &f), 200);
    size_t n = strlen(f.etag);
    assert_true(n >= 5);
    assert_int_equal(f.etag[0], '"');
    assert_int_equal(f.etag[n - 1], '"');
    memcpy(out, f.etag, BV_SITE_ETAG_MAX);
    close(f.fd);
}

static void test_etag(void **state) {
    fixture *fx = *state;
    char a[BV_SITE_ETAG_MAX], b[BV_SITE_ETAG_MAX], c[BV_SITE_ETAG_MAX], d[BV_SITE_ETAG_MAX];
    write_file(fx->root, "e.txt", "one");
    etag_of(fx, "/e.txt", a);
    etag_of(fx, "/e.txt", b);
    assert_string_equal(a, b); /* stable */

    write_file(fx->root, "e.txt", "three"); /* other size */
    etag_of(fx, "/e.txt", c);
    assert_string_not_equal(a, c);

    /* Same size, other bytes, other mtime: still a new tag. */
    write_file(fx->root, "e.txt", "THREE");
    char p[256];
    snprintf(p, sizeof p, "%s/e.txt", fx->root);
    struct timespec ts[2] = {{.tv_sec = 1000000000, .tv_nsec = 5}, {.tv_sec = 1000000000, .tv_nsec = 5}};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    etag_of(fx, "/e.txt", d);
    assert_string_not_equal(c, d);
    assert_string_equal(d, "\"5-" "de0b6b3a7640005\""); /* size 5, 1e18+5 ns in hex */

    /* Different files, different tags. */
    etag_of(fx, "/style.css", a);
    etag_of(fx, "/app.js", b);
    assert_string_not_equal(a, b);
}

static void test_not_modified(void **state) {
    (void)state;
    const char *tag = "\"5-abc\"";
    assert_true(bv_site_not_modified("\"5-abc\"", tag));
    assert_true(bv_site_not_modified("W/\"5-abc\"", tag));
    assert_true(bv_site_not_modified("\"x\", \"5-abc\"", tag));
    assert_true(bv_site_not_modified("\"x\",W/\"5-abc\"", tag));
    assert_true(bv_site_not_modified("*", tag));
    assert_true(bv_site_not_modified("  *  ", tag));
    assert_false(bv_site_not_modified(NULL, tag));
    assert_false(bv_site_not_modified("", tag));
    assert_false(bv_site_not_modified("\"5-abd\"", tag));
    assert_false(bv_site_not_modified("\"5-ab\"", tag));
    assert_false(bv_site_not_modified("\"5-abcd\"", tag));
    assert_false(bv_site_not_modified("5-abc", tag));      /* unquoted: malformed */
    assert_false(bv_site_not_modified("\"5-abc", tag));    /* unterminated */
    assert_false(bv_site_not_modified("W/", tag));
    assert_false(bv_site_not_modified("\"x\", garbage, \"5-abc\"", tag));
    assert_false(bv_site_not_modified("\"5-abc\"", NULL));
}

static void test_not_modified_real_tag(void **state) {
    fixture *fx = *state;
    bv_site_file f;
    assert_int_equal(bv_site_resolve(fx->site, "/style.css", &f), 200);
    assert_true(bv_site_not_modified(f.etag, f.etag));
    char list[200];
    snprintf(list, sizeof list, "\"old\", W/%s", f.etag);
    assert_true(bv_site_not_modified(list, f.etag));
    close(f.fd);
}

/* ---- open errors ------------------------------------------------------------------ */

static void test_open_errors(void **state) {
    fixture *fx = *state;
    bv_site *s = (bv_site *)0x1;
    bv_err err;
    bv_err_clear(&err);
    assert_int_equal(bv_site_open("/nonexistent/beava/site", 0, &s, &err), -1);
    assert_null(s);
    assert_string_equal(err.code, "site_dir_unusable");
    assert_string_equal(err.path, "/nonexistent/beava/site");

    char file[256];
    snprintf(file, sizeof file, "%s/style.css", fx->root);
    bv_err_clear(&err);
    assert_int_equal(bv_site_open(file, 0, &s, &err), -1);
    assert_null(s);
    assert_string_equal(err.code, "site_dir_unusable");

    bv_err_clear(&err);
    assert_int_equal(bv_site_open("", 0, &s, &err), -1);
    assert_string_equal(err.code, "site_dir_unusable");

    /* A relative or symlinked dir is realpath'd. */
    char via_link[256];
    snprintf(via_link, sizeof via_link, "%s/rootlink", fx->tmp);
    assert_int_equal(symlink("root", via_link), 0);
    assert_int_equal(bv_site_open(via_link, 0, &s, &err), 0);
    assert_string_equal(bv_site_root(s), bv_site_root(fx->site));
    bv_site_file f;
    assert_int_equal(bv_site_resolve(s, "/docs/", &f), 200);
    close(f.fd);
    bv_site_close(s);
    unlink(via_link);
    bv_site_close(NULL);
}

/* ---- /api allow-list ---------------------------------------------------------------- */

static void test_allow_list(void **state) {
    (void)state;
    char *tables[] = {"SiteMetrics", "PathStats"};
    char *events[] = {"PageView"};
    bv_site_allow a = {tables, 2, events, 1};

    assert_true(bv_site_table_allowed(&a, "SiteMetrics"));
    assert_true(bv_site_table_allowed(&a, "PathStats"));
    assert_false(bv_site_table_allowed(&a, "sitemetrics")); /* exact, case-sensitive */
    assert_false(bv_site_table_allowed(&a, "Site"));
    assert_false(bv_site_table_allowed(&a, "SiteMetricsX"));
    assert_false(bv_site_table_allowed(&a, "PageView")); /* an event is not a table */
    assert_false(bv_site_table_allowed(&a, ""));
    assert_false(bv_site_table_allowed(&a, NULL));

    assert_true(bv_site_event_allowed(&a, "PageView"));
    assert_false(bv_site_event_allowed(&a, "SiteMetrics"));
    assert_false(bv_site_event_allowed(&a, "Click"));
    assert_false(bv_site_event_allowed(&a, NULL));

    bv_site_allow none = {NULL, 0, NULL, 0};
    assert_false(bv_site_table_allowed(&none, "SiteMetrics"));
    assert_false(bv_site_event_allowed(&none, "PageView"));
    assert_false(bv_site_table_allowed(NULL, "SiteMetrics"));
    assert_false(bv_site_event_allowed(NULL, "PageView"));

    char *holes[] = {NULL, "PageView"};
    bv_site_allow h = {NULL, 0, holes, 2};
    assert_true(bv_site_event_allowed(&h, "PageView"));
}

static void test_api_route(void **state) {
    (void)state;
    char ev[BV_SITE_MAX_NAME + 1];
    assert_int_equal(bv_site_api_route("/api/get", ev), BV_SITE_API_GET);
    assert_int_equal(bv_site_api_route("/api/get/", ev), BV_SITE_API_GET);
    assert_int_equal(bv_site_api_route("/api/get?x=1", ev), BV_SITE_API_GET);
    assert_int_equal(bv_site_api_route("/api/push/PageView", ev), BV_SITE_API_PUSH);
    assert_string_equal(ev, "PageView");
    assert_int_equal(bv_site_api_route("/api/push/PageView/?a=b", ev), BV_SITE_API_PUSH);
    assert_string_equal(ev, "PageView");
    assert_int_equal(bv_site_api_route("/api/push/PageView", NULL), BV_SITE_API_PUSH);

    assert_int_equal(bv_site_api_route("/api/push/", ev), BV_SITE_API_NOT_FOUND);
    assert_string_equal(ev, "");
    assert_int_equal(bv_site_api_route("/api/push", ev), BV_SITE_API_NOT_FOUND);
    assert_int_equal(bv_site_api_route("/api/push/a/b", ev), BV_SITE_API_NOT_FOUND);
    assert_int_equal(bv_site_api_route("/api/get/SiteMetrics/x", ev), BV_SITE_API_NOT_FOUND);
    assert_int_equal(bv_site_api_route("/api/registry", ev), BV_SITE_API_NOT_FOUND);
    assert_int_equal(bv_site_api_route("/api/health", ev), BV_SITE_API_NOT_FOUND);
    assert_int_equal(bv_site_api_route("/api/push-sync/PageView", ev), BV_SITE_API_NOT_FOUND);
    assert_int_equal(bv_site_api_route("/api", ev), BV_SITE_API_NOT_FOUND);
    assert_int_equal(bv_site_api_route("/api/", ev), BV_SITE_API_NOT_FOUND);
    assert_int_equal(bv_site_api_route("/api?x", ev), BV_SITE_API_NOT_FOUND);
    assert_int_equal(bv_site_api_route("/API/get", ev), BV_SITE_API_NONE);
    assert_int_equal(bv_site_api_route("/apix", ev), BV_SITE_API_NONE);
    assert_int_equal(bv_site_api_route("/api.html", ev), BV_SITE_API_NONE); /* the docs page */
    assert_int_equal(bv_site_api_route("/ap", ev), BV_SITE_API_NONE);
    assert_int_equal(bv_site_api_route("/push/PageView", ev), BV_SITE_API_NONE);
    assert_int_equal(bv_site_api_route("/get", ev), BV_SITE_API_NONE);
    assert_int_equal(bv_site_api_route("/", ev), BV_SITE_API_NONE);
    assert_int_equal(bv_site_api_route("", ev), BV_SITE_API_NONE);

    char long_target[300];
    int n = snprintf(long_target, sizeof long_target, "/api/push/");
    memset(long_target + n, 'E', BV_SITE_MAX_NAME);
    long_target[n + BV_SITE_MAX_NAME] = 0;
    assert_int_equal(bv_site_api_route(long_target, ev), BV_SITE_API_PUSH);
    assert_int_equal(strlen(ev), BV_SITE_MAX_NAME);
    long_target[n + BV_SITE_MAX_NAME] = 'E';
    long_target[n + BV_SITE_MAX_NAME + 1] = 0;
    assert_int_equal(bv_site_api_route(long_target, ev), BV_SITE_API_NOT_FOUND);
}

#define FS_TESTS                                                                           \
    cmocka_unit_test(test_traversal), cmocka_unit_test(test_path_length),                  \
        cmocka_unit_test(test_symlinks), cmocka_unit_test(test_hidden_and_special),        \
        cmocka_unit_test(test_directories), cmocka_unit_test(test_content_types),          \
        cmocka_unit_test(test_fd_flags), cmocka_unit_test(test_etag),                      \
        cmocka_unit_test(test_not_modified_real_tag), cmocka_unit_test(test_open_errors)

int main(void) {
    const struct CMUnitTest fs_tests[] = {FS_TESTS};
    const struct CMUnitTest pure_tests[] = {
        cmocka_unit_test(test_not_modified),
        cmocka_unit_test(test_allow_list),
        cmocka_unit_test(test_api_route),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("site_openat2", fs_tests, setup_openat2, teardown_tree);
    failed += cmocka_run_group_tests_name("site_fallback", fs_tests, setup_fallback, teardown_tree);
    failed += cmocka_run_group_tests_name("site_pure", pure_tests, NULL, NULL);
    return failed ? 1 : 0;
}
