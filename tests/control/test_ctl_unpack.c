/* Unit tests: layer unpacking — whiteouts, the refusal of malicious layers, and the size
 * limits. The tars are built here with libarchive's writer, including ones no honest tool
 * would produce. Every escape test plants victims next to the rootfs and checks them
 * untouched afterwards. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "oci.h"
#include "unpack.h"
#include "util.h"

struct ent {
    const char *path;
    char type;          /* f file, d dir, l symlink, h hardlink, c char / b block device, p fifo */
    const char *data;   /* file content or link target */
};

static char *make_tar(const char *dir, const char *name, const struct ent *e, size_t n, int gzip)
{
    char *p = ctl_asprintf("%s/%s", dir, name);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (gzip)
        archive_write_add_filter_gzip(a);
    assert_int_equal(archive_write_open_filename(a, p), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *en = archive_entry_new();
        archive_entry_set_pathname(en, e[i].path);
        archive_entry_set_perm(en, e[i].type == 'd' ? 0755 : 0644);
        size_t len = 0;
        switch (e[i].type) {
        case 'f':
            archive_entry_set_filetype(en, AE_IFREG);
            len = strlen(e[i].data);
            archive_entry_set_size(en, (la_int64_t)len);
            break;
        case 'd': archive_entry_set_filetype(en, AE_IFDIR); break;
        case 'l': archive_entry_set_filetype(en, AE_IFLNK); archive_entry_set_symlink(en, e[i].data); break;
        case 'h': archive_entry_set_filetype(en, AE_IFREG); archive_entry_set_hardlink(en, e[i].data); break;
        case 'c': archive_entry_set_filetype(en, AE_IFCHR); archive_entry_set_rdevmajor(en, 1); archive_entry_set_rdevminor(en, 3); break;
        case 'b': archive_entry_set_filetype(en, AE_IFBLK); archive_entry_set_rdevmajor(en, 8); archive_entry_set_rdevminor(en, 0); break;
        case 'p': archive_entry_set_filetype(en, AE_IFIFO); break;
        }
        assert_int_equal(archive_write_header(a, en), ARCHIVE_OK);
        if (len)
            assert_int_equal(archive_write_data(a, e[i].data, len), (la_ssize_t)len);
        archive_entry_free(en);
    }
    archive_write_close(a);
    archive_write_free(a);
    return p;
}

