/*
 * test_wal.c - the write-ahead log (beava/src/server/wal.c) and CRC-32C (crc32c.c).
 *
 * Every test runs in a fresh temp dir. Records carry deterministic payloads derived from
 * their LSN (payload_for), so a replay can be checked byte for byte without keeping
 * copies. Damage is done to the files directly (truncate, bit flips, garbage, forged
 * headers); I/O failures are injected through wal_options.io_hook.
 *
 * The bigger property test (test_random_damage) damages random bytes of random segments
 * and checks three things: recovery never fails, every replayed record is one we wrote,
 * and every record whose bytes were not touched is replayed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "wal.h"

/* ---- fixture and file helpers ------------------------------------------------------- */

typedef struct fx {
    char dir[64];
} fx;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/bvwal-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static unsigned char *read_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    unsigned char *b = malloc((size_t)sb.st_size + 1);
    assert_int_equal(pread(fd, b, (size_t)sb.st_size, 0), sb.st_size);
    close(fd);
    *len = (size_t)sb.st_size;
    return b;
}

static void write_file(const char *path, const void *b, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, len), (ssize_t)len);
    close(fd);
}

static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static bool exists(const char *path) { return file_size(path) >= 0; }

static int u64_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Start LSNs of the segments in <dir>/wal, ascending. Returns the count. */
static size_t list_segs(const char *dir, uint64_t *out, size_t max) {
    char p[256];
    snprintf(p, sizeof p, "%s/wal", dir);
    DIR *d = opendir(p);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strlen(de->d_name) != 20 || strcmp(de->d_name + 16, ".seg") != 0) continue;
        assert_true(n < max);
        out[n++] = strtoull(de->d_name, NULL, 16);
    }
    closedir(d);
    qsort(out, n, sizeof *out, u64_cmp);
    return n;
}

static void seg_file(const char *dir, uint64_t start, char *out, size_t n) {
    snprintf(out, n, "%s/wal/%016" PRIx64 ".seg", dir, start);
}

static size_t count_files(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t n = 0, sl = strlen(suffix);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l >= sl && strcmp(de->d_name + l - sl, suffix) == 0) n++;
    }
    closedir(d);
    return n;
}

/* ---- records ------------------------------------------------------------------------ */

/* Deterministic payload of record `lsn`: 0..299 bytes. */
static size_t payload_for(uint64_t lsn, unsigned char *buf) {
    size_t len = (size_t)((lsn * 37) % 300);
    for (size_t j = 0; j < len; j++) buf[j] = (unsigned char)(lsn * 131 + j * 7 + (lsn >> 8));
    return len;
}
static uint8_t kind_for(uint64_t lsn) { return (uint8_t)(1 + lsn % 5); }

typedef struct rec {
    uint64_t lsn;
    uint8_t kind;
    size_t len;
    unsigned char *data;
} rec;

typedef struct recs {
    rec *v;
    size_t n, cap;
    int fail_at; /* callback returns -1 at this LSN (0 = never) */
} recs;

static int collect(void *ctx, uint8_t kind, uint64_t lsn, const void *p, size_t len, bv_err *err) {
    recs *r = ctx;
    if (r->fail_at && lsn == (uint64_t)r->fail_at) {
        bv_err_set(err, "engine_says_no", "", "cannot apply %" PRIu64, lsn);
        return -1;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
    }
    rec *x = &r->v[r->n++];
    x->lsn = lsn;
    x->kind = kind;
    x->len = len;
    x->data = malloc(len ? len : 1);
    memcpy(x->data, p, len);
    return 0;
}

static void recs_free(recs *r) {
    for (size_t i = 0; i < r->n; i++) free(r->v[i].data);
    free(r->v);
    memset(r, 0, sizeof *r);
}

/* Every replayed record is the one written with that LSN, in strictly increasing order. */
static void check_recs_genuine(const recs *r) {
    unsigned char buf[300];
    uint64_t prev = 0;
    for (size_t i = 0; i < r->n; i++) {
        const rec *x = &r->v[i];
        assert_true(x->lsn > prev);
        prev = x->lsn;
        size_t len = payload_for(x->lsn, buf);
        assert_int_equal(x->len, len);
        assert_int_equal(x->kind, kind_for(x->lsn));
        assert_memory_equal(x->data, buf, len);
    }
}

static bool recs_has(const recs *r, uint64_t lsn) {
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->v[mid].lsn == lsn) return true;
        if (r->v[mid].lsn < lsn) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

/* ---- WAL helpers -------------------------------------------------------------------- */

static wal_options opts(const char *dir) {
    wal_options o = {0};
    o.dir = dir;
    o.tick_ms = 1;
    o.retry_ms = 10;
    return o;
}

/* For tests about file contents, not durability: real writes, no fsync. */
static ssize_t nosync_io(void *ctx, wal_io_op op, int fd, const void *buf, size_t len, off_t off) {
    (void)ctx;
    if (op == WAL_IO_UNLINK) return unlink(buf);
    return op == WAL_IO_WRITE ? pwrite(fd, buf, len, off) : 0;
}

static wal_options fast_opts(const char *dir) {
    wal_options o = opts(dir);
    o.io_hook = nosync_io;
    return o;
}

static wal *open_recover(const wal_options *o, uint64_t from, recs *out, wal_recovery_stats *st) {
    wal *w = NULL;
    bv_err e = {0};
    if (wal_open(o, &w, &e) != 0) fail_msg("wal_open: %s: %s", e.code, e.reason);
    if (wal_recover(w, from, out ? collect : NULL, out, st, &e) != 0) fail_msg("wal_recover: %s: %s", e.code, e.reason);
    return w;
}

static uint64_t append_gen(wal *w, uint64_t expect_lsn) {
    unsigned char buf[300];
    size_t len = payload_for(expect_lsn, buf);
    uint64_t lsn = 0;
    bv_err e = {0};
    if (wal_append(w, kind_for(expect_lsn), buf, len, &lsn, &e) != 0) fail_msg("wal_append: %s: %s", e.code, e.reason);
    assert_int_equal(lsn, expect_lsn);
    return lsn;
}

static void wait_ok(wal *w, uint64_t lsn) {
    bv_err e = {0};
    int rc = wal_wait_durable(w, lsn, 10000, &e);
    if (rc != WAL_OK) fail_msg("wal_wait_durable(%" PRIu64 ") = %d: %s: %s", lsn, rc, e.code, e.reason);
}

static void close_ok(wal *w) {
    bv_err e = {0};
    if (wal_close(w, &e) != 0) fail_msg("wal_close: %s: %s", e.code, e.reason);
}

/* Write records first..last, waiting for durability every `chunk` records (so rotation,
 * which happens after a batch, gets its chance). */
static void write_range(wal *w, uint64_t first, uint64_t last, unsigned chunk) {
    for (uint64_t l = first; l <= last; l++) {
        append_gen(w, l);
        if (chunk && (l - first + 1) % chunk == 0) wait_ok(w, l);
    }
    wait_ok(w, last);
}

/* Offsets of the records in a segment file we know to be intact. */
static size_t rec_offsets(const unsigned char *b, size_t len, size_t *off, size_t max) {
    size_t n = 0, pos = WAL_SEGMENT_HEADER_BYTES;
    while (pos + WAL_RECORD_HEADER_BYTES <= len) {
        uint32_t pl = (uint32_t)b[pos] | (uint32_t)b[pos + 1] << 8 | (uint32_t)b[pos + 2] << 16 |
                      (uint32_t)b[pos + 3] << 24;
        assert_true(n < max);
        off[n++] = pos;
        pos += WAL_RECORD_HEADER_BYTES + pl;
    }
    assert_int_equal(pos, len);
    off[n] = pos;
    return n;
}

/* A segment header as documented in wal.c (written independently here on purpose). */
static void forge_header(unsigned char h[64], uint32_t version, uint64_t start, uint64_t prev) {
    memset(h, 0, 64);
    memcpy(h, "BEAVAWAL", 8);
    for (int i = 0; i < 4; i++) h[8 + i] = (unsigned char)(version >> (8 * i));
    for (int i = 0; i < 8; i++) h[16 + i] = (unsigned char)(start >> (8 * i));
    for (int i = 0; i < 8; i++) h[24 + i] = (unsigned char)(prev >> (8 * i));
    uint32_t c = crc32c(h, 60);
    for (int i = 0; i < 4; i++) h[60 + i] = (unsigned char)(c >> (8 * i));
}

/* ---- crc32c ------------------------------------------------------------------------- */

