/*
 * fuzz_snapfile.c - libFuzzer target for loading snapshots: the snapshot file reader
 * (beava/src/storage/snapfile.c) and, behind it, the engine's snapshot body decoder
 * (engine_deserialize), which is what a crafted file with valid CRCs reaches.
 *
 * The first input byte picks the mode:
 *  0  raw: the rest is the whole file snapshot-0000000000000001.bvs.
 *  1  structured: the rest describes up to SNAP_FILES files, each
 *     [fault mask][LSN byte][u16 body length][body], written with correct CRCs and then
 *     damaged by every fault bit set (wrong version, LSN not matching the name, header
 *     CRC, body CRC, truncated, junk appended). Invariants (abort() otherwise): the
 *     newest undamaged file is the one returned, its body reads back exactly (whole and in
 *     small pieces), the stats count what was skipped, and asking below its LSN returns
 *     the next older undamaged file.
 *  2  body: the rest is the body of one valid file; it is loaded into a fresh engine;
 *     when it loads, the engine is serialised again and that must load too.
 * Loading must never crash, leak, read out of bounds or hit undefined behaviour.
 *
 * Temp dirs go under $FUZZ_SNAP_TMPDIR, else /dev/shm when writable, else /tmp.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "engine.h"
#include "snapfile.h"

#define SNAP_FILES 3
#define READ_PIECE 7            /* bytes per snapfile_read in the piecewise read */

enum {
    F_VERSION = 1, F_LSN = 2, F_HCRC = 4, F_BCRC = 8, F_TRUNC = 16, F_JUNK = 32,
};

static const char *tmp_base(void) {
    const char *t = getenv("FUZZ_SNAP_TMPDIR");
    if (t && *t) return t;
    return access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void write_file(const char *dir, uint64_t name_lsn, const void *a, size_t alen, const void *b, size_t blen) {
    char path[600];
    snprintf(path, sizeof path, "%s/snapshot-%016" PRIx64 ".bvs", dir, name_lsn);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) abort();
    if ((alen && write(fd, a, alen) != (ssize_t)alen) || (blen && write(fd, b, blen) != (ssize_t)blen)) abort();
    close(fd);
}

/* A snapshot file named after `lsn` holding `body`, damaged by `faults`. */
static void build(const char *dir, uint64_t lsn, const unsigned char *body, size_t len, unsigned faults) {
    unsigned char h[SNAPFILE_HEADER_BYTES] = {0};
    memcpy(h, "BEAVASNP", 8);
    put32(h + 8, faults & F_VERSION ? SNAPFILE_FORMAT_VERSION + 1 : SNAPFILE_FORMAT_VERSION);
    put64(h + 16, faults & F_LSN ? lsn + 1 : lsn);
    put64(h + 24, 7);
    put64(h + 32, 1700000000000u);
    put64(h + 40, len);
    put32(h + 48, crc32c(body, len) ^ (faults & F_BCRC ? 1u : 0u));
    put32(h + 60, crc32c(h, 60) ^ (faults & F_HCRC ? 1u : 0u));
    unsigned char *file = malloc(sizeof h + len + 1);
    if (!file) abort();
    memcpy(file, h, sizeof h);
    if (len) memcpy(file + sizeof h, body, len);
    size_t flen = sizeof h + len;
    if (faults & F_JUNK) file[flen++] = 0x5a;
    else if (faults & F_TRUNC) flen--;
    write_file(dir, lsn, file, flen, NULL, 0);
    free(file);
}

static void read_back(snapfile_reader *r, const unsigned char *want, size_t want_len) {
    bv_err e;
    void *body = NULL;
    size_t len = 0;
    if (snapfile_read_all(r, &body, &len, &e) != 0) abort();
    if (want && (len != want_len || (len && memcmp(body, want, len) != 0))) abort();
    free(body);
}

typedef struct spec {
    uint64_t lsn;
    unsigned faults;
    const unsigned char *body;
    size_t len;
} spec;