static char *tmpdir(void)
{
    char *d = ctl_strdup("/tmp/ctl-unpack-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static int exists(const char *root, const char *rel)
{
    char *p = ctl_asprintf("%s/%s", root, rel);
    struct stat st;
    int rc = lstat(p, &st) == 0;
    free(p);
    return rc;
}

static void test_layers_and_whiteouts(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN];
    char *d = tmpdir();
    char *root = ctl_asprintf("%s/rootfs", d);
    assert_int_equal(ctl_mkdirs(root, 0755, err), 0);
    const struct ent l1[] = {
        {"./usr/", 'd', NULL}, {"usr/bin/", 'd', NULL}, {"usr/bin/beava", 'f', "#!bin"},
        {"usr/lib/", 'd', NULL}, {"usr/lib/libx.so.1", 'f', "lib"}, {"usr/lib/libx.so", 'l', "libx.so.1"},
        {"etc/", 'd', NULL}, {"etc/old.conf", 'f', "old"}, {"opt/", 'd', NULL}, {"opt/a", 'f', "a"},
        {"opt/b", 'f', "b"}, {"/data/", 'd', NULL}, {"usr/bin/beava2", 'h', "usr/bin/beava"},
        {"lib64", 'l', "usr/lib"},
    };
    char *t1 = make_tar(d, "l1.tar.gz", l1, sizeof l1 / sizeof l1[0], 1);
    assert_int_equal(unpack_layer(t1, "l1", root, NULL, NULL, err), 0);
    assert_true(exists(root, "usr/bin/beava"));
    assert_true(exists(root, "usr/bin/beava2"));
    assert_true(exists(root, "usr/lib/libx.so"));
    assert_true(exists(root, "data"));
    const struct ent l2[] = {
        {"etc/.wh.old.conf", 'f', ""}, {"opt/.wh..wh..opq", 'f', ""}, {"opt/c", 'f', "c"},
    };
    char *t2 = make_tar(d, "l2.tar", l2, sizeof l2 / sizeof l2[0], 0);
    assert_int_equal(unpack_layer(t2, "l2", root, NULL, NULL, err), 0);
    assert_false(exists(root, "etc/old.conf"));
    assert_false(exists(root, "etc/.wh.old.conf"));
    assert_false(exists(root, "opt/a"));
    assert_false(exists(root, "opt/b"));
    assert_true(exists(root, "opt/c"));
    assert_false(exists(root, "opt/.wh..wh..opq"));
    free(t1);
    free(t2);
    free(root);
    ctl_rmtree(d, err);
    free(d);
}

static void expect_refused(const struct ent *e, size_t n, const char *needle)
{
    char err[CTL_ERR_LEN] = "";
    char *d = tmpdir();
    char *root = ctl_asprintf("%s/rootfs", d);
    assert_int_equal(ctl_mkdirs(root, 0755, err), 0);
    char *t = make_tar(d, "evil.tar", e, n, 0);
    int rc = unpack_layer(t, "evil", root, NULL, NULL, err);
    if (rc == 0)
        fail_msg("layer with %s was accepted", e[n - 1].path);
    if (!strstr(err, needle))
        fail_msg("error '%s' lacks '%s'", err, needle);
    /* nothing escaped next to the rootfs */
    assert_false(exists(d, "escaped"));
    free(t);
    free(root);
    ctl_rmtree(d, err);
    free(d);
}

static void test_malicious_layers(void **st)
{
    (void)st;
    const struct ent dotdot[] = {{"../escaped", 'f', "x"}};
    expect_refused(dotdot, 1, "escapes the rootfs");
    const struct ent inner_dotdot[] = {{"usr/", 'd', NULL}, {"usr/../../escaped", 'f', "x"}};
    expect_refused(inner_dotdot, 2, "escapes the rootfs");
    const struct ent abs_link[] = {{"etc/", 'd', NULL}, {"etc/passwd", 'l', "/etc/shadow"}};
    expect_refused(abs_link, 2, "absolute symlink");
    const struct ent rel_escape[] = {{"a/", 'd', NULL}, {"a/link", 'l', "../../escaped"}};
    expect_refused(rel_escape, 2, "outside the rootfs");
    const struct ent through_link[] = {{"dir", 'l', "."}, {"x", 'l', "dir/../.."}};
    expect_refused(through_link, 2, "outside the rootfs");
    const struct ent dev[] = {{"dev/", 'd', NULL}, {"dev/mem", 'c', NULL}};
    expect_refused(dev, 2, "device node");
    const struct ent blk[] = {{"sda", 'b', NULL}};
    expect_refused(blk, 1, "device node");
    const struct ent fifo[] = {{"p", 'p', NULL}};
    expect_refused(fifo, 1, "special file");
    const struct ent hard[] = {{"h", 'h', "../escaped"}};
    expect_refused(hard, 1, "hard link");
    const struct ent wh[] = {{".wh...", 'f', ""}, {"../escaped", 'f', "x"}};
    expect_refused(wh, 2, "escapes");
}

/* ---- escapes through symlinks: resolved by the kernel, host files untouched ------------- */

/* A scratch dir d with d/rootfs and victims next to it: d/victim (file), d/victim-dir/keep,
 * d/x/keep (a directory an entry of another type would replace). */
static char *escape_fixture(char **root)
{
    char err[CTL_ERR_LEN];
    char *d = tmpdir();
    *root = ctl_asprintf("%s/rootfs", d);
    assert_int_equal(ctl_mkdirs(*root, 0755, err), 0);
    char *p = ctl_asprintf("%s/victim-dir", d);
    assert_int_equal(ctl_mkdirs(p, 0755, err), 0);
    free(p);
    p = ctl_asprintf("%s/x", d);
    assert_int_equal(ctl_mkdirs(p, 0755, err), 0);
    free(p);
    const char *files[] = {"victim", "victim-dir/keep", "x/keep", "secret"};
    for (size_t i = 0; i < 4; i++) {
        p = ctl_asprintf("%s/%s", d, files[i]);
        assert_int_equal(ctl_write_file_atomic(p, "host\n", 5, 0644, err), 0);
        free(p);
    }
    return d;
}

static void assert_host_untouched(const char *d)
{
    assert_true(exists(d, "victim"));
    assert_true(exists(d, "victim-dir/keep"));
    assert_true(exists(d, "x/keep"));
    assert_true(exists(d, "secret"));
    assert_false(exists(d, "new"));
    assert_false(exists(d, "newdir"));
    struct stat st;
    char *p = ctl_asprintf("%s/secret", d);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(st.st_nlink, 1);
    free(p);
}

/* Apply a layer onto a rootfs that already holds `plant` (link name -> target, made with
 * symlink(2) as an older, string-checking unpacker would have let through); expect a
 * refusal mentioning needle and the host untouched. */
static void escape_case(const char *plant, const char *target, const struct ent *e, size_t n,
                        const char *needle)
{
    char err[CTL_ERR_LEN] = "";
    char *root;
    char *d = escape_fixture(&root);
    if (plant) {
        char *l = ctl_asprintf("%s/%s", root, plant);
        assert_int_equal(symlink(target, l), 0);
        free(l);
    }
    char *t = make_tar(d, "evil.tar", e, n, 0);
    int rc = unpack_layer(t, "evil", root, NULL, NULL, err);
    if (rc == 0)
        fail_msg("layer ending with %s was accepted", e[n - 1].path);
    if (!strstr(err, needle))
        fail_msg("error '%s' lacks '%s'", err, needle);
    assert_host_untouched(d);
    free(t);
    free(root);
    ctl_rmtree(d, err);
    free(d);
}

static void test_issue_chains(void **st)
{
    (void)st;
    /* the issue's layer: a/, a/b -> .., up -> a/b/.., up/.wh.victim */
    const struct ent chain[] = {{"a/", 'd', NULL}, {"a/b", 'l', ".."}, {"up", 'l', "a/b/.."},
                                {"up/.wh.victim", 'f', ""}};
    escape_case(NULL, NULL, chain, 4, "'up' -> 'a/b/..' points outside the rootfs");
    /* opaque whiteout through vd -> a/b/../victim-dir */
    const struct ent opq[] = {{"a/", 'd', NULL}, {"a/b", 'l', ".."}, {"vd", 'l', "a/b/../victim-dir"},
                              {"vd/.wh..wh..opq", 'f', ""}};
    escape_case(NULL, NULL, opq, 4, "points outside the rootfs");
    /* the escaping link is not kept either when nothing uses it */
    const struct ent only_link[] = {{"a/", 'd', NULL}, {"a/b", 'l', ".."}, {"up", 'l', "a/b/.."}};
    escape_case(NULL, NULL, only_link, 3, "points outside the rootfs");
}

/* Every operation through a link that already leaves the rootfs fails in the kernel. */
static void test_ops_through_planted_link(void **st)
{
    (void)st;
    const struct ent wh[] = {{"up/.wh.victim", 'f', ""}};
    escape_case("up", "..", wh, 1, "resolves outside the rootfs");
    const struct ent opq[] = {{"vd/.wh..wh..opq", 'f', ""}};
    escape_case("vd", "../victim-dir", opq, 1, "resolves outside the rootfs");
    const struct ent mismatch[] = {{"up/x", 'f', "replaces a dir"}};
    escape_case("up", "..", mismatch, 1, "resolves outside the rootfs");
    const struct ent create[] = {{"up/new", 'f', "x"}};
    escape_case("up", "..", create, 1, "resolves outside the rootfs");
    const struct ent mkdir_[] = {{"up/newdir/", 'd', NULL}};
    escape_case("up", "..", mkdir_, 1, "resolves outside the rootfs");
    const struct ent hard_from[] = {{"h", 'h', "up/secret"}};
    escape_case("up", "..", hard_from, 1, "resolves outside the rootfs");
    const struct ent hard_into[] = {{"f", 'f', "x"}, {"up/new", 'h', "f"}};
    escape_case("up", "..", hard_into, 2, "resolves outside the rootfs");
    /* a directory entry over an existing directory only changes its mode: not outside */
    const struct ent chmod_[] = {{"up/x/", 'd', NULL}};
    escape_case("up", "..", chmod_, 1, "resolves outside the rootfs");
    const struct ent overwrite[] = {{"l/keep", 'f', "overwritten"}};
    escape_case("l", "../x", overwrite, 1, "resolves outside the rootfs");
    /* an absolute link planted below: in-kernel resolution refuses it too */
    const struct ent abs[] = {{"etc/x", 'f', "x"}};
    char err[CTL_ERR_LEN];
    char *d = tmpdir(), *root = ctl_asprintf("%s/rootfs", d);
    assert_int_equal(ctl_mkdirs(root, 0755, err), 0);
    char *l = ctl_asprintf("%s/etc", root);
    char *target = ctl_asprintf("%s/hostetc", d);
    assert_int_equal(ctl_mkdirs(target, 0755, err), 0);
    assert_int_equal(symlink(target, l), 0);
    char *t = make_tar(d, "abs.tar", abs, 1, 0);
    assert_int_equal(unpack_layer(t, "abs", root, NULL, NULL, err), -1);
    assert_non_null(strstr(err, "resolves outside the rootfs"));
    assert_false(exists(d, "hostetc/x"));
    free(t);
    free(l);
    free(target);
    free(root);
    ctl_rmtree(d, err);
    free(d);
}

/* Links inside are fine and are followed inside; a dangling link stays; a chain completed
 * by a later layer is refused after that layer. */
static void test_links_inside(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN];
    char *root;
    char *d = escape_fixture(&root);
    const struct ent l1[] = {{"a/", 'd', NULL}, {"a/b", 'l', ".."}, {"lib", 'l', "a"}, {"lib/f", 'f', "via link"},
                             {"dangling", 'l', "missing/../../victim"}, {"self", 'l', "self"},
                             {"a/.wh.b", 'f', ""}};
    char *t1 = make_tar(d, "l1.tar", l1, sizeof l1 / sizeof l1[0], 0);
    assert_int_equal(unpack_layer(t1, "l1", root, NULL, NULL, err), 0);
    assert_true(exists(root, "a/f"));
    assert_false(exists(root, "a/b"));
    assert_true(exists(root, "dangling"));
    const struct ent l2[] = {{"missing/", 'd', NULL}};
    char *t2 = make_tar(d, "l2.tar", l2, 1, 0);
    assert_int_equal(unpack_layer(t2, "l2", root, NULL, NULL, err), -1);
    assert_non_null(strstr(err, "'dangling' -> 'missing/../../victim' points outside the rootfs"));
    assert_host_untouched(d);
    free(t1);
    free(t2);
    free(root);
    ctl_rmtree(d, err);
    free(d);
}