static void test_crc32c_vectors(void **state) {
    (void)state;
    unsigned char b[32];
    assert_int_equal(crc32c("123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c_sw_extend(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c("", 0), 0);
    /* RFC 3720 (iSCSI) appendix B.4 */
    memset(b, 0, 32);
    assert_int_equal(crc32c(b, 32), 0x8A9136AAu);
    memset(b, 0xff, 32);
    assert_int_equal(crc32c(b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++) b[i] = (unsigned char)i;
    assert_int_equal(crc32c(b, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++) b[i] = (unsigned char)(31 - i);
    assert_int_equal(crc32c(b, 32), 0x113FDB5Cu);

    /* hardware and table paths agree at every alignment and length; results chain */
    unsigned char big[4096 + 16];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof big; i++) {
        x = x * 1103515245u + 12345u;
        big[i] = (unsigned char)(x >> 16);
    }
    for (size_t off = 0; off < 16; off++) {
        for (size_t len = 0; len <= 4096; len += (len < 64 ? 1 : 61)) {
            uint32_t a = crc32c(big + off, len);
            assert_int_equal(a, crc32c_sw_extend(0, big + off, len));
            size_t cut = len / 3;
            assert_int_equal(a, crc32c_extend(crc32c(big + off, cut), big + off + cut, len - cut));
        }
    }
}

/* ---- round trip and rotation -------------------------------------------------------- */

static void test_roundtrip_rotation(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    o.segment_bytes = 4096;
    wal_recovery_stats st;
    wal *w = open_recover(&o, 0, NULL, &st);
    assert_int_equal(st.next_lsn, 1);
    assert_int_equal(st.records, 0);
    write_range(w, 1, 2000, 25);
    wal_stats ws;
    wal_get_stats(w, &ws);
    assert_int_equal(ws.appended_records, 2000);
    assert_true(ws.rotations >= 10);
    assert_int_equal(ws.durable_lsn, 2000);
    assert_int_equal(wal_durable_lsn(w), 2000);
    assert_int_equal(wal_lsn_state(w, 1999), WAL_LSN_DURABLE);
    close_ok(w);

    uint64_t segs[512];
    size_t ns = list_segs(f->dir, segs, 512);
    assert_true(ns >= 10);
    assert_int_equal(segs[0], 1);

    recs r = {0};
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 2000);
    check_recs_genuine(&r);
    assert_int_equal(r.v[0].lsn, 1);
    assert_int_equal(r.v[1999].lsn, 2000);
    assert_int_equal(st.records, 2000);
    assert_int_equal(st.replayed, 2000);
    assert_int_equal(st.first_lsn, 1);
    assert_int_equal(st.last_lsn, 2000);
    assert_int_equal(st.segments, ns);
    assert_int_equal(st.truncated_bytes + st.quarantined_regions + st.lost_lsns + st.void_lsns + st.void_records, 0);
    assert_int_equal(st.next_lsn, 2001);
    recs_free(&r);
    /* LSNs continue across restarts */
    write_range(w, 2001, 2100, 0);
    close_ok(w);

    /* replay from a snapshot LSN: only later records, still all scanned */
    w = open_recover(&o, 1500, &r, &st);
    assert_int_equal(r.n, 600);
    assert_int_equal(r.v[0].lsn, 1501);
    assert_int_equal(st.records, 2100);
    assert_int_equal(st.replayed, 600);
    check_recs_genuine(&r);
    recs_free(&r);
    close_ok(w);
    assert_int_equal(count_files(f->dir, "quarantine"), 0);
}

static void test_payload_limits(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    bv_err e = {0};
    uint64_t lsn = 0;
    unsigned char *big = calloc(1, WAL_MAX_PAYLOAD + 1);
    for (size_t i = 0; i < WAL_MAX_PAYLOAD; i += 4096) big[i] = (unsigned char)i;
    assert_int_equal(wal_append(w, 1, big, WAL_MAX_PAYLOAD + 1, &lsn, &e), -1);
    assert_string_equal(e.code, "invalid_argument");
    assert_non_null(strstr(e.reason, "exceeds"));
    assert_int_equal(wal_append(w, 0, "x", 1, &lsn, &e), -1);
    assert_string_equal(e.code, "invalid_argument");
    assert_int_equal(wal_append(w, 1, NULL, 5, &lsn, &e), -1);
    assert_int_equal(wal_append(w, 200, big, WAL_MAX_PAYLOAD, &lsn, &e), 0);
    assert_int_equal(lsn, 1);
    assert_int_equal(wal_append(w, 7, NULL, 0, &lsn, &e), 0); /* empty payload is fine */
    assert_int_equal(lsn, 2);
    wait_ok(w, 2);
    /* waits on LSNs never handed out */
    assert_int_equal(wal_wait_durable(w, 0, 10, &e), WAL_FAILED);
    assert_string_equal(e.code, "invalid_argument");
    assert_int_equal(wal_wait_durable(w, 3, 10, &e), WAL_FAILED);
    assert_int_equal(wal_lsn_state(w, 3), WAL_LSN_FAILED);
    close_ok(w);

    recs r = {0};
    w = open_recover(&o, 0, &r, NULL);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.v[0].kind, 200);
    assert_int_equal(r.v[0].len, WAL_MAX_PAYLOAD);
    assert_memory_equal(r.v[0].data, big, WAL_MAX_PAYLOAD);
    assert_int_equal(r.v[1].kind, 7);
    assert_int_equal(r.v[1].len, 0);
    recs_free(&r);
    close_ok(w);

    /* A record on disk claiming more than the limit is never trusted: with nothing valid
     * after it, it is a torn tail. */
    uint64_t segs[8];
    assert_int_equal(list_segs(f->dir, segs, 8), 2);
    char p[256];
    seg_file(f->dir, segs[1], p, sizeof p);
    unsigned char rec[17] = {0};
    uint32_t len = WAL_MAX_PAYLOAD + 1;
    for (int i = 0; i < 4; i++) rec[i] = (unsigned char)(len >> (8 * i));
    rec[8] = 3;
    rec[16] = 1;
    int fd = open(p, O_WRONLY | O_APPEND);
    assert_int_equal(write(fd, rec, sizeof rec), (ssize_t)sizeof rec);
    close(fd);
    wal_recovery_stats st;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 2);
    assert_int_equal(st.truncated_bytes, 17);
    recs_free(&r);
    close_ok(w);
    free(big);
}

/* ---- group commit --------------------------------------------------------------------- */

#define GC_THREADS 8
#define GC_PER_THREAD 400

typedef struct gc_arg {
    wal *w;
    int id;
    uint64_t lsns[GC_PER_THREAD];
    int failures;
} gc_arg;

static void gc_payload(int id, int seq, unsigned char *b, size_t *len) {
    *len = (size_t)(8 + (id * 7 + seq) % 64);
    memset(b, 0, *len);
    memcpy(b, &id, sizeof id);
    memcpy(b + 4, &seq, sizeof seq);
    for (size_t i = 8; i < *len; i++) b[i] = (unsigned char)(id ^ seq ^ (int)i);
}

static void *gc_thread(void *p) {
    gc_arg *a = p;
    unsigned char b[80];
    size_t len;
    for (int s = 0; s < GC_PER_THREAD; s++) {
        gc_payload(a->id, s, b, &len);
        bv_err e;
        if (wal_append(a->w, WAL_KIND_EVENT, b, len, &a->lsns[s], &e) != 0 ||
            wal_wait_durable(a->w, a->lsns[s], 10000, &e) != WAL_OK)
            a->failures++;
        else if (wal_lsn_state(a->w, a->lsns[s]) != WAL_LSN_DURABLE)
            a->failures++;
    }
    return NULL;
}

static void notify_count(void *ctx) { atomic_fetch_add((atomic_int *)ctx, 1); }

static void test_group_commit(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    o.tick_ms = 2;
    o.segment_bytes = 64 * 1024;
    atomic_int notified = 0;
    o.notify = notify_count;
    o.notify_ctx = &notified;
    wal *w = open_recover(&o, 0, NULL, NULL);
    pthread_t th[GC_THREADS];
    gc_arg *args = calloc(GC_THREADS, sizeof *args);
    for (int i = 0; i < GC_THREADS; i++) {
        args[i].w = w;
        args[i].id = i;
        pthread_create(&th[i], NULL, gc_thread, &args[i]);
    }
    for (int i = 0; i < GC_THREADS; i++) pthread_join(th[i], NULL);
    wal_stats ws;
    wal_get_stats(w, &ws);
    const uint64_t total = GC_THREADS * GC_PER_THREAD;
    assert_int_equal(ws.appended_records, total);
    /* many waiters share one fsync */
    assert_true(ws.batches < total / 2);
    assert_true(atomic_load(&notified) > 0);
    close_ok(w);

    recs r = {0};
    wal_recovery_stats st;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, total);
    for (size_t i = 0; i < r.n; i++) assert_int_equal(r.v[i].lsn, i + 1);
    for (int t = 0; t < GC_THREADS; t++) {
        assert_int_equal(args[t].failures, 0);
        for (int s = 0; s < GC_PER_THREAD; s++) {
            uint64_t l = args[t].lsns[s];
            assert_true(l >= 1 && l <= total);
            unsigned char b[80];
            size_t len;
            gc_payload(t, s, b, &len);
            assert_int_equal(r.v[l - 1].len, len);
            assert_memory_equal(r.v[l - 1].data, b, len);
        }
    }
    recs_free(&r);
    close_ok(w);
    free(args);
}

/* ---- torn tails ------------------------------------------------------------------------ */

