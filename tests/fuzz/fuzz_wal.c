/*
 * fuzz_wal.c - libFuzzer target for WAL recovery (beava/src/storage/wal.c).
 *
 * Each input becomes one or two segment files in a fresh temp dir, then the real
 * wal_open + wal_recover run on them. Recovery must not crash, leak or loop, and must
 * satisfy these invariants (abort() otherwise):
 *  - replayed LSNs are strictly increasing and the stats agree with the callback;
 *  - after a successful recovery and one append, a second recovery of the same dir has
 *    nothing left to truncate and finds exactly one more record, the one appended;
 *  - a recovery refused for a gap (missing LSNs, see wal.h) leaves the WAL directory
 *    byte for byte as it was; with accept_gaps (top bit of the first byte) it is never
 *    refused for one, without it a successful recovery found none.
 *
 * The first input byte picks how the rest is laid out:
 *  0  raw: the bytes are the whole segment file (exercises header parsing);
 *  1  a valid header, then the bytes as the record area;
 *  2  two segments with valid headers, the bytes split between them;
 *  3  structured: the bytes describe records that are encoded with correct CRCs and
 *     consecutive LSNs, then damaged by a list of byte flips and an optional truncation
 *     (this reaches the resync and quarantine paths far more often than random bytes).
 *
 * Temp dirs go under $FUZZ_WAL_TMPDIR, else /dev/shm when writable, else /tmp.
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -std=c11
 *        -Ibeava/src/base -Ibeava/src/storage tests/fuzz/fuzz_wal.c beava/src/storage/wal.c
 *        beava/src/base/crc32c.c beava/src/base/fsutil.c -lpthread
 */
#include <dirent.h>
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
#include "wal.h"

#define FUZZ_MAX_INPUT (256 * 1024)

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static const char *tmp_base(void) {
    const char *e = getenv("FUZZ_WAL_TMPDIR");
    if (e && *e) return e;
    return access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void header(unsigned char h[64], uint64_t start, uint64_t prev) {
    memset(h, 0, 64);
    memcpy(h, "BEAVAWAL", 8);
    put32(h + 8, WAL_FORMAT_VERSION);
    put64(h + 16, start);
    put64(h + 24, prev);
    put32(h + 60, crc32c(h, 60));
}

static void write_seg(const char *dir, uint64_t start, const unsigned char *a, size_t alen, const unsigned char *b,
                      size_t blen) {
    char p[512];
    snprintf(p, sizeof p, "%s/wal/%016" PRIx64 ".seg", dir, start);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) abort();
    if ((alen && write(fd, a, alen) != (ssize_t)alen) || (blen && write(fd, b, blen) != (ssize_t)blen)) abort();
    close(fd);
}

/* No fsync: this target is about parsing, and fsync would make it 100x slower. */
static ssize_t nosync_io(void *ctx, wal_io_op op, int fd, const void *buf, size_t len, off_t off) {
    (void)ctx;
    if (op == WAL_IO_UNLINK) return unlink(buf);
    return op == WAL_IO_WRITE ? pwrite(fd, buf, len, off) : 0;
}

typedef struct seen {
    uint64_t last, count;
} seen;

static int on_record(void *ctx, uint8_t kind, uint64_t lsn, const void *payload, size_t len, bv_err *err) {
    (void)err;
    seen *s = ctx;
    if (kind == 0 || lsn <= s->last || len > WAL_MAX_PAYLOAD || (len && !payload)) abort();
    /* touch every byte so ASan checks the mapping bounds */
    volatile unsigned char sum = 0;
    for (size_t i = 0; i < len; i++) sum ^= ((const unsigned char *)payload)[i];
    (void)sum;
    s->last = lsn;
    s->count++;
    return 0;
}

/* Mode 3: encode records described by the input, then damage them. Returns the file
 * bytes (malloc'd) for segment A and B in *a / *b. */
static void structured(const uint8_t *d, size_t n, unsigned char **a, size_t *alen, unsigned char **b,
                       size_t *blen, uint64_t *bstart, uint64_t *bprev) {
    size_t cap = 128 + n * 20, len = 0;
    unsigned char *buf = calloc(1, cap);
    if (!buf) abort();
    size_t i = 0;
    unsigned nrec = i < n ? d[i++] : 0;
    unsigned split = i < n ? d[i++] : 0;
    unsigned nflip = i < n ? d[i++] : 0;
    unsigned shape = i < n ? d[i++] : 0; /* low nibble: LSN gap at the split; high: prev lag */
    size_t split_off = 0;
    uint64_t lsn = 1;
    for (unsigned r = 0; r < nrec && i + 2 <= n; r++) {
        size_t pl = d[i];
        uint8_t kind = d[i + 1];
        i += 2;
        if (i + pl > n) break;
        if (len + 17 + pl > cap) break;
        unsigned char *h = buf + len;
        put32(h, (uint32_t)pl);
        put64(h + 8, lsn);
        h[16] = kind ? kind : 1;
        memcpy(h + 17, d + i, pl);
        put32(h + 4, crc32c_extend(crc32c(h + 17, pl), h + 8, 9));
        len += 17 + pl;
        i += pl;
        lsn++;
        if (r + 1 == split) {
            /* segment B may start after a gap (void LSNs) and claim an earlier prev, which
             * turns A's last records into void records */
            uint64_t lag = shape >> 4;
            split_off = len;
            *bprev = lsn - 1 > lag ? lsn - 1 - lag : 0;
            lsn += shape & 3;
            *bstart = lsn;
        }
    }
    for (unsigned k = 0; k < nflip && i + 3 <= n && len; k++) {
        size_t off = ((size_t)d[i] | (size_t)d[i + 1] << 8) % len;
        buf[off] ^= d[i + 2] ? d[i + 2] : 1;
        i += 3;
    }
    if (i + 2 <= n && len) {
        size_t cut = ((size_t)d[i] | (size_t)d[i + 1] << 8) % (len + 1);
        if (cut > split_off) len = cut;
    }
    if (!split_off) {
        *a = buf;
        *alen = len;
        *b = NULL;
        *blen = 0;
        return;
    }
    *a = buf;
    *alen = split_off;
    *b = malloc(len - split_off + 1);
    if (!*b) abort();
    memcpy(*b, buf + split_off, len - split_off);
    *blen = len - split_off;
}