/* ---- size limits ---------------------------------------------------------------------------- */

/* A gzip'd layer of `files` files of `each` zero bytes. */
static char *make_bomb(const char *dir, const char *name, size_t files, size_t each)
{
    char *p = ctl_asprintf("%s/%s", dir, name);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_add_filter_gzip(a);
    assert_int_equal(archive_write_open_filename(a, p), ARCHIVE_OK);
    static const char zeros[65536];
    for (size_t i = 0; i < files; i++) {
        struct archive_entry *en = archive_entry_new();
        char fn[64];
        snprintf(fn, sizeof fn, "z/%zu", i);
        archive_entry_set_pathname(en, fn);
        archive_entry_set_filetype(en, AE_IFREG);
        archive_entry_set_perm(en, 0644);
        archive_entry_set_size(en, (la_int64_t)each);
        assert_int_equal(archive_write_header(a, en), ARCHIVE_OK);
        for (size_t left = each; left;) {
            size_t n = left < sizeof zeros ? left : sizeof zeros;
            assert_int_equal(archive_write_data(a, zeros, n), (la_ssize_t)n);
            left -= n;
        }
        archive_entry_free(en);
    }
    archive_write_close(a);
    archive_write_free(a);
    return p;
}

static uint64_t tree_bytes(const char *root)
{
    return ctl_tree_bytes(root);
}