static void test_torn_tail_random(void **state) {
    fx *f = *state;
    srand(4242);
    for (int it = 0; it < 24; it++) {
        char dir[128];
        snprintf(dir, sizeof dir, "%s/it%d", f->dir, it);
        wal_options o = fast_opts(dir);
        wal *w = open_recover(&o, 0, NULL, NULL);
        write_range(w, 1, 120, 0);
        close_ok(w);

        char p[256];
        seg_file(dir, 1, p, sizeof p);
        size_t len;
        unsigned char *orig = read_file(p, &len);
        size_t off[200];
        size_t n = rec_offsets(orig, len, off, 199);
        assert_int_equal(n, 120);
        /* cut anywhere after the header; every third iteration also adds garbage that
         * is not a valid record (a torn write of a partially flushed page) */
        size_t cut = 64 + (size_t)rand() % (len - 64);
        assert_int_equal(truncate(p, (off_t)cut), 0);
        size_t garbage = it % 3 == 0 ? 1 + (size_t)rand() % 40 : 0;
        if (garbage) {
            unsigned char g[40];
            for (size_t i = 0; i < garbage; i++) g[i] = (unsigned char)rand();
            int fd = open(p, O_WRONLY | O_APPEND);
            assert_int_equal(write(fd, g, garbage), (ssize_t)garbage);
            close(fd);
        }
        size_t intact = 0; /* records whose last byte is before the cut */
        while (intact < n && off[intact + 1] <= cut) intact++;
        size_t good_end = off[intact];

        recs r = {0};
        wal_recovery_stats st;
        w = open_recover(&o, 0, &r, &st);
        assert_int_equal(r.n, intact);
        check_recs_genuine(&r);
        if (intact) assert_int_equal(r.v[intact - 1].lsn, intact);
        assert_int_equal(st.truncated_bytes, cut + garbage - good_end);
        assert_int_equal(st.quarantined_regions + st.lost_lsns, 0);
        assert_int_equal(file_size(p), (long)good_end);
        assert_int_equal(st.next_lsn, intact + 1);
        char q[256], qd[256];
        snprintf(q, sizeof q, "%s/quarantine/%016x-%016zx.torn", dir, 1, good_end);
        snprintf(qd, sizeof qd, "%s/quarantine", dir);
        if (cut + garbage > good_end) {
            size_t ql;
            unsigned char *qb = read_file(q, &ql);
            assert_int_equal(ql, cut + garbage - good_end);
            assert_memory_equal(qb, orig + good_end, cut - good_end);
            free(qb);
        } else {
            assert_false(exists(q));
        }
        recs_free(&r);
        /* new records go after the intact prefix, and a second recovery finds nothing */
        write_range(w, intact + 1, intact + 5, 0);
        close_ok(w);
        w = open_recover(&o, 0, &r, &st);
        assert_int_equal(r.n, intact + 5);
        assert_int_equal(st.truncated_bytes + st.quarantined_regions + st.lost_lsns, 0);
        recs_free(&r);
        close_ok(w);
        free(orig);
        (void)qd;
    }
}

/* A newest segment torn inside its own header (crash while creating it). */
static void test_torn_segment_header(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    close_ok(w);
    char p[256];
    seg_file(f->dir, 11, p, sizeof p);
    write_file(p, "BEAVAW", 6);
    recs r = {0};
    wal_recovery_stats st;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 10);
    assert_int_equal(st.torn_segments, 1);
    char q[256];
    snprintf(q, sizeof q, "%s/quarantine/%016x-%016x.header", f->dir, 11, 0);
    assert_int_equal(file_size(q), 6);
    /* the fresh segment 11 replaced it */
    assert_int_equal(file_size(p), 64);
    recs_free(&r);
    close_ok(w);

    /* an empty file is the same story */
    seg_file(f->dir, 50, p, sizeof p);
    write_file(p, "", 0);
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(st.torn_segments, 1);
    assert_false(exists(p));
    assert_int_equal(st.next_lsn, 11);
    recs_free(&r);
    close_ok(w);
}

/* ---- corruption in the middle ------------------------------------------------------------ */

static void flip(const char *path, size_t off, unsigned char mask) {
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
    c ^= mask;
    assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
    close(fd);
}

static void test_middle_bitflip(void **state) {
    fx *f = *state;
    /* byte to damage within the record: length, CRC, LSN, kind, payload */
    const size_t where[] = {0, 2, 5, 9, 16, 17, 30};
    for (size_t k = 0; k < sizeof where / sizeof *where; k++) {
        char dir[128];
        snprintf(dir, sizeof dir, "%s/k%zu", f->dir, k);
        wal_options o = fast_opts(dir);
        wal *w = open_recover(&o, 0, NULL, NULL);
        write_range(w, 1, 100, 0);
        close_ok(w);
        char p[256];
        seg_file(dir, 1, p, sizeof p);
        size_t len;
        unsigned char *orig = read_file(p, &len);
        size_t off[200];
        assert_int_equal(rec_offsets(orig, len, off, 199), 100);
        /* record 40 (index 39) has a payload of (40*37)%300 = 280 bytes */
        size_t at = off[39] + where[k];
        flip(p, at, 0x10);

        recs r = {0};
        wal_recovery_stats st;
        w = open_recover(&o, 0, &r, &st);
        assert_int_equal(r.n, 99);
        check_recs_genuine(&r);
        assert_false(recs_has(&r, 40));
        assert_true(recs_has(&r, 39) && recs_has(&r, 41) && recs_has(&r, 100));
        assert_int_equal(st.quarantined_regions, 1);
        assert_int_equal(st.quarantined_bytes, off[40] - off[39]);
        assert_int_equal(st.lost_lsns, 1);
        assert_int_equal(st.truncated_bytes, 0);
        assert_int_equal(file_size(p), (long)len); /* the segment itself is not rewritten */
        char q[256];
        snprintf(q, sizeof q, "%s/quarantine/%016x-%016zx.corrupt", dir, 1, off[39]);
        size_t ql;
        unsigned char *qb = read_file(q, &ql);
        assert_int_equal(ql, off[40] - off[39]);
        orig[at] ^= 0x10;
        assert_memory_equal(qb, orig + off[39], ql);
        free(qb);
        recs_free(&r);
        close_ok(w);
        /* the next boot sees the same damage and quarantines the same span (no new file) */
        w = open_recover(&o, 0, &r, &st);
        assert_int_equal(r.n, 99);
        assert_int_equal(st.quarantined_regions, 1);
        snprintf(q, sizeof q, "%s/quarantine", dir);
        assert_int_equal(count_files(q, ".corrupt"), 1);
        recs_free(&r);
        close_ok(w);
        free(orig);
    }
}

/* Damage in the last record of the newest segment is a torn tail, not a skipped record;
 * damage in the last record of an older segment is quarantined and counted as lost. */
static void test_bitflip_segment_ends(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 50, 0);
    close_ok(w);
    w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 51, 100, 0);
    close_ok(w);
    uint64_t segs[8];
    assert_int_equal(list_segs(f->dir, segs, 8), 2);
    assert_int_equal(segs[1], 51);

    char p1[256], p2[256];
    seg_file(f->dir, 1, p1, sizeof p1);
    seg_file(f->dir, 51, p2, sizeof p2);
    size_t l1, l2, off1[80], off2[80];
    unsigned char *b1 = read_file(p1, &l1), *b2 = read_file(p2, &l2);
    rec_offsets(b1, l1, off1, 79);
    rec_offsets(b2, l2, off2, 79);
    flip(p1, off1[49] + 20, 0x01); /* record 50, last of the older segment */
    flip(p2, off2[49] + 20, 0x01); /* record 100, last of the newest */

    recs r = {0};
    wal_recovery_stats st;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 98);
    check_recs_genuine(&r);
    assert_false(recs_has(&r, 50));
    assert_false(recs_has(&r, 100));
    assert_int_equal(st.lost_lsns, 1); /* 50: the header of segment 51 says it was durable */
    assert_int_equal(st.quarantined_regions, 1);
    assert_int_equal(st.truncated_bytes, l2 - off2[49]);
    assert_int_equal(file_size(p1), (long)l1);
    assert_int_equal(file_size(p2), (long)off2[49]);
    assert_int_equal(st.next_lsn, 100);
    recs_free(&r);
    close_ok(w);
    free(b1);
    free(b2);
}

/* Damage everywhere at random: recovery never fails, replays only genuine records, and
 * replays every record whose bytes were left alone. */
static void test_random_damage(void **state) {
    fx *f = *state;
    srand(777);
    for (int it = 0; it < 30; it++) {
        char dir[128];
        snprintf(dir, sizeof dir, "%s/r%d", f->dir, it);
        wal_options o = fast_opts(dir);
        o.segment_bytes = 6000;
        wal *w = open_recover(&o, 0, NULL, NULL);
        write_range(w, 1, 300, 20);
        close_ok(w);
        uint64_t segs[64];
        size_t ns = list_segs(dir, segs, 64);
        assert_true(ns >= 3);

        /* per segment: record offsets, and the damaged byte range */
        typedef struct { size_t len, off[400], nrec; size_t dmg_lo, dmg_hi; size_t cut; } sinfo;
        sinfo *si = calloc(ns, sizeof *si);
        for (size_t s = 0; s < ns; s++) {
            char p[256];
            seg_file(dir, segs[s], p, sizeof p);
            unsigned char *b = read_file(p, &si[s].len);
            si[s].nrec = rec_offsets(b, si[s].len, si[s].off, 399);
            si[s].dmg_lo = SIZE_MAX;
            si[s].dmg_hi = 0;
            si[s].cut = si[s].len;
            free(b);
        }
        int nops = 1 + rand() % 4;
        for (int op = 0; op < nops; op++) {
            size_t s = (size_t)rand() % ns;
            if (si[s].len <= 64) continue;
            char p[256];
            seg_file(dir, segs[s], p, sizeof p);
            int kind = rand() % 3;
            if (kind == 2 && s + 1 == ns) {
                size_t cut = 64 + (size_t)rand() % (si[s].cut - 64 + 1);
                if (cut < si[s].cut) {
                    assert_int_equal(truncate(p, (off_t)cut), 0);
                    si[s].cut = cut;
                }
            } else if (si[s].cut > 64) {
                size_t at = 64 + (size_t)rand() % (si[s].cut - 64);
                size_t span = kind == 1 ? 1 + (size_t)rand() % 50 : 1;
                if (at + span > si[s].cut) span = si[s].cut - at;
                for (size_t i = 0; i < span; i++) flip(p, at + i, (unsigned char)(1 + rand() % 255));
                if (at < si[s].dmg_lo) si[s].dmg_lo = at;
                if (at + span > si[s].dmg_hi) si[s].dmg_hi = at + span;
            }
        }

        recs r = {0};
        wal_recovery_stats st;
        w = open_recover(&o, 0, &r, &st);
        check_recs_genuine(&r);
        /* every untouched record of every segment is replayed */
        uint64_t lsn = 1;
        for (size_t s = 0; s < ns; s++) {
            for (size_t i = 0; i < si[s].nrec; i++, lsn++) {
                size_t a = si[s].off[i], b = si[s].off[i + 1];
                bool touched = b > si[s].cut || (a < si[s].dmg_hi && b > si[s].dmg_lo);
                if (!touched && !recs_has(&r, lsn))
                    fail_msg("iteration %d: intact record %" PRIu64 " (segment %zu) not replayed", it, lsn, s);
            }
        }
        assert_true(r.n + st.lost_lsns <= 300);
        recs_free(&r);
        close_ok(w);
        /* recovery is idempotent: nothing more to cut the second time */
        recs r2 = {0};
        wal_recovery_stats st2;
        w = open_recover(&o, 0, &r2, &st2);
        assert_int_equal(st2.truncated_bytes, 0);
        assert_int_equal(r2.n, st.records);
        recs_free(&r2);
        close_ok(w);
        free(si);
    }
}

