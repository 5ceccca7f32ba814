/*
 * test_snapfile.c - snapshot files (beava/src/server/snapfile.c): streaming write and
 * commit, retention, stale .tmp removal, loading the newest valid snapshot and falling
 * back past corrupt ones (body, header, truncation, magic, version, name), and catching a
 * file that changes while it is being read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "snapfile.h"

typedef struct fx {
    char root[64];
    char dir[96]; /* <root>/data/snapshots: created by the first snapshot */
} fx;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    strcpy(f->root, "/tmp/bvsnap-XXXXXX");
    if (!mkdtemp(f->root)) return -1;
    snprintf(f->dir, sizeof f->dir, "%s/data/snapshots", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    nftw(f->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void body_bytes(uint64_t seed, unsigned char *b, size_t len) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (unsigned char)x;
    }
}

static void snap_path(const fx *f, uint64_t lsn, const char *ext, char *out, size_t n) {
    snprintf(out, n, "%s/snapshot-%016" PRIx64 ".%s", f->dir, lsn, ext);
}

static bool exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Write snapshot `lsn` with a body of `len` bytes from body_bytes(lsn), in uneven chunks. */
static void write_snap(const fx *f, uint64_t lsn, size_t len, unsigned retain, snapfile_commit_info *info) {
    unsigned char *b = malloc(len ? len : 1);
    body_bytes(lsn, b, len);
    snapfile_writer *sw = NULL;
    bv_err e = {0};
    if (snapfile_begin(f->dir, lsn, lsn * 10, &sw, &e) != 0) fail_msg("begin: %s", e.reason);
    size_t pos = 0, step = 1;
    while (pos < len) {
        size_t n = step < len - pos ? step : len - pos;
        if (snapfile_write(sw, b + pos, n, &e) != 0) fail_msg("write: %s", e.reason);
        pos += n;
        step = step * 3 + 7; /* 1, 10, 37, ... up to chunks bigger than the 1 MiB buffer */
    }
    if (snapfile_commit(sw, retain, info, &e) != 0) fail_msg("commit: %s", e.reason);
    free(b);
}

/* Load the newest valid snapshot and check it is `lsn` with the expected body. */
static void expect_latest(const fx *f, uint64_t below, uint64_t lsn, size_t len, snapfile_load_stats *st) {
    snapfile_reader *r = NULL;
    bv_err e = {0};
    int rc = snapfile_open_latest(f->dir, below, &r, st, &e);
    if (rc != 1) fail_msg("open_latest = %d (%s)", rc, e.reason);
    const snapfile_header *h = snapfile_reader_header(r);
    assert_int_equal(h->lsn, lsn);
    assert_int_equal(h->registry_version, lsn * 10);
    assert_int_equal(h->body_len, len);
    assert_true(h->created_ms > 1600000000000ull);
    unsigned char *want = malloc(len ? len : 1);
    body_bytes(lsn, want, len);
    void *got;
    size_t gl;
    assert_int_equal(snapfile_read_all(r, &got, &gl, &e), 0);
    assert_int_equal(gl, len);
    assert_memory_equal(got, want, len);
    assert_int_equal(h->body_crc, crc32c(want, len));
    free(got);
    free(want);
    snapfile_reader_close(r);
}

static size_t count_ext(const fx *f, const char *ext) {
    DIR *d = opendir(f->dir);
    if (!d) return 0;
    size_t n = 0, el = strlen(ext);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > el && strcmp(de->d_name + l - el, ext) == 0) n++;
    }
    closedir(d);
    return n;
}