static void test_size_limits(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN];
    char *d = tmpdir();
    char *root = ctl_asprintf("%s/rootfs", d);
    assert_int_equal(ctl_mkdirs(root, 0755, err), 0);
    const struct unpack_limits lim = {.max_layer_bytes = 4u << 20, .max_image_bytes = 6u << 20};
    /* one 64 MiB file of zeros (a ~64 KiB gzip): refused early, little written */
    char *big = make_bomb(d, "big.tar.gz", 1, 64u << 20);
    struct stat sb;
    assert_int_equal(stat(big, &sb), 0);
    assert_true(sb.st_size < (1 << 20));
    uint64_t used = 0;
    assert_int_equal(unpack_layer(big, "big", root, &lim, &used, err), -1);
    assert_non_null(strstr(err, "layer would expand to more than 4194304 bytes (unpack.max_layer_bytes)"));
    assert_true(tree_bytes(root) < (4u << 20));
    /* many small files whose data alone is under the limit: the headers count too */
    ctl_rmtree(root, err);
    assert_int_equal(ctl_mkdirs(root, 0755, err), 0);
    char *many = make_bomb(d, "many.tar.gz", 20000, 1);
    used = 0;
    assert_int_equal(unpack_layer(many, "many", root, &lim, &used, err), -1);
    assert_non_null(strstr(err, "the layer expands to more than 4194304 bytes (unpack.max_layer_bytes)"));
    /* two layers of 3 MiB each: each fits the layer limit, together not the image's */
    ctl_rmtree(root, err);
    assert_int_equal(ctl_mkdirs(root, 0755, err), 0);
    char *three = make_bomb(d, "three.tar.gz", 3, 1u << 20);
    used = 0;
    assert_int_equal(unpack_layer(three, "l1", root, &lim, &used, err), 0);
    assert_true(used >= (3u << 20) && used < (4u << 20));
    assert_int_equal(unpack_layer(three, "l2", root, &lim, &used, err), -1);
    assert_non_null(strstr(err, "layer l2:"));
    assert_non_null(strstr(err, "image would expand to more than 6291456 bytes (unpack.max_image_bytes)"));
    /* the defaults take a normal layer */
    used = 0;
    assert_int_equal(unpack_layer(three, "l3", root, NULL, &used, err), 0);
    free(big);
    free(many);
    free(three);
    free(root);
    ctl_rmtree(d, err);
    free(d);
}