/* ---- orphans, refusals, lock --------------------------------------------------------- */

static void test_orphan_reused(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    close_ok(w);
    /* open and close without appending: the new segment 11 is a header-only orphan, just
     * like a crash right after rotation */
    wal_recovery_stats st;
    w = open_recover(&o, 0, NULL, &st);
    assert_false(st.orphan_reused);
    close_ok(w);
    uint64_t segs[8];
    assert_int_equal(list_segs(f->dir, segs, 8), 2);
    assert_int_equal(segs[1], 11);
    char p[256];
    seg_file(f->dir, 11, p, sizeof p);
    assert_int_equal(file_size(p), 64);
    size_t hl;
    unsigned char *hdr_before = read_file(p, &hl);

    for (int i = 0; i < 3; i++) { /* repeated boots do not pile up segments */
        w = open_recover(&o, 0, NULL, &st);
        assert_true(st.orphan_reused);
        assert_int_equal(st.next_lsn, 11);
        close_ok(w);
        assert_int_equal(list_segs(f->dir, segs, 8), 2);
    }
    recs r = {0};
    w = open_recover(&o, 0, &r, &st);
    assert_true(st.orphan_reused);
    assert_int_equal(r.n, 10);
    append_gen(w, 11);
    wait_ok(w, 11);
    close_ok(w);
    recs_free(&r);
    size_t l2;
    unsigned char *after = read_file(p, &l2);
    assert_memory_equal(after, hdr_before, 64); /* header reused, not rewritten */
    free(after);
    free(hdr_before);
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 11);
    assert_int_equal(st.lost_lsns + st.void_lsns, 0);
    recs_free(&r);
    close_ok(w);
}


static uint32_t file_crc(const char *path, size_t *len);

/* Set a segment file's header version and fix its CRC. */
static void set_seg_version(const char *path, uint32_t version) {
    size_t len;
    unsigned char *b = read_file(path, &len);
    assert_true(len >= 64);
    for (int i = 0; i < 4; i++) b[8 + i] = (unsigned char)(version >> (8 * i));
    uint32_t c = crc32c(b, 60);
    for (int i = 0; i < 4; i++) b[60 + i] = (unsigned char)(c >> (8 * i));
    write_file(path, b, len);
    free(b);
}

static uint32_t seg_version(const char *path) {
    size_t len;
    unsigned char *b = read_file(path, &len);
    assert_true(len >= 64);
    uint32_t v = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
    free(b);
    return v;
}

/* Segments of the oldest format still read are replayed as they are and never appended
 * to: new records go into a segment of the current version, and an empty segment of the
 * older format at the next LSN gets a current header instead of being reused. */
static void test_older_format_read(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    close_ok(w);
    char p1[256], p11[256];
    seg_file(f->dir, 1, p1, sizeof p1);
    seg_file(f->dir, 11, p11, sizeof p11);
    assert_int_equal(seg_version(p1), WAL_FORMAT_VERSION);
    set_seg_version(p1, WAL_FORMAT_OLDEST);
    size_t l0;
    uint32_t c0 = file_crc(p1, &l0);
    /* the orphan left at 11 is of the older format too */
    unsigned char h[64];
    forge_header(h, WAL_FORMAT_OLDEST, 11, 10);
    write_file(p11, h, 64);
    recs r = {0};
    wal_recovery_stats st;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 10);
    check_recs_genuine(&r);
    assert_false(st.orphan_reused);
    assert_int_equal(st.next_lsn, 11);
    assert_int_equal(st.lost_lsns + st.void_lsns, 0);
    append_gen(w, 11);
    wait_ok(w, 11);
    close_ok(w);
    recs_free(&r);
    uint64_t segs[8];
    assert_int_equal(list_segs(f->dir, segs, 8), 2);
    assert_int_equal(seg_version(p11), WAL_FORMAT_VERSION);   /* rewritten, then appended to */
    size_t l1;
    assert_int_equal(file_crc(p1, &l1), c0);                  /* the older segment untouched */
    assert_int_equal(l1, l0);
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 11);
    check_recs_genuine(&r);
    assert_int_equal(st.lost_lsns + st.void_lsns, 0);
    recs_free(&r);
    close_ok(w);
}

/* An orphan below the LSN floor (the snapshot covers LSNs it would reuse) is replaced. */
static void test_orphan_below_floor(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    close_ok(w);
    w = open_recover(&o, 0, NULL, NULL); /* leaves orphan 11 */
    close_ok(w);
    wal_recovery_stats st;
    w = open_recover(&o, 20, NULL, &st);
    assert_false(st.orphan_reused);
    assert_int_equal(st.next_lsn, 21);
    append_gen(w, 21);
    wait_ok(w, 21);
    close_ok(w);
    uint64_t segs[8];
    assert_int_equal(list_segs(f->dir, segs, 8), 2);
    assert_int_equal(segs[1], 21);
    recs r = {0};
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 11);
    assert_int_equal(st.void_lsns, 10); /* 11..20 skipped by the floor, not lost */
    assert_int_equal(st.lost_lsns, 0);
    recs_free(&r);
    close_ok(w);
}

/* Records an older segment still holds beyond the next header's prev LSN were reported
 * failed at run time: they are skipped, never replayed. */
static void test_void_records_skipped(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    close_ok(w);
    /* forge: the next segment starts at 12 and says only LSNs <= 8 were durable */
    unsigned char h[64];
    forge_header(h, WAL_FORMAT_VERSION, 12, 8);
    char p[256];
    seg_file(f->dir, 12, p, sizeof p);
    write_file(p, h, 64);
    recs r = {0};
    wal_recovery_stats st;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 8);
    assert_int_equal(st.void_records, 2);
    assert_int_equal(st.void_lsns, 3); /* 9, 10, 11 */
    assert_int_equal(st.lost_lsns, 0);
    assert_true(st.orphan_reused);
    assert_int_equal(st.next_lsn, 12);
    snprintf(p, sizeof p, "%s/quarantine", f->dir);
    assert_int_equal(count_files(p, ".void"), 2);
    recs_free(&r);
    close_ok(w);
}

static uint32_t file_crc(const char *path, size_t *len) {
    unsigned char *b = read_file(path, len);
    uint32_t c = crc32c(b, *len);
    free(b);
    return c;
}

static void expect_refused(const char *dir, const char *path, const char *what) {
    size_t l0, l1;
    uint32_t c0 = file_crc(path, &l0);
    struct stat s0, s1;
    stat(path, &s0);
    wal_options o = opts(dir);
    wal *w = NULL;
    bv_err e = {0};
    assert_int_equal(wal_open(&o, &w, &e), -1);
    assert_null(w);
    assert_string_equal(e.code, "wal_refused");
    assert_non_null(strstr(e.reason, path));
    if (!strstr(e.reason, what)) fail_msg("reason '%s' lacks '%s'", e.reason, what);
    uint32_t c1 = file_crc(path, &l1);
    stat(path, &s1);
    assert_int_equal(l0, l1);
    assert_int_equal(c0, c1);
    assert_true(s0.st_mtim.tv_sec == s1.st_mtim.tv_sec && s0.st_mtim.tv_nsec == s1.st_mtim.tv_nsec);
    /* the lock was released: a plain open of a clean dir still works afterwards */
}

static void test_bad_magic_and_version_refused(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    close_ok(w);
    char p[256];

    /* a foreign file as the newest segment */
    seg_file(f->dir, 100, p, sizeof p);
    const char *junk = "NOT A WAL SEGMENT, JUST SOMEBODY'S FILE, PLEASE DO NOT OVERWRITE ME ............";
    write_file(p, junk, strlen(junk));
    expect_refused(f->dir, p, "bad magic");
    unlink(p);

    /* short foreign file */
    write_file(p, "hello", 5);
    expect_refused(f->dir, p, "bad magic");
    unlink(p);

    /* a newer format version (valid CRC) */
    unsigned char h[64 + 40];
    forge_header(h, WAL_FORMAT_VERSION + 1, 100, 99);
    memset(h + 64, 0xAB, 40);
    write_file(p, h, sizeof h);
    char newer[64];
    snprintf(newer, sizeof newer, "newer WAL format version %d", WAL_FORMAT_VERSION + 1);
    expect_refused(f->dir, p, newer);
    unlink(p);

    /* header-only with a newer version: still refused, never reused as an orphan */
    write_file(p, h, 64);
    expect_refused(f->dir, p, "newer");
    unlink(p);

    /* a version before the oldest read (valid CRC) */
    forge_header(h, 0, 100, 99);
    write_file(p, h, 64);
    expect_refused(f->dir, p, "unsupported WAL format version 0");
    unlink(p);

    /* header CRC broken */
    forge_header(h, 1, 100, 99);
    h[30] ^= 1;
    write_file(p, h, 64);
    expect_refused(f->dir, p, "CRC");
    unlink(p);

    /* name and header disagree */
    forge_header(h, 1, 101, 99);
    write_file(p, h, 64);
    expect_refused(f->dir, p, "does not match");
    unlink(p);

    /* older segment damaged in its header */
    seg_file(f->dir, 1, p, sizeof p);
    flip(p, 3, 0x20);
    expect_refused(f->dir, p, "bad magic");
    flip(p, 3, 0x20);

    recs r = {0};
    w = open_recover(&o, 0, &r, NULL);
    assert_int_equal(r.n, 10);
    recs_free(&r);
    close_ok(w);
}