static void flip(const char *path, off_t off) {
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= 0x40;
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_write_commit_load(void **state) {
    fx *f = *state;
    snapfile_load_stats st;
    snapfile_reader *r = NULL;
    bv_err e = {0};
    /* nothing yet: cold start, even without the directory */
    assert_int_equal(snapfile_open_latest(f->dir, UINT64_MAX, &r, &st, &e), 0);
    assert_null(r);
    assert_int_equal(st.found, 0);

    size_t len = 3 * 1024 * 1024 + 12345;
    snapfile_commit_info info;
    write_snap(f, 100, len, 0, &info);
    assert_int_equal(info.bytes, len + SNAPFILE_HEADER_BYTES);
    char p[256];
    snap_path(f, 100, "bvs", p, sizeof p);
    assert_true(exists(p));
    snap_path(f, 100, "tmp", p, sizeof p);
    assert_false(exists(p));
    expect_latest(f, UINT64_MAX, 100, len, &st);
    assert_int_equal(st.found, 1);
    assert_int_equal(st.rejected, 0);

    /* streaming read in small pieces */
    assert_int_equal(snapfile_open_latest(f->dir, UINT64_MAX, &r, NULL, &e), 1);
    unsigned char *want = malloc(len);
    body_bytes(100, want, len);
    unsigned char buf[7000];
    size_t pos = 0;
    for (;;) {
        ssize_t n = snapfile_read(r, buf, sizeof buf, &e);
        assert_true(n >= 0);
        if (n == 0) break;
        assert_memory_equal(buf, want + pos, (size_t)n);
        pos += (size_t)n;
    }
    assert_int_equal(pos, len);
    snapfile_reader_close(r);
    free(want);

    /* an empty body is a valid snapshot */
    write_snap(f, 150, 0, 0, NULL);
    expect_latest(f, UINT64_MAX, 150, 0, NULL);
}

static void test_retain(void **state) {
    fx *f = *state;
    snapfile_commit_info info;
    for (uint64_t l = 1; l <= 5; l++) write_snap(f, l * 10, 1000 + l, 0, &info);
    assert_int_equal(info.removed_old, 1);
    assert_int_equal(count_ext(f, ".bvs"), 2);
    char p[256];
    snap_path(f, 40, "bvs", p, sizeof p);
    assert_true(exists(p));
    snap_path(f, 50, "bvs", p, sizeof p);
    assert_true(exists(p));
    write_snap(f, 60, 10, 3, &info);
    assert_int_equal(count_ext(f, ".bvs"), 3);
    assert_int_equal(info.removed_old, 0);
    write_snap(f, 70, 10, 1, &info);
    assert_int_equal(count_ext(f, ".bvs"), 1);
    assert_int_equal(info.removed_old, 3);
    expect_latest(f, UINT64_MAX, 70, 10, NULL);
    /* prune on its own */
    write_snap(f, 80, 10, 5, NULL);
    write_snap(f, 90, 10, 5, NULL);
    bv_err e;
    assert_int_equal(snapfile_prune(f->dir, 2, &info, &e), 0);
    assert_int_equal(count_ext(f, ".bvs"), 2);
    assert_int_equal(info.removed_old, 1);
}

static void test_corrupt_newest_falls_back(void **state) {
    fx *f = *state;
    char p[256];
    /* each way a newest snapshot can be bad, with the reason we expect */
    const char *reasons[] = {"body CRC", "header CRC", "body is", "bad magic", "version", "does not match"};
    for (int k = 0; k < 6; k++) {
        write_snap(f, 10, 5000, 5, NULL);
        write_snap(f, 20, 7000, 5, NULL);
        snap_path(f, 20, "bvs", p, sizeof p);
        switch (k) {
        case 0: flip(p, SNAPFILE_HEADER_BYTES + 3000); break;
        case 1: flip(p, 24); break;
        case 2: assert_int_equal(truncate(p, SNAPFILE_HEADER_BYTES + 6999), 0); break;
        case 3: flip(p, 0); break;
        case 4: {
            /* version 2 with a correct header CRC */
            int fd = open(p, O_RDWR);
            unsigned char h[64];
            assert_int_equal(pread(fd, h, 64, 0), 64);
            h[8] = 2;
            uint32_t c = crc32c(h, 60);
            for (int i = 0; i < 4; i++) h[60 + i] = (unsigned char)(c >> (8 * i));
            assert_int_equal(pwrite(fd, h, 64, 0), 64);
            close(fd);
            break;
        }
        case 5: {
            /* a valid file under the wrong name */
            char p2[256];
            snap_path(f, 30, "bvs", p2, sizeof p2);
            assert_int_equal(rename(p, p2), 0);
            snprintf(p, sizeof p, "%s", p2);
            break;
        }
        }
        snapfile_load_stats st;
        expect_latest(f, UINT64_MAX, 10, 5000, &st);
        assert_int_equal(st.found, 2);
        assert_int_equal(st.rejected, 1);
        if (!strstr(st.first_error, reasons[k])) fail_msg("case %d: '%s' lacks '%s'", k, st.first_error, reasons[k]);
        assert_non_null(strstr(st.first_error, p));
        unlink(p);
    }
    /* all corrupt: cold start, every one counted */
    snap_path(f, 10, "bvs", p, sizeof p);
    flip(p, 100);
    snapfile_load_stats st;
    snapfile_reader *r = NULL;
    bv_err e;
    assert_int_equal(snapfile_open_latest(f->dir, UINT64_MAX, &r, &st, &e), 0);
    assert_null(r);
    assert_int_equal(st.rejected, 1);
}

static void test_below_lsn(void **state) {
    fx *f = *state;
    write_snap(f, 10, 100, 5, NULL);
    write_snap(f, 20, 200, 5, NULL);
    write_snap(f, 30, 300, 5, NULL);
    snapfile_load_stats st;
    expect_latest(f, 30, 20, 200, &st);
    assert_int_equal(st.found, 2);
    expect_latest(f, 11, 10, 100, NULL);
    snapfile_reader *r = NULL;
    bv_err e;
    assert_int_equal(snapfile_open_latest(f->dir, 10, &r, NULL, &e), 0);
}

static void test_stale_tmp_removed(void **state) {
    fx *f = *state;
    write_snap(f, 10, 100, 0, NULL);
    /* a crash mid-write leaves a .tmp (zero header); it is never loaded */
    char tmp[256];
    snap_path(f, 15, "tmp", tmp, sizeof tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT, 0644);
    unsigned char junk[200] = {0};
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    snapfile_load_stats st;
    expect_latest(f, UINT64_MAX, 10, 100, &st);
    assert_int_equal(st.found, 1);
    /* also one with the same LSN as the next snapshot: overwritten, then renamed */
    char tmp2[256];
    snap_path(f, 20, "tmp", tmp2, sizeof tmp2);
    fd = open(tmp2, O_WRONLY | O_CREAT, 0644);
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    snapfile_commit_info info;
    write_snap(f, 20, 100, 0, &info);
    assert_int_equal(info.removed_tmp, 1);
    assert_false(exists(tmp));
    assert_false(exists(tmp2));
    assert_int_equal(count_ext(f, ".tmp"), 0);
    expect_latest(f, UINT64_MAX, 20, 100, NULL);
    /* snapfile_prune at boot removes them too */
    fd = open(tmp, O_WRONLY | O_CREAT, 0644);
    close(fd);
    bv_err e;
    assert_int_equal(snapfile_prune(f->dir, 0, &info, &e), 0);
    assert_int_equal(info.removed_tmp, 1);
    assert_false(exists(tmp));
}

static void test_abort(void **state) {
    fx *f = *state;
    snapfile_writer *sw = NULL;
    bv_err e;
    assert_int_equal(snapfile_begin(f->dir, 5, 1, &sw, &e), 0);
    assert_int_equal(snapfile_write(sw, "abc", 3, &e), 0);
    char tmp[256];
    snap_path(f, 5, "tmp", tmp, sizeof tmp);
    assert_true(exists(tmp));
    snapfile_abort(sw);
    assert_false(exists(tmp));
    assert_int_equal(count_ext(f, ".bvs"), 0);
    snapfile_abort(NULL);
    /* a directory that cannot be created */
    char bad[256];
    snprintf(bad, sizeof bad, "%s/file", f->root);
    int fd = open(bad, O_WRONLY | O_CREAT, 0644);
    close(fd);
    snprintf(bad, sizeof bad, "%s/file/snapshots", f->root);
    assert_int_equal(snapfile_begin(bad, 5, 1, &sw, &e), -1);
    assert_null(sw);
    assert_string_equal(e.code, "snapshot_io");
}

static void test_changed_while_reading(void **state) {
    fx *f = *state;
    write_snap(f, 10, 50000, 0, NULL);
    snapfile_reader *r = NULL;
    bv_err e = {0};
    assert_int_equal(snapfile_open_latest(f->dir, UINT64_MAX, &r, NULL, &e), 1);
    char p[256];
    snap_path(f, 10, "bvs", p, sizeof p);
    flip(p, SNAPFILE_HEADER_BYTES + 40000);
    void *b = NULL;
    size_t len;
    assert_int_equal(snapfile_read_all(r, &b, &len, &e), -1);
    assert_null(b);
    assert_string_equal(e.code, "snapshot_corrupt");
    snapfile_reader_close(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_commit_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_newest_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_below_lsn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_tmp_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_while_reading, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