static void test_unpack_image_atomic(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN], dig_ok[80], dig_bad[80];
    char *d = tmpdir();
    char *store = ctl_asprintf("%s/store", d);
    char *blobs = ctl_asprintf("%s/blobs/sha256", store);
    assert_int_equal(ctl_mkdirs(blobs, 0755, err), 0);
    const struct ent good[] = {{"data/", 'd', NULL}, {"usr/bin/beava", 'f', "x"}};
    const struct ent bad[] = {{"x", 'l', "/abs"}};
    char *tg = make_tar(d, "g.tar", good, 2, 1), *tb = make_tar(d, "b.tar", bad, 1, 0);
    char *data = NULL;
    size_t len;
    assert_int_equal(ctl_read_file(tg, 1 << 20, &data, &len, err), 0);
    ctl_sha256_digest(data, len, dig_ok);
    char *bp = oci_blob_path(store, dig_ok);
    assert_int_equal(rename(tg, bp), 0);
    free(bp);
    free(data);
    assert_int_equal(ctl_read_file(tb, 1 << 20, &data, &len, err), 0);
    ctl_sha256_digest(data, len, dig_bad);
    bp = oci_blob_path(store, dig_bad);
    assert_int_equal(rename(tb, bp), 0);
    free(bp);
    free(data);
    json_t *layers = json_pack("[{s:s}]", "digest", dig_ok);
    char *final = ctl_asprintf("%s/img/rootfs", d);
    char *imgdir = ctl_asprintf("%s/img", d);
    assert_int_equal(ctl_mkdirs(imgdir, 0755, err), 0);
    free(imgdir);
    assert_int_equal(unpack_image(store, layers, final, NULL, err), 0);
    assert_true(exists(final, "usr/bin/beava"));
    json_decref(layers);
    /* a bad second layer: no final dir, no temp dir left behind */
    layers = json_pack("[{s:s},{s:s}]", "digest", dig_ok, "digest", dig_bad);
    char *final2 = ctl_asprintf("%s/img2", d);
    assert_int_equal(unpack_image(store, layers, final2, NULL, err), -1);
    assert_non_null(strstr(err, "absolute symlink"));
    assert_false(exists(d, "img2"));
    json_decref(layers);
    free(final);
    free(final2);
    free(tg);
    free(tb);
    free(store);
    free(blobs);
    ctl_rmtree(d, err);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layers_and_whiteouts),
        cmocka_unit_test(test_malicious_layers),
        cmocka_unit_test(test_unpack_image_atomic),
        cmocka_unit_test(test_issue_chains),
        cmocka_unit_test(test_ops_through_planted_link),
        cmocka_unit_test(test_links_inside),
        cmocka_unit_test(test_size_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