/* CRC of every file name, size and content in dir (sorted by name). */
static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static uint32_t dir_fingerprint(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) abort();
    char *names[64];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.' && n < 64) names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, name_cmp);
    uint32_t c = 0;
    for (size_t i = 0; i < n; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        c = crc32c_extend(c, names[i], strlen(names[i]));
        FILE *f = fopen(path, "rb");
        if (f) {
            unsigned char buf[4096];
            size_t k;
            while ((k = fread(buf, 1, sizeof buf, f)) > 0) c = crc32c_extend(c, buf, k);
            fclose(f);
        }
        free(names[i]);
    }
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > FUZZ_MAX_INPUT) return 0;
    unsigned mode = data[0] % 4;
    bool accept_gaps = (data[0] & 0x80) != 0;
    data++;
    size--;

    char dir[512];
    snprintf(dir, sizeof dir, "%s/fuzzwal-XXXXXX", tmp_base());
    if (!mkdtemp(dir)) abort();
    char wd[600];
    snprintf(wd, sizeof wd, "%s/wal", dir);
    if (mkdir(wd, 0755) != 0) abort();

    unsigned char h[64];
    switch (mode) {
    case 0:
        write_seg(dir, 1, data, size, NULL, 0);
        break;
    case 1:
        header(h, 1, 0);
        write_seg(dir, 1, h, 64, data, size);
        break;
    case 2: {
        size_t cut = size >= 2 ? ((size_t)data[0] | (size_t)data[1] << 8) % (size + 1) : 0;
        uint64_t bstart = size >= 3 ? 2 + data[2] % 64 : 2;
        header(h, 1, 0);
        write_seg(dir, 1, h, 64, data, cut);
        header(h, bstart, size >= 4 ? data[3] % bstart : bstart - 1);
        write_seg(dir, bstart, h, 64, data + cut, size - cut);
        break;
    }
    default: {
        unsigned char *a, *b;
        size_t alen, blen;
        uint64_t bstart = 0, bprev = 0;
        structured(data, size, &a, &alen, &b, &blen, &bstart, &bprev);
        header(h, 1, 0);
        write_seg(dir, 1, h, 64, a, alen);
        if (b) {
            header(h, bstart, bprev);
            write_seg(dir, bstart, h, 64, b, blen);
        }
        free(a);
        free(b);
        break;
    }
    }

    wal_options o = {0};
    o.dir = dir;
    o.tick_ms = 1;
    o.retry_ms = 1;
    o.io_hook = nosync_io;
    o.accept_gaps = accept_gaps;
    wal *w = NULL;
    bv_err e;
    if (wal_open(&o, &w, &e) == 0) {
        seen s1 = {0};
        wal_recovery_stats st1;
        uint32_t before = dir_fingerprint(wd);
        int rc = wal_recover(w, 0, on_record, &s1, &st1, &e);
        /* a refused gap leaves every segment as it was */
        if (rc != 0 && strcmp(e.code, "wal_gap") == 0 && (accept_gaps || dir_fingerprint(wd) != before)) abort();
        if (rc == 0 && st1.gap_lsns && !accept_gaps) abort();
        if (rc == 0 && (st1.replayed != s1.count || st1.records != s1.count || st1.next_lsn <= s1.last)) abort();
        uint64_t lsn = 0;
        bool appended = rc == 0 && wal_append(w, 9, "fuzz", 4, &lsn, &e) == 0;
        if (appended && wal_wait_durable(w, lsn, -1, &e) != WAL_OK) abort();
        wal_close(w, &e);
        if (rc == 0) {
            /* a second boot sees a repaired log: nothing to cut, one record more */
            seen s2 = {0};
            wal_recovery_stats st2;
            if (wal_open(&o, &w, &e) != 0) abort();
            if (wal_recover(w, 0, on_record, &s2, &st2, &e) != 0) abort();
            if (st2.truncated_bytes != 0) abort();
            if (s2.count != s1.count + (appended ? 1 : 0)) abort();
            if (appended && s2.last != lsn) abort();
            wal_close(w, &e);
        }
    }
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