static void structured(const char *dir, const uint8_t *d, size_t n) {
    spec s[SNAP_FILES];
    size_t ns = 0, off = 0;
    while (ns < SNAP_FILES && n - off >= 4) {
        unsigned faults = d[off] & 63;
        uint64_t lsn = (uint64_t)ns * 256 + d[off + 1] + 1;     /* distinct names */
        size_t len = (size_t)d[off + 2] | (size_t)d[off + 3] << 8;
        off += 4;
        if (len > n - off) len = n - off;
        s[ns] = (spec){ .lsn = lsn, .faults = faults, .body = d + off, .len = len };
        /* truncating an empty body cuts the header: still damaged */
        build(dir, lsn, d + off, len, faults);
        off += len;
        ns++;
    }
    uint64_t below = UINT64_MAX;
    for (int round = 0; round <= SNAP_FILES; round++) {
        const spec *best = NULL;
        unsigned found = 0, rejected_expected = 0;
        for (size_t i = 0; i < ns; i++)
            if (s[i].lsn < below) {
                found++;
                if (!s[i].faults && (!best || s[i].lsn > best->lsn)) best = &s[i];
            }
        for (size_t i = 0; i < ns; i++)
            if (s[i].lsn < below && s[i].faults && (!best || s[i].lsn > best->lsn)) rejected_expected++;
        snapfile_reader *r = NULL;
        snapfile_load_stats st;
        bv_err e;
        int rc = snapfile_open_latest(dir, below, &r, &st, &e);
        if (rc < 0 || st.found != found || st.rejected != rejected_expected) abort();
        if (!best) {
            if (rc != 0 || r) abort();
            break;
        }
        if (rc != 1 || snapfile_reader_header(r)->lsn != best->lsn || snapfile_reader_header(r)->body_len != best->len)
            abort();
        if (round == 0) {
            read_back(r, best->body, best->len);
        } else {
            /* piecewise */
            unsigned char piece[READ_PIECE];
            size_t got = 0;
            ssize_t k;
            while ((k = snapfile_read(r, piece, sizeof piece, &e)) > 0) {
                if ((size_t)k > best->len - got || memcmp(piece, best->body + got, (size_t)k) != 0) abort();
                got += (size_t)k;
            }
            if (k < 0 || got != best->len) abort();
        }
        snapfile_reader_close(r);
        below = best->lsn;
    }
}

static int buf_write(void *ctx, const void *p, size_t n) {
    bv_buf_put(ctx, p, n);
    return 0;
}

static void body(const char *dir, const uint8_t *d, size_t n) {
    build(dir, 1, d, n, 0);
    snapfile_reader *r = NULL;
    bv_err e;
    if (snapfile_open_latest(dir, UINT64_MAX, &r, NULL, &e) != 1) abort();
    void *b = NULL;
    size_t len = 0;
    if (snapfile_read_all(r, &b, &len, &e) != 0 || len != n) abort();
    snapfile_reader_close(r);
    engine_options eo = { .test_mode = true, .memory_gov_enforce = true };
    engine *eng = engine_new(&eo);
    if (!eng) abort();
    char reason[512];
    if (engine_deserialize(eng, b, len, reason, sizeof reason) == 0) {
        bv_buf again;
        bv_buf_init(&again);
        if (engine_serialize(eng, buf_write, &again) != 0) abort();
        engine *eng2 = engine_new(&eo);
        if (!eng2) abort();
        if (engine_deserialize(eng2, again.data, again.len, reason, sizeof reason) != 0) {
            fprintf(stderr, "re-serialised snapshot does not load: %s\n", reason);
            abort();
        }
        bv_buf info;
        bv_buf_init(&info);
        engine_registry_info(eng2, &info);
        bv_buf_free(&info);
        engine_free(eng2);
        bv_buf_free(&again);
    }
    engine_free(eng);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned mode = data[0] % 3;
    data++;
    size--;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/fuzzsnap-XXXXXX", tmp_base());
    if (!mkdtemp(dir)) abort();
    if (mode == 0) {
        write_file(dir, 1, data, size, NULL, 0);
        snapfile_reader *r = NULL;
        bv_err e;
        int rc = snapfile_open_latest(dir, UINT64_MAX, &r, NULL, &e);
        if (rc < 0) abort();
        if (rc == 1) {
            read_back(r, NULL, 0);
            snapfile_reader_close(r);
        }
    } else if (mode == 1) {
        structured(dir, data, size);
    } else {
        body(dir, data, size);
    }
    nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}
