/* Unit tests: layer unpacking — whiteouts and the refusal of malicious layers. The tars
 * are built here with libarchive's writer, including ones no honest tool would produce. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>
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
    char type;          /* f file, d dir, l symlink, h hardlink, c char device, p fifo */
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
    assert_int_equal(unpack_layer(t1, "l1", root, err), 0);
    assert_true(exists(root, "usr/bin/beava"));
    assert_true(exists(root, "usr/bin/beava2"));
    assert_true(exists(root, "usr/lib/libx.so"));
    assert_true(exists(root, "data"));
    const struct ent l2[] = {
        {"etc/.wh.old.conf", 'f', ""}, {"opt/.wh..wh..opq", 'f', ""}, {"opt/c", 'f', "c"},
    };
    char *t2 = make_tar(d, "l2.tar", l2, sizeof l2 / sizeof l2[0], 0);
    assert_int_equal(unpack_layer(t2, "l2", root, err), 0);
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
    int rc = unpack_layer(t, "evil", root, err);
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
    const struct ent fifo[] = {{"p", 'p', NULL}};
    expect_refused(fifo, 1, "special file");
    const struct ent hard[] = {{"h", 'h', "../escaped"}};
    expect_refused(hard, 1, "hard link");
    const struct ent wh[] = {{".wh...", 'f', ""}, {"../escaped", 'f', "x"}};
    expect_refused(wh, 2, "escapes");
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
    assert_int_equal(unpack_image(store, layers, final, err), 0);
    assert_true(exists(final, "usr/bin/beava"));
    json_decref(layers);
    /* a bad second layer: no final dir, no temp dir left behind */
    layers = json_pack("[{s:s},{s:s}]", "digest", dig_ok, "digest", dig_bad);
    char *final2 = ctl_asprintf("%s/img2", d);
    assert_int_equal(unpack_image(store, layers, final2, err), -1);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