static void test_lock_second_open(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    wal *w2 = NULL;
    bv_err e = {0};
    assert_int_equal(wal_open(&o, &w2, &e), -1);
    assert_null(w2);
    assert_string_equal(e.code, "wal_locked");
    char lock[128], pid[64];
    snprintf(lock, sizeof lock, "%s/LOCK", f->dir);
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    assert_non_null(strstr(e.reason, lock));
    assert_non_null(strstr(e.reason, pid));
    close_ok(w);
    /* released on close */
    w = open_recover(&o, 0, NULL, NULL);
    close_ok(w);

    /* held by another process: its PID is named */
    int to_parent[2], to_child[2];
    assert_int_equal(pipe(to_parent), 0);
    assert_int_equal(pipe(to_child), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        wal *cw = NULL;
        bv_err ce;
        char c = wal_open(&o, &cw, &ce) == 0 ? 'y' : 'n';
        if (write(to_parent[1], &c, 1) != 1) _exit(2);
        if (read(to_child[0], &c, 1) != 1) _exit(2);
        wal_close(cw, &ce);
        _exit(0);
    }
    char c;
    assert_int_equal(read(to_parent[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    assert_int_equal(wal_open(&o, &w2, &e), -1);
    assert_string_equal(e.code, "wal_locked");
    snprintf(pid, sizeof pid, "pid %ld", (long)child);
    assert_non_null(strstr(e.reason, pid));
    assert_non_null(strstr(e.reason, lock));
    assert_int_equal(write(to_child[1], "x", 1), 1);
    int status;
    waitpid(child, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(to_parent[0]);
    close(to_parent[1]);
    close(to_child[0]);
    close(to_child[1]);
    w = open_recover(&o, 0, NULL, NULL);
    close_ok(w);
}

static void test_replay_callback_failure(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 20, 0);
    close_ok(w);
    recs r = {0};
    r.fail_at = 7;
    wal *w2 = NULL;
    bv_err e = {0};
    assert_int_equal(wal_open(&o, &w2, &e), 0);
    assert_int_equal(wal_recover(w2, 0, collect, &r, NULL, &e), -1);
    assert_string_equal(e.code, "engine_says_no");
    assert_int_equal(r.n, 6);
    uint64_t lsn;
    assert_int_equal(wal_append(w2, 1, "x", 1, &lsn, &e), -1); /* unusable after a failed recovery */
    assert_int_equal(wal_close(w2, &e), 0);
    recs_free(&r);
}

/* ---- injected I/O failures --------------------------------------------------------------- */

typedef struct hook {
    atomic_int fail_write;   /* errno to fail writes with, 0 = pass */
    atomic_int fail_sync;    /* errno to fail syncs with */
    atomic_int sync_budget;  /* <0: fail every sync; >0: fail only this many */
    atomic_int partial;      /* write half the bytes before failing */
    atomic_int block;        /* writes wait while set */
    atomic_int fail_header;  /* segment header writes (64 bytes at 0) are written, then fail */
    atomic_int fail_unlink;  /* removing a half-created segment fails */
    atomic_int blocked;      /* a write is waiting */
    atomic_int writes, syncs;
} hook;

static ssize_t hook_io(void *ctx, wal_io_op op, int fd, const void *buf, size_t len, off_t off) {
    hook *h = ctx;
    if (op == WAL_IO_UNLINK) {
        if (atomic_load(&h->fail_unlink)) {
            errno = EIO;
            return -1;
        }
        return unlink(buf);
    }
    if (op == WAL_IO_WRITE && off == 0 && len == 64 && atomic_load(&h->fail_header)) {
        if (pwrite(fd, buf, len, off) != (ssize_t)len) return -1;
        errno = EIO;
        return -1;
    }
    if (op == WAL_IO_WRITE) {
        atomic_fetch_add(&h->writes, 1);
        while (atomic_load(&h->block)) {
            atomic_store(&h->blocked, 1);
            usleep(1000);
        }
        atomic_store(&h->blocked, 0);
        int e = atomic_load(&h->fail_write);
        if (e) {
            if (atomic_load(&h->partial) && len > 1 && pwrite(fd, buf, len / 2, off) < 0) return -1;
            errno = e;
            return -1;
        }
        return pwrite(fd, buf, len, off);
    }
    atomic_fetch_add(&h->syncs, 1);
    int e = atomic_load(&h->fail_sync);
    if (e) {
        int b = atomic_load(&h->sync_budget);
        if (b < 0 || (b > 0 && atomic_fetch_sub(&h->sync_budget, 1) > 0)) {
            errno = e;
            return -1;
        }
    }
    return fsync(fd);
}

static void wait_healthy(wal *w) {
    for (int i = 0; i < 400; i++) {
        wal_stats st;
        wal_get_stats(w, &st);
        if (!st.degraded) return;
        usleep(10000);
    }
    fail_msg("WAL did not recover");
}

static void test_write_failure_enospc(void **state) {
    fx *f = *state;
    hook h = {0};
    wal_options o = opts(f->dir);
    o.io_hook = hook_io;
    o.io_ctx = &h;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    char p[256];
    seg_file(f->dir, 1, p, sizeof p);
    long durable_size = file_size(p);

    /* queue 11..15 while the writer is held inside a write, then let that write fail:
     * the batch in flight and everything queued behind it fail together */
    atomic_store(&h.block, 1);
    for (uint64_t l = 11; l <= 15; l++) append_gen(w, l);
    while (!atomic_load(&h.blocked)) usleep(1000);
    atomic_store(&h.partial, 1);
    atomic_store(&h.fail_write, ENOSPC);
    atomic_store(&h.block, 0);
    bv_err e = {0};
    assert_int_equal(wal_wait_durable(w, 15, 5000, &e), WAL_FAILED);
    assert_string_equal(e.code, "wal_unavailable");
    assert_non_null(strstr(e.reason, "No space"));
    assert_int_equal(wal_wait_durable(w, 11, 5000, &e), WAL_FAILED);
    assert_int_equal(wal_lsn_state(w, 13), WAL_LSN_FAILED);
    assert_int_equal(wal_lsn_state(w, 10), WAL_LSN_DURABLE);
    /* nothing half-logged: the partial write was cut back */
    assert_int_equal(file_size(p), durable_size);
    /* degraded: appends fail at once, nothing queued, no LSN used */
    uint64_t lsn = 0;
    assert_int_equal(wal_append(w, 1, "x", 1, &lsn, &e), -1);
    assert_string_equal(e.code, "wal_unavailable");
    usleep(50000); /* probes keep failing while the disk is full */
    assert_int_equal(wal_append(w, 1, "x", 1, &lsn, &e), -1);
    wal_stats ws;
    wal_get_stats(w, &ws);
    assert_true(ws.degraded);
    assert_int_equal(ws.failures, 1);
    assert_int_equal(ws.failed_records, 5);
    assert_non_null(strstr(ws.last_error, "No space"));

    /* space comes back */
    atomic_store(&h.fail_write, 0);
    wait_healthy(w);
    write_range(w, 16, 20, 0);
    assert_int_equal(wal_lsn_state(w, 12), WAL_LSN_FAILED);
    assert_int_equal(wal_lsn_state(w, 17), WAL_LSN_DURABLE);
    close_ok(w);

    recs r = {0};
    wal_recovery_stats st;
    o.io_hook = NULL;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 15);
    check_recs_genuine(&r);
    for (uint64_t l = 11; l <= 15; l++) assert_false(recs_has(&r, l));
    assert_true(recs_has(&r, 16) && recs_has(&r, 20));
    assert_int_equal(st.void_lsns, 5);
    assert_int_equal(st.lost_lsns + st.truncated_bytes + st.quarantined_regions, 0);
    recs_free(&r);
    close_ok(w);
}

static void test_fsync_failure_eio(void **state) {
    fx *f = *state;
    hook h = {0};
    wal_options o = opts(f->dir);
    o.io_hook = hook_io;
    o.io_ctx = &h;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    /* the data write succeeds, its fsync fails once: the records must not survive */
    atomic_store(&h.block, 1);
    for (uint64_t l = 11; l <= 13; l++) append_gen(w, l);
    while (!atomic_load(&h.blocked)) usleep(1000);
    atomic_store(&h.sync_budget, 1);
    atomic_store(&h.fail_sync, EIO);
    atomic_store(&h.block, 0);
    bv_err e = {0};
    assert_int_equal(wal_wait_durable(w, 13, 5000, &e), WAL_FAILED);
    assert_non_null(strstr(e.reason, "fdatasync"));
    wait_healthy(w); /* the budget is spent: settle and probe succeed */
    atomic_store(&h.fail_sync, 0);
    write_range(w, 14, 16, 0);
    close_ok(w);
    recs r = {0};
    wal_recovery_stats st;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 13);
    assert_false(recs_has(&r, 11));
    assert_true(recs_has(&r, 14));
    assert_int_equal(st.void_lsns, 3);
    recs_free(&r);
    close_ok(w);
}

/* When even undoing the failed write cannot be made durable, the outcome is not known:
 * waiters are not told "failed" until it is. */
static void test_failure_unsettled(void **state) {
    fx *f = *state;
    hook h = {0};
    wal_options o = opts(f->dir);
    o.io_hook = hook_io;
    o.io_ctx = &h;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 5, 0);
    atomic_store(&h.fail_write, EIO);
    atomic_store(&h.sync_budget, -1);
    atomic_store(&h.fail_sync, EIO);
    append_gen(w, 6);
    bv_err e = {0};
    assert_int_equal(wal_wait_durable(w, 6, 150, &e), WAL_TIMEOUT);
    assert_string_equal(e.code, "wal_sync_timeout");
    assert_int_equal(wal_lsn_state(w, 6), WAL_LSN_PENDING);
    uint64_t lsn;
    assert_int_equal(wal_append(w, 1, "x", 1, &lsn, &e), -1);
    atomic_store(&h.fail_sync, 0); /* truncation can now be made durable */
    assert_int_equal(wal_wait_durable(w, 6, 5000, &e), WAL_FAILED);
    atomic_store(&h.fail_write, 0);
    wait_healthy(w);
    write_range(w, 7, 8, 0);
    close_ok(w);
    recs r = {0};
    w = open_recover(&o, 0, &r, NULL);
    assert_int_equal(r.n, 7);
    assert_false(recs_has(&r, 6));
    recs_free(&r);
    close_ok(w);
}

static void test_failure_at_close(void **state) {
    fx *f = *state;
    hook h = {0};
    wal_options o = opts(f->dir);
    o.io_hook = hook_io;
    o.io_ctx = &h;
    o.tick_ms = 300; /* keep the records pending until close */
    wal *w = open_recover(&o, 0, NULL, NULL);
    append_gen(w, 1);
    wait_ok(w, 1);
    atomic_store(&h.fail_write, ENOSPC);
    append_gen(w, 2);
    append_gen(w, 3);
    bv_err e = {0};
    assert_int_equal(wal_close(w, &e), -1);
    assert_string_equal(e.code, "wal_unavailable");
    assert_non_null(strstr(e.reason, "final WAL flush failed"));
    recs r = {0};
    o.io_hook = NULL;
    w = open_recover(&o, 0, &r, NULL);
    assert_int_equal(r.n, 1);
    recs_free(&r);
    close_ok(w);
}

typedef struct bp_arg {
    wal *w;
    int n, ok, failed;
    char code[64];
} bp_arg;

static void *bp_thread(void *p) {
    bp_arg *a = p;
    size_t len = 1u << 20;
    unsigned char *b = malloc(len);
    memset(b, 0x5a, len);
    for (int i = 0; i < a->n; i++) {
        uint64_t lsn;
        bv_err e = {0};
        if (wal_append(a->w, 1, b, len, &lsn, &e) == 0) {
            a->ok++;
        } else {
            a->failed++;
            snprintf(a->code, sizeof a->code, "%s", e.code);
        }
    }
    free(b);
    return NULL;
}

static void test_backpressure(void **state) {
    fx *f = *state;
    for (int variant = 0; variant < 2; variant++) {
        char dir[128];
        snprintf(dir, sizeof dir, "%s/v%d", f->dir, variant);
        hook h = {0};
        wal_options o = opts(dir);
        o.io_hook = hook_io;
        o.io_ctx = &h;
        o.pending_cap = 1; /* raised to the minimum: two maximal records */
        wal *w = open_recover(&o, 0, NULL, NULL);
        atomic_store(&h.block, 1);
        bp_arg a = {.w = w, .n = 40};
        pthread_t t;
        pthread_create(&t, NULL, bp_thread, &a);
        /* both must be seen: the appender may hit the cap before the writer thread was
         * scheduled into its (blocked) write, on a loaded machine */
        wal_stats st = {0};
        bool writer_blocked = false;
        for (int i = 0; i < 3000 && (st.backpressure_waits == 0 || !writer_blocked); i++) {
            usleep(10000);
            wal_get_stats(w, &st);
            writer_blocked = atomic_load(&h.blocked);
        }
        /* release before asserting, so a failure cannot leave the thread stuck */
        if (variant == 1) atomic_store(&h.fail_write, ENOSPC);
        atomic_store(&h.block, 0);
        pthread_join(t, NULL);
        assert_true(st.backpressure_waits > 0);
        assert_true(writer_blocked);
        /* memory stayed bounded while blocked */
        assert_true(st.pending_bytes <= 2 * ((size_t)WAL_MAX_PAYLOAD + WAL_RECORD_HEADER_BYTES));
        if (variant == 0) {
            assert_int_equal(a.ok, 40);
            wait_ok(w, 40);
            close_ok(w);
        } else {
            assert_true(a.failed > 0); /* the blocked appender woke with the failure */
            assert_string_equal(a.code, "wal_unavailable");
            atomic_store(&h.fail_write, 0);
            close_ok(w);
        }
    }
}

/* A rotation whose new file can be neither completed nor removed leaves a stray segment
 * header beyond the current segment. Records must not be written past it into the current
 * segment (recovery would take them for void): the next batch fails instead, and once the
 * probe succeeds everything acknowledged is replayed. */
static void test_rotation_stray(void **state) {
    fx *f = *state;
    hook h = {0};
    wal_options o = opts(f->dir);
    o.io_hook = hook_io;
    o.io_ctx = &h;
    o.segment_bytes = 2048;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 5, 0); /* ~700 bytes */
    atomic_store(&h.fail_header, 1);
    atomic_store(&h.fail_unlink, 1);
    uint64_t l = 6, last_ok = 5;
    bv_err e = {0};
    /* fill past the segment size: rotation fails and leaves a stray; some later batch fails */
    for (; l < 100; l++) {
        unsigned char buf[300];
        size_t len = payload_for(l, buf);
        uint64_t lsn;
        if (wal_append(w, kind_for(l), buf, len, &lsn, &e) != 0) break;
        assert_int_equal(lsn, l);
        int rc = wal_wait_durable(w, lsn, 30000, &e);
        if (rc != WAL_OK) {
            assert_int_equal(rc, WAL_FAILED);
            assert_non_null(strstr(e.reason, "stray"));
            break;
        }
        last_ok = lsn;
    }
    assert_true(l < 100);
    wal_stats ws;
    wal_get_stats(w, &ws);
    assert_true(ws.rotation_failures >= 1);
    assert_true(ws.degraded);
    uint64_t segs[16];
    size_t ns = list_segs(f->dir, segs, 16);
    assert_int_equal(ns, 2); /* segment 1 and the stray */
    assert_int_equal(segs[1], last_ok + 1);
    atomic_store(&h.fail_header, 0);
    atomic_store(&h.fail_unlink, 0);
    wait_healthy(w);
    wal_get_stats(w, &ws);
    uint64_t next = ws.next_lsn;
    write_range(w, next, next + 9, 0);
    close_ok(w);

    recs r = {0};
    wal_recovery_stats st;
    o.io_hook = NULL;
    w = open_recover(&o, 0, &r, &st);
    check_recs_genuine(&r);
    for (uint64_t x = 1; x <= last_ok; x++) assert_true(recs_has(&r, x));
    for (uint64_t x = next; x < next + 10; x++) assert_true(recs_has(&r, x));
    assert_int_equal(r.n, last_ok + 10);
    assert_int_equal(st.lost_lsns + st.void_records + st.quarantined_regions + st.truncated_bytes, 0);
    assert_int_equal(st.void_lsns, next - 1 - last_ok);
    recs_free(&r);
    close_ok(w);
}

/* A file of ours too short for a header can hold no records, wherever it sits. */
static void test_short_stray_anywhere(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    close_ok(w);
    w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 11, 20, 0);
    close_ok(w);
    char p[256];
    seg_file(f->dir, 5, p, sizeof p);
    write_file(p, "BEAVAWAL\1", 9);
    char p2[256];
    seg_file(f->dir, 15, p2, sizeof p2);
    write_file(p2, "", 0);
    recs r = {0};
    wal_recovery_stats st;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 20);
    assert_int_equal(st.torn_segments, 2);
    assert_false(exists(p));
    assert_false(exists(p2));
    assert_int_equal(st.lost_lsns + st.void_lsns + st.quarantined_regions, 0);
    recs_free(&r);
    close_ok(w);
}

/* ---- truncation, registry version -------------------------------------------------------- */

static void test_truncate_before(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    o.segment_bytes = 8192;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 1000, 20);
    /* rotation runs just after a batch is announced durable: reopen so that the list of
     * files below is not racing the writer */
    close_ok(w);
    w = open_recover(&o, 0, NULL, NULL);
    uint64_t segs[256];
    size_t ns = list_segs(f->dir, segs, 256);
    assert_true(ns >= 8);
    unsigned removed = 99;
    bv_err e = {0};
    assert_int_equal(wal_truncate_before(w, segs[1] - 2, &removed, &e), 0);
    assert_int_equal(removed, 0); /* segment 0 still holds segs[1]-1 */
    uint64_t cut = segs[4] + 3;   /* inside segment 4 */
    assert_int_equal(wal_truncate_before(w, cut, &removed, &e), 0);
    assert_int_equal(removed, 4);
    uint64_t after[256];
    size_t na = list_segs(f->dir, after, 256);
    assert_int_equal(na, ns - 4);
    assert_int_equal(after[0], segs[4]);
    assert_int_equal(wal_truncate_before(w, cut, &removed, &e), 0); /* idempotent */
    assert_int_equal(removed, 0);
    /* even "everything" keeps the active segment */
    assert_int_equal(wal_truncate_before(w, UINT64_MAX, &removed, &e), 0);
    na = list_segs(f->dir, after, 256);
    assert_int_equal(na, 1);
    wal_stats ws;
    wal_get_stats(w, &ws);
    assert_int_equal(ws.segments, 1);
    write_range(w, 1001, 1010, 0);
    close_ok(w);
    recs r = {0};
    wal_recovery_stats st;
    w = open_recover(&o, 1000, &r, &st);
    assert_int_equal(r.n, 10);
    assert_int_equal(r.v[0].lsn, 1001);
    assert_int_equal(st.lost_lsns, 0);
    recs_free(&r);
    close_ok(w);
}

static void test_partial_truncate_then_recover(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    o.segment_bytes = 8192;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 600, 20);
    close_ok(w);
    w = open_recover(&o, 0, NULL, NULL);
    uint64_t segs[256];
    size_t ns = list_segs(f->dir, segs, 256);
    assert_true(ns >= 4);
    bv_err e = {0};
    assert_int_equal(wal_truncate_before(w, segs[3] - 1, NULL, &e), 0);
    close_ok(w);
    recs r = {0};
    wal_recovery_stats st;
    w = open_recover(&o, segs[3] - 1, &r, &st);
    assert_int_equal(st.first_lsn, segs[3]);
    assert_int_equal(r.n, 600 - (segs[3] - 1));
    check_recs_genuine(&r);
    assert_int_equal(st.lost_lsns + st.void_lsns + st.quarantined_regions, 0);
    recs_free(&r);
    close_ok(w);
}

static void test_registry_version_in_header(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    o.registry_version = 7;
    o.segment_bytes = 2048;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    wal_set_registry_version(w, 9);
    write_range(w, 11, 200, 10);
    close_ok(w);
    uint64_t segs[64];
    size_t ns = list_segs(f->dir, segs, 64);
    assert_true(ns >= 2);
    char p[256];
    size_t l;
    seg_file(f->dir, segs[0], p, sizeof p);
    unsigned char *b = read_file(p, &l);
    assert_int_equal(b[32], 7);
    free(b);
    seg_file(f->dir, segs[ns - 1], p, sizeof p);
    b = read_file(p, &l);
    assert_int_equal(b[32], 9);
    assert_memory_equal(b, "BEAVAWAL", 8);
    assert_int_equal(b[8], WAL_FORMAT_VERSION);
    free(b);
}

/* ---- sync waiters: no tick wait, acknowledged only after the fdatasync --------------- */

/* A tick far longer than any test: a batch written before it can only have been written
 * because a waiter asked for it. */
#define SYNC_TEST_TICK_MS 600000u
/* wal_wait_durable's bound in these tests: a regression fails instead of hanging. */
#define SYNC_TEST_WAIT_MS 60000

/* An idle writer with a sync waiter writes at once: the waiter is released by a batch
 * counted as written early, and a record nobody waits for still waits for the tick. */
static void test_sync_waiter_skips_tick(void **state) {
    fx *f = *state;
    wal_options o = fast_opts(f->dir);
    o.tick_ms = SYNC_TEST_TICK_MS;
    wal *w = open_recover(&o, 0, NULL, NULL);
    append_gen(w, 1);
    bv_err e = {0};
    assert_int_equal(wal_wait_durable(w, 1, SYNC_TEST_WAIT_MS, &e), WAL_OK);
    wal_stats st;
    wal_get_stats(w, &st);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.sync_batches, 1);
    assert_int_equal(st.durable_lsn, 1);
    /* nobody waits for record 2: it stays queued for the tick */
    append_gen(w, 2);
    assert_int_equal(wal_lsn_state(w, 2), WAL_LSN_PENDING);
    wal_get_stats(w, &st);
    assert_int_equal(st.batches, 1);
    /* a second waiter on an idle writer: released at once again */
    assert_int_equal(wal_wait_durable(w, 2, SYNC_TEST_WAIT_MS, &e), WAL_OK);
    wal_get_stats(w, &st);
    assert_int_equal(st.batches, 2);
    assert_int_equal(st.sync_batches, 2);
    close_ok(w);
    recs r = {0};
    w = open_recover(&o, 0, &r, NULL);
    assert_int_equal(r.n, 2);
    check_recs_genuine(&r);
    recs_free(&r);
    close_ok(w);
}

/* I/O hook whose fdatasync can be held at a gate (condition variables, no polling). */
typedef struct gate_hook {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool closed;          /* the next fdatasync of a segment waits at the gate */
    bool held;            /* an fdatasync is waiting at the gate */
    unsigned syncs;       /* fdatasyncs of segment files that returned */
} gate_hook;

static ssize_t gate_io(void *ctx, wal_io_op op, int fd, const void *buf, size_t len, off_t off) {
    gate_hook *g = ctx;
    if (op == WAL_IO_UNLINK) return unlink(buf);
    if (op == WAL_IO_WRITE) return pwrite(fd, buf, len, off);
    pthread_mutex_lock(&g->mu);
    if (g->closed) {
        g->closed = false;
        g->held = true;
        pthread_cond_broadcast(&g->cv);
        while (g->held) pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    int rc = fdatasync(fd);
    pthread_mutex_lock(&g->mu);
    g->syncs++;
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* A WAL in dir whose segment fdatasyncs pass through gate g (gate_io), with the sync
 * tests' tick; all_waited as in sync durability. */
static wal *open_gated(const char *dir, gate_hook *g, bool all_waited) {
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    wal_options o = opts(dir);
    o.tick_ms = SYNC_TEST_TICK_MS;
    o.all_waited = all_waited;
    o.io_hook = gate_io;
    o.io_ctx = g;
    return open_recover(&o, 0, NULL, NULL);
}

/* End of a gate_hook test: close w, free the gate, and check that recovery finds exactly
 * n genuine records in dir. */
static void close_gated_and_recover(wal *w, gate_hook *g, const char *dir, size_t n) {
    close_ok(w);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    recs r = {0};
    wal_options fo = fast_opts(dir);
    w = open_recover(&fo, 0, &r, NULL);
    assert_int_equal(r.n, n);
    check_recs_genuine(&r);
    recs_free(&r);
    close_ok(w);
}

typedef struct sync_waiter {
    wal *w;
    uint64_t lsn;
    int rc;
    atomic_bool done;
} sync_waiter;

static void *sync_waiter_main(void *arg) {
    sync_waiter *a = arg;
    bv_err e = {0};
    a->rc = wal_wait_durable(a->w, a->lsn, SYNC_TEST_WAIT_MS, &e);
    atomic_store(&a->done, true);
    return NULL;
}

/* A sync waiter is released only after the fdatasync of its batch returned; records
 * appended while that fdatasync runs all go into the next batch (one fdatasync for all
 * of them), which is written as soon as the first one returns, without a tick. */
static void test_sync_ack_after_fdatasync(void **state) {
    fx *f = *state;
    gate_hook g = {0};
    wal *w = open_gated(f->dir, &g, false);
    pthread_mutex_lock(&g.mu);
    unsigned syncs0 = g.syncs;     /* recovery's own (segment creation) */
    g.closed = true;
    pthread_mutex_unlock(&g.mu);

    append_gen(w, 1);
    sync_waiter a = {.w = w, .lsn = 1};
    pthread_t ta;
    pthread_create(&ta, NULL, sync_waiter_main, &a);
    /* batch 1 reaches its fdatasync without a tick (bounded, so a regression fails) */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += SYNC_TEST_WAIT_MS / 1000;
    pthread_mutex_lock(&g.mu);
    while (!g.held && pthread_cond_timedwait(&g.cv, &g.mu, &until) == 0) {}
    bool reached = g.held;
    pthread_mutex_unlock(&g.mu);
    if (!reached) {
        pthread_join(ta, NULL);
        fail_msg("the writer did not write the awaited record before its tick");
    }
    /* written, not yet synced: not durable, the waiter is still waiting */
    bool a_early = atomic_load(&a.done);
    int state1 = wal_lsn_state(w, 1);
    uint64_t durable1 = wal_durable_lsn(w);
    for (uint64_t l = 2; l <= 5; l++) append_gen(w, l);
    sync_waiter b = {.w = w, .lsn = 5};
    pthread_t tb;
    pthread_create(&tb, NULL, sync_waiter_main, &b);
    pthread_mutex_lock(&g.mu);
    g.held = false;                                        /* let the fdatasync run */
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_false(a_early);
    assert_int_equal(state1, WAL_LSN_PENDING);
    assert_int_equal(durable1, 0);
    assert_int_equal(a.rc, WAL_OK);
    assert_int_equal(b.rc, WAL_OK);
    wal_stats st;
    wal_get_stats(w, &st);
    assert_int_equal(st.batches, 2);                       /* {1}, then {2..5} together */
    assert_int_equal(st.fsyncs, 2);
    assert_true(st.fsync_ns > 0);                          /* the held fdatasync was timed */
    assert_int_equal(st.durable_lsn, 5);
    pthread_mutex_lock(&g.mu);
    assert_int_equal(g.syncs - syncs0, 2);
    pthread_mutex_unlock(&g.mu);
    close_gated_and_recover(w, &g, f->dir, 5);
}

/* How long the gathering test holds each fdatasync: the writer's average fdatasync time,
 * and so its gather window (half of it), comes from these samples. */
#define GATHER_TEST_HOLD_MS 200

/* Wait (bounded) until an fdatasync waits at the gate; fail the test if none comes. */
static void gate_wait_held(gate_hook *g) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += SYNC_TEST_WAIT_MS / 1000;
    pthread_mutex_lock(&g->mu);
    while (!g->held && pthread_cond_timedwait(&g->cv, &g->mu, &until) == 0) {}
    bool reached = g->held;
    pthread_mutex_unlock(&g->mu);
    if (!reached) fail_msg("the writer did not write a record of all_waited mode before its tick");
}

/* Let the held fdatasync go after GATHER_TEST_HOLD_MS (a slow disk); close_again: hold
 * the next one too. */
static void gate_release_slow(gate_hook *g, bool close_again) {
    struct timespec hold = { GATHER_TEST_HOLD_MS / 1000, (long)(GATHER_TEST_HOLD_MS % 1000) * 1000000L };
    nanosleep(&hold, NULL);
    pthread_mutex_lock(&g->mu);
    g->closed = close_again;
    g->held = false;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* all_waited (sync durability): records are written without the tick and without a
 * waiter asking for them. A batch that settles with as many records waiting as it
 * answered lets them go at once ({1} settles with {2, 3} waiting); one that settles with
 * fewer ({2, 3} with {4}) makes the next batch gather as many as it answered plus those
 * waiting: {4, 5, 6} together, not {4} alone. */
static void test_all_waited_gathers(void **state) {
    fx *f = *state;
    gate_hook g = {0};
    wal *w = open_gated(f->dir, &g, true);
    pthread_mutex_lock(&g.mu);
    g.closed = true;
    pthread_mutex_unlock(&g.mu);

    append_gen(w, 1);                                      /* nobody waits for it */
    gate_wait_held(&g);                                    /* {1} */
    append_gen(w, 2);
    append_gen(w, 3);
    gate_release_slow(&g, true);
    gate_wait_held(&g);                                    /* {2, 3}, at once */
    append_gen(w, 4);
    gate_release_slow(&g, false);
    bv_err e = {0};
    /* {2, 3} settled: the writer has decided (still holding the lock, it would have taken
     * {4} at once without gathering) */
    assert_int_equal(wal_wait_durable(w, 3, SYNC_TEST_WAIT_MS, &e), WAL_OK);
    append_gen(w, 5);                                      /* the clients {2, 3} answered */
    append_gen(w, 6);
    assert_int_equal(wal_wait_durable(w, 6, SYNC_TEST_WAIT_MS, &e), WAL_OK);
    wal_stats st;
    wal_get_stats(w, &st);
    assert_int_equal(st.batches, 3);                       /* {1}, {2, 3}, {4, 5, 6} */
    assert_int_equal(st.sync_batches, 3);                  /* none waited for the tick */
    assert_int_equal(st.durable_lsn, 6);
    close_gated_and_recover(w, &g, f->dir, 6);
}

/* keep_failed (batch mode): the failed batch and what was queued behind it are kept and
 * written again once space returns, with the same LSNs; nothing is voided. */
static void test_write_failure_kept(void **state) {
    fx *f = *state;
    hook h = {0};
    wal_options o = opts(f->dir);
    o.io_hook = hook_io;
    o.io_ctx = &h;
    o.keep_failed = true;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 10, 0);
    atomic_store(&h.block, 1);
    for (uint64_t l = 11; l <= 15; l++) append_gen(w, l);
    while (!atomic_load(&h.blocked)) usleep(1000);
    atomic_store(&h.partial, 1);
    atomic_store(&h.fail_write, ENOSPC);
    atomic_store(&h.block, 0);
    bv_err e = {0};
    /* not failed: still pending while the disk is full */
    assert_int_equal(wal_wait_durable(w, 15, 100, &e), WAL_TIMEOUT);
    assert_int_equal(wal_lsn_state(w, 11), WAL_LSN_PENDING);
    uint64_t lsn = 0;
    assert_int_equal(wal_append(w, 1, "x", 1, &lsn, &e), -1);
    assert_string_equal(e.code, "wal_unavailable");
    usleep(50000); /* retries keep failing */
    wal_stats ws;
    wal_get_stats(w, &ws);
    assert_true(ws.degraded);
    assert_int_equal(ws.failures, 1);
    assert_int_equal(ws.failed_records, 0);
    assert_int_equal(ws.retained_records, 5);
    assert_true(atomic_load(&h.writes) > 2);
    /* space comes back: 11..15 are written again, then new records follow them */
    atomic_store(&h.fail_write, 0);
    wait_ok(w, 15);
    wait_healthy(w);
    wal_get_stats(w, &ws);
    assert_int_equal(ws.retained_records, 0);
    write_range(w, 16, 20, 0);
    close_ok(w);
    recs r = {0};
    wal_recovery_stats st;
    o.io_hook = NULL;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 20);
    check_recs_genuine(&r);
    assert_int_equal(st.void_lsns + st.lost_lsns + st.truncated_bytes + st.quarantined_regions, 0);
    recs_free(&r);
    close_ok(w);
}

/* keep_failed and a close while the disk is still full: the kept records are lost and
 * wal_close says which. */
static void test_kept_records_at_close(void **state) {
    fx *f = *state;
    hook h = {0};
    wal_options o = opts(f->dir);
    o.io_hook = hook_io;
    o.io_ctx = &h;
    o.keep_failed = true;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 3, 0);
    atomic_store(&h.fail_write, ENOSPC);
    append_gen(w, 4);
    bv_err e = {0};
    assert_int_equal(wal_wait_durable(w, 4, 100, &e), WAL_TIMEOUT);
    assert_int_equal(wal_close(w, &e), -1);
    assert_non_null(strstr(e.reason, "4..4"));
}

/* keep_failed and one failed fdatasync (EIO) just as the WAL closes: the kept record is
 * written again by the close, which then reports success. */
static void test_kept_fsync_failure_at_close(void **state) {
    fx *f = *state;
    hook h = {0};
    wal_options o = opts(f->dir);
    o.io_hook = hook_io;
    o.io_ctx = &h;
    o.keep_failed = true;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 3, 0);
    atomic_store(&h.sync_budget, 1);
    atomic_store(&h.fail_sync, EIO);
    append_gen(w, 4);
    close_ok(w);
    assert_int_equal(atomic_load(&h.sync_budget), 0);   /* the failure did happen */
    recs r = {0};
    wal_recovery_stats st;
    o.io_hook = NULL;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(r.n, 4);
    check_recs_genuine(&r);
    recs_free(&r);
    close_ok(w);
}

/* Recovery refuses LSNs no file holds (a deleted first or middle segment, or a snapshot
 * file naming an LSN the WAL never reaches) and changes nothing; accept_gaps goes on. */
static void test_gap_refused_then_accepted(void **state) {
    fx *f = *state;
    wal_options o = opts(f->dir);
    o.segment_bytes = 8192;
    wal *w = open_recover(&o, 0, NULL, NULL);
    write_range(w, 1, 600, 20);
    close_ok(w);
    uint64_t segs[256];
    size_t ns = list_segs(f->dir, segs, 256);
    assert_true(ns >= 5);
    char p[256];
    /* the first segment gone: 1..segs[1]-1 missing, unless a snapshot covers them */
    seg_file(f->dir, segs[0], p, sizeof p);
    assert_int_equal(unlink(p), 0);
    wal_recovery_stats st;
    bv_err e = {0};
    char wdir[256];
    snprintf(wdir, sizeof wdir, "%s/wal", f->dir);
    size_t before = count_files(wdir, ".seg");
    assert_int_equal(before, ns - 1);
    assert_int_equal(wal_open(&o, &w, &e), 0);
    assert_int_equal(wal_recover(w, 0, NULL, NULL, &st, &e), -1);
    assert_string_equal(e.code, "wal_gap");
    assert_int_equal(st.gap_lsns, segs[1] - 1);
    assert_int_equal(st.ngaps, 1);
    assert_int_equal(st.gaps[0].lo, 1);
    assert_int_equal(st.gaps[0].hi, segs[1] - 1);
    assert_int_equal(st.gaps[0].before_seg, segs[1]);
    assert_non_null(strstr(e.reason, "0000000000000001.seg"));
    wal_close(w, &e);
    assert_int_equal(count_files(wdir, ".seg"), before);   /* no new segment either */
    /* a snapshot at segs[1]-1 covers them */
    recs r = {0};
    w = open_recover(&o, segs[1] - 1, &r, &st);
    assert_int_equal(st.lost_lsns + st.gap_lsns, 0);
    assert_int_equal(r.n, 600 - (segs[1] - 1));
    recs_free(&r);
    close_ok(w);
    /* a middle segment gone */
    seg_file(f->dir, segs[2], p, sizeof p);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(wal_open(&o, &w, &e), 0);
    assert_int_equal(wal_recover(w, segs[1] - 1, NULL, NULL, &st, &e), -1);
    assert_string_equal(e.code, "wal_gap");
    assert_int_equal(st.gaps[0].lo, segs[2]);
    assert_int_equal(st.gaps[0].hi, segs[3] - 1);
    assert_int_equal(st.gaps[0].after_seg, segs[1]);
    assert_int_equal(st.gaps[0].before_seg, segs[3]);
    wal_close(w, &e);
    /* a snapshot file names an LSN beyond the WAL's end */
    wal_options k = o;
    k.known_lsn = 5000;
    assert_int_equal(wal_open(&k, &w, &e), 0);
    assert_int_equal(wal_recover(w, segs[3] - 1, NULL, NULL, &st, &e), -1);
    assert_string_equal(e.code, "wal_gap");
    assert_int_equal(st.gaps[0].lo, 601);
    assert_int_equal(st.gaps[0].hi, 5000);
    assert_int_equal(st.gaps[0].before_seg, 0);
    wal_close(w, &e);
    /* accepted: replays what there is and counts the loss honestly */
    o.accept_gaps = true;
    w = open_recover(&o, 0, &r, &st);
    assert_int_equal(st.gap_lsns, (segs[1] - 1) + (segs[3] - segs[2]));
    assert_int_equal(st.lost_lsns, st.gap_lsns);
    assert_int_equal(st.ngaps, 2);
    assert_int_equal(r.n, 600 - st.gap_lsns);
    check_recs_genuine(&r);
    recs_free(&r);
    close_ok(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test_setup_teardown(test_roundtrip_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_random, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_segment_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_middle_bitflip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bitflip_segment_ends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphan_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_older_format_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphan_below_floor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_void_records_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_magic_and_version_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_second_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_callback_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_enospc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_records_at_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_fsync_failure_at_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_refused_then_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_failure_eio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_unsettled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_at_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_stray, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_stray_anywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncate_before, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_truncate_then_recover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_version_in_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_waiter_skips_tick, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_ack_after_fdatasync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_waited_gathers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
