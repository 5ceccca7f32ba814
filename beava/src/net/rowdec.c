/*
 * rowdec.c - push bodies straight into rows (see rowdec.h for the contract).
 *
 * Shape: one cursor (rd_ctx) over the input, two recursive-descent readers (JSON, msgpack)
 * with the same three levels: the envelope (event name, data member, ignored members), the
 * row (the data object's fields, decoded into bv_values in a reused scratch array, then
 * copied once into the arena), and values below the row, which are either skipped
 * (validated only: ignored members, non-object data) or built as jansson trees (an array or
 * map field value). Recursion is bounded by ROWDEC_MAX_DEPTH.
 *
 * Speed notes: strings are scanned eight bytes at a time for the bytes that need a look
 * (quote, backslash, < 0x20, DEL, >= 0x80) and handed out in place when they hold no
 * escape; numbers take the exact fast path (at most 2^53 and a power of ten up to 1e22,
 * one correctly rounded IEEE operation) and strtod otherwise; rows of up to
 * RD_LINEAR_FIELDS fields find duplicates by a linear scan, wider rows through a hash index
 * keyed per decoder (a body of many distinct or colliding keys must not cost O(n^2)); the
 * scan runs only when the new name's bit in a 64-bit mask of the row's names (length, first
 * and last byte) is already set, so a row of distinct names mostly skips it.
 *
 * Errors: the first failure formats err with a path (keys and indices of the containers
 * open at that point, kept in rd_ctx.path) and the input byte offset, and every caller
 * unwinds with that code.
 */
#include "rowdec.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* Rows up to this many fields find duplicates by a scan (length and first byte before any
 * memcmp), wider ones through the keyed hash index: an event schema of 17-32 fields (the
 * fraud pipeline's Txn has 19) would otherwise pay one SipHash per field per event. */
#define RD_LINEAR_FIELDS 32
#define RD_PATH_KEY_SHOWN 64        /* bytes of one key shown in an error path */
#define RD_NUM_STACK 64             /* numbers shorter than this are copied for strtod on the stack */

/* ---- memory -------------------------------------------------------------------------- */

static void *rd_alloc(rowdec *d, size_t n) { return arena_alloc(&d->mem, n ? n : 1); }

static void grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (*cap >= need) return;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) abort();
    *p = q;
    *cap = c;
}

static void keep_tree(rowdec *d, json_t *j) {
    grow((void **)&d->trees, &d->captrees, d->ntrees + 1, sizeof *d->trees);
    d->trees[d->ntrees++] = j;
}

void rowdec_init(rowdec *d) {
    memset(d, 0, sizeof *d);
    d->limits.max_string = ROWDEC_MAX_STRING_BYTES;
    d->limits.max_key = ROWDEC_MAX_KEY_BYTES;
    d->limits.max_fields = ROWDEC_MAX_FIELDS;
    arena_init(&d->mem);
    /* the hash key: random; without getrandom, something an outsider cannot easily guess */
    if (getrandom(d->hkey, sizeof d->hkey, GRND_NONBLOCK) != (ssize_t)sizeof d->hkey) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        d->hkey[0] = (uint64_t)(uintptr_t)d ^ (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull;
        d->hkey[1] = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&ts;
    }
}

void rowdec_reset(rowdec *d) {
    for (size_t i = 0; i < d->ntrees; i++) json_decref(d->trees[i]);
    d->ntrees = 0;
    arena_reset(&d->mem);
    d->nscratch = 0;
    d->name_mask = 0;
    d->nitems = 0;
}

void rowdec_free(rowdec *d) {
    rowdec_reset(d);
    arena_free(&d->mem);
    free(d->trees);
    free(d->numbuf);
    free(d->scratch);
    free(d->hidx);
    free(d->items);
    memset(d, 0, sizeof *d);
}

size_t rowdec_retained_bytes(const rowdec *d) {
    size_t n = 0;
    for (const arena_block *b = d->mem.head; b; b = b->next) n += b->cap;
    return n;
}

/* ---- cursor, errors, paths ------------------------------------------------------------- */

typedef struct rd_path {
    const char *key;        /* NULL: an array index */
    size_t len;             /* key length, or the index */
} rd_path;

typedef struct rd_ctx {
    rowdec *d;
    const unsigned char *base, *p, *end;
    int depth;              /* containers open */
    int npath;              /* valid entries of path */
    bool cc;                /* a control character seen since the caller last cleared it */
    bool repeated;          /* the row being read had a key given twice (the last value kept) */
    int rc;
    char *err;
    size_t errlen;
    rd_path path[ROWDEC_MAX_DEPTH + 1];
} rd_ctx;

static void ctx_init(rd_ctx *c, rowdec *d, const char *p, size_t n, char *err, size_t errlen) {
    if (!p) {
        p = "";     /* an empty body may come as NULL; no arithmetic on a null pointer */
        n = 0;
    }
    c->d = d;
    c->base = c->p = (const unsigned char *)p;
    c->end = c->base + n;
    c->depth = 0;
    c->npath = 0;
    c->cc = false;
    c->rc = 0;
    c->err = err;
    c->errlen = errlen;
    if (err && errlen) err[0] = 0;
}

/* The bytes of a UTF-8 key that fit in `max`, cut on a character boundary. */
static size_t utf8_cut(const char *s, size_t n, size_t max) {
    if (n <= max) return n;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80) max--;
    return max;
}

static void path_text(const rd_ctx *c, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = 0;
    if (c->npath == 0) {
        snprintf(buf, cap, "the top level");
        return;
    }
    for (int i = 0; i < c->npath && o < cap; i++) {
        const rd_path *e = &c->path[i];
        int w;
        if (e->key)
            w = snprintf(buf + o, cap - o, "%s%.*s", i ? "." : "", (int)utf8_cut(e->key, e->len, RD_PATH_KEY_SHOWN),
                         e->key);
        else
            w = snprintf(buf + o, cap - o, "[%zu]", e->len);
        if (w < 0) break;
        o += (size_t)w;
    }
}

static int fail(rd_ctx *c, int code, const unsigned char *at, const char *fmt, ...) {
    if (c->rc) return c->rc;
    c->rc = code;
    if (!c->err || !c->errlen) return code;
    char msg[160], path[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    path_text(c, path, sizeof path);
    snprintf(c->err, c->errlen, "%s at %s, byte %zu", msg, path, (size_t)(at - c->base));
    return code;
}

static void set_key(rd_ctx *c, const char *k, size_t n) {
    c->path[c->depth - 1].key = k;
    c->path[c->depth - 1].len = n;
    c->npath = c->depth;
}

static void set_index(rd_ctx *c, size_t i) {
    c->path[c->depth - 1].key = NULL;
    c->path[c->depth - 1].len = i;
    c->npath = c->depth;
}

static int enter(rd_ctx *c, const unsigned char *at) {
    if (c->depth >= ROWDEC_MAX_DEPTH)
        return fail(c, ROWDEC_EDEPTH, at, "nesting deeper than %d containers", ROWDEC_MAX_DEPTH);
    c->depth++;
    return 0;
}

static void leave(rd_ctx *c) {
    c->depth--;
    c->npath = c->depth;
}

/* ---- UTF-8 ----------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), 0 if invalid or cut short.
 * *cc is set for U+0080-009F. */
static size_t utf8_seq(const unsigned char *p, size_t avail, bool *cc) {
    unsigned char b = p[0];
    if (b >= 0xc2 && b <= 0xdf) {
        if (avail < 2 || (p[1] & 0xc0) != 0x80) return 0;
        if (b == 0xc2 && p[1] <= 0x9f) *cc = true;
        return 2;
    }
    if (b >= 0xe0 && b <= 0xef) {
        if (avail < 3) return 0;
        unsigned char lo = b == 0xe0 ? 0xa0 : 0x80, hi = b == 0xed ? 0x9f : 0xbf;
        if (p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80) return 0;
        return 3;
    }
    if (b >= 0xf0 && b <= 0xf4) {
        if (avail < 4) return 0;
        unsigned char lo = b == 0xf0 ? 0x90 : 0x80, hi = b == 0xf4 ? 0x8f : 0xbf;
        if (p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80) return 0;
        return 4;
    }
    return 0;
}

#define RD_ONES 0x0101010101010101ull
#define RD_HIGH 0x8080808080808080ull

static inline uint64_t load64(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static inline uint64_t has_zero(uint64_t v) { return (v - RD_ONES) & ~v & RD_HIGH; }

/* Bytes before the first flagged one in a mask from mp_special / json_special (nonzero).
 * The tricks below may flag a byte above a true match (a borrow), never one below it, so
 * the lowest flagged byte is exact. load64 reads little-endian on the hosts that have
 * __builtin_ctzll's byte order; elsewhere nothing is skipped and the byte loop decides. */
static inline size_t first_flagged(uint64_t m) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (size_t)__builtin_ctzll(m) >> 3;
#else
    (void)m;
    return 0;
#endif
}

/* Nonzero when one of the 8 bytes is < 0x20, DEL or >= 0x80 (msgpack strings). */
static inline uint64_t mp_special(uint64_t w) {
    return (w & RD_HIGH) | ((w - RD_ONES * 0x20) & ~w & RD_HIGH) | has_zero(w ^ (RD_ONES * 0x7f));
}

/* ... or a quote or a backslash (JSON strings). */
static inline uint64_t json_special(uint64_t w) {
    return mp_special(w) | has_zero(w ^ (RD_ONES * '"')) | has_zero(w ^ (RD_ONES * '\\'));
}

/* utf8_check past its printable-ASCII fast path: the byte-by-byte look. */
static int __attribute__((noinline)) utf8_check_slow(rd_ctx *c, const unsigned char *s, size_t n, bool key,
                                                     const char *what) {
    const unsigned char *p = s, *end = s + n;
    for (;;) {
        while (end - p >= 8) {
            uint64_t m = mp_special(load64(p));
            if (m) {
                p += first_flagged(m);
                break;
            }
            p += 8;
        }
        if (p >= end) return 0;
        unsigned char b = *p;
        if (b < 0x80) {
            if (b < 0x20 || b == 0x7f) {
                if (b == 0 && key) return fail(c, ROWDEC_ESYNTAX, p, "NUL byte in a map key");
                c->cc = true;
            }
            p++;
            continue;
        }
        size_t l = utf8_seq(p, (size_t)(end - p), &c->cc);
        if (!l) return fail(c, ROWDEC_EUTF8, p, "invalid UTF-8 in %s (string byte %zu)", what, (size_t)(p - s));
        p += l;
    }
}

/* Validate a msgpack string body: UTF-8, control characters into c->cc, and for keys no
 * NUL. Returns 0 or the error code. The common case first, inline: printable ASCII only
 * (ids, names), checked a word at a time, the tail as the last 8 bytes (overlapping);
 * 4..7 bytes as two overlapping 4-byte loads in one word; under 4, packed into one word
 * padded with a byte that needs no look. */
static inline int utf8_check(rd_ctx *c, const unsigned char *s, size_t n, bool key, const char *what) {
    if (n >= 8) {
        size_t i = 0;
        while (i + 8 <= n && !mp_special(load64(s + i))) i += 8;
        if (i + 8 > n && !mp_special(load64(s + n - 8))) return 0;
    } else if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, s, 4);
        memcpy(&hi, s + n - 4, 4);
        if (!mp_special((uint64_t)lo | (uint64_t)hi << 32)) return 0;
    } else {
        uint64_t w = RD_ONES * 'a';
        for (size_t i = 0; i < n; i++) w = (w & ~(0xffull << (8 * i))) | (uint64_t)s[i] << (8 * i);
        if (!mp_special(w)) return 0;
    }
    return utf8_check_slow(c, s, n, key, what);
}

/* ---- rows ------------------------------------------------------------------------------ */

/* SipHash-1-3 keyed per decoder: field names come from the client, and an unkeyed hash
 * would let a body of colliding names turn the index back into O(n^2) probing. */
static inline uint64_t rotl(uint64_t x, int b) { return x << b | x >> (64 - b); }

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);                                  \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                                     \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                                     \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);                                  \
    } while (0)

static uint64_t le64(const unsigned char *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = v << 8 | p[i];
    return v;
}

static uint64_t name_hash(const rowdec *d, const char *name, size_t n) {
    const unsigned char *p = (const unsigned char *)name;
    uint64_t v0 = d->hkey[0] ^ 0x736f6d6570736575ull, v1 = d->hkey[1] ^ 0x646f72616e646f6dull;
    uint64_t v2 = d->hkey[0] ^ 0x6c7967656e657261ull, v3 = d->hkey[1] ^ 0x7465646279746573ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t m = le64(p + i, 8);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)n << 56 | le64(p + i, n - i);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static void hidx_insert(rowdec *d, size_t i) {
    size_t mask = d->caphidx - 1, h = name_hash(d, d->scratch[i].name, d->scratch[i].name_len) & mask;
    while (d->hidx[h]) h = (h + 1) & mask;
    d->hidx[h] = (uint32_t)i + 1;
}

static void hidx_build(rowdec *d, size_t want) {
    size_t cap = 64;
    while (cap < want * 2) cap *= 2;
    if (d->caphidx < cap) {
        free(d->hidx);
        d->hidx = malloc(cap * sizeof *d->hidx);
        if (!d->hidx) abort();
    }
    d->caphidx = cap;
    memset(d->hidx, 0, cap * sizeof *d->hidx);
    for (size_t i = 0; i < d->nscratch; i++) hidx_insert(d, i);
}

/* A name's bit in rowdec.name_mask: equal names have equal bits, so a clear bit proves the
 * name new to the row (a set one may be another name's: then the scan decides). */
static inline uint64_t name_bit(const char *name, size_t nl) {
    if (nl == 0) return 1;
    unsigned h = (unsigned)nl * 5u + (unsigned char)name[0] * 7u + (unsigned char)name[nl - 1] * 31u;
    return 1ull << (h & 63u);
}

/* Start the fields of a new row in the scratch array. */
static void row_begin(rowdec *d) {
    d->nscratch = 0;
    d->name_mask = 0;
}

/* Add a field to the row being built; a repeated name replaces the value in place. */
static int row_put(rd_ctx *c, const unsigned char *at, const char *name, size_t nl, bv_value v) {
    rowdec *d = c->d;
    size_t n = d->nscratch;
    uint64_t bit = name_bit(name, nl);
    if (n <= RD_LINEAR_FIELDS) {
        for (size_t i = 0; i < n && (d->name_mask & bit); i++) {
            bv_field *f = &d->scratch[i];
            if (f->name_len == nl && (nl == 0 || (f->name[0] == name[0] && memcmp(f->name, name, nl) == 0))) {
                f->value = v;
                c->repeated = true;
                return 0;
            }
        }
    } else {
        size_t mask = d->caphidx - 1, h = name_hash(d, name, nl) & mask;
        for (uint32_t e; (e = d->hidx[h]) != 0; h = (h + 1) & mask) {
            bv_field *f = &d->scratch[e - 1];
            if (f->name_len == nl && memcmp(f->name, name, nl) == 0) {
                f->value = v;
                c->repeated = true;
                return 0;
            }
        }
    }
    if (n >= d->limits.max_fields)
        return fail(c, ROWDEC_ESIZE, at, "more than %zu fields in one object", d->limits.max_fields);
    grow((void **)&d->scratch, &d->capscratch, n + 1, sizeof *d->scratch);
    bv_field *f = &d->scratch[n];
    f->name = name;
    f->name_len = nl;
    f->value = v;
    d->nscratch = n + 1;
    d->name_mask |= bit;
    if (n + 1 == RD_LINEAR_FIELDS + 1) hidx_build(d, n + 1);
    else if (n + 1 > RD_LINEAR_FIELDS + 1) {
        if ((n + 1) * 2 > d->caphidx) hidx_build(d, n + 1);
        else hidx_insert(d, n);
    }
    return 0;
}

static void row_finish(rowdec *d, bv_row *row) {
    row->n = d->nscratch;
    row->cap = 0;
    row->fields = NULL;
    if (d->nscratch) {
        row->fields = rd_alloc(d, d->nscratch * sizeof *row->fields);
        memcpy(row->fields, d->scratch, d->nscratch * sizeof *row->fields);
    }
    row_begin(d);
}

/* A row whose key was given twice keeps the last value: its control flag is what the
 * kept fields hold, not every string read on the way (rare: only then is it walked). */
static bool row_has_cc(const bv_row *row) {
    for (size_t i = 0; i < row->n; i++) {
        const bv_field *f = &row->fields[i];
        if (bv_has_control_char(f->name, f->name_len)) return true;
        if (f->value.kind == BV_STR && bv_has_control_char(f->value.u.s.ptr, f->value.u.s.len)) return true;
        if (f->value.kind == BV_JSON && bv_json_has_control_char(f->value.u.j)) return true;
    }
    return false;
}

static void push_clear(rowdec_push *out) {
    memset(out, 0, sizeof *out);
}

static bool key_is(const char *k, size_t kl, const char *lit, size_t ll) {
    return kl == ll && memcmp(k, lit, ll) == 0;
}

/* ==== JSON ============================================================================== */

static inline void ws(rd_ctx *c) {
    const unsigned char *p = c->p, *end = c->end;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    c->p = p;
}

static int expect_more(rd_ctx *c, const char *what) {
    if (c->p < c->end) return 0;
    return fail(c, ROWDEC_ESYNTAX, c->p, "unexpected end of input, expected %s", what);
}

static int hex4(const unsigned char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char h = p[i];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= (uint32_t)(h - '0');
        else if (h >= 'a' && h <= 'f') v |= (uint32_t)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') v |= (uint32_t)(h - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(unsigned char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decode the escaped string [s, q) (q at the closing quote) into the arena. Raw bytes are
 * checked as in jstring; escapes per RFC 8259, surrogate pairs combined, lone ones refused. */
static int junescape(rd_ctx *c, const unsigned char *s, const unsigned char *q, bool key, const char *what,
                     const char **out, size_t *outlen) {
    size_t cap = (size_t)(q - s);
    unsigned char *buf = rd_alloc(c->d, cap), *o = buf;
    const unsigned char *p = s;
    while (p < q) {
        unsigned char b = *p;
        if (b != '\\') {
            if (b < 0x80) {
                if (b < 0x20) return fail(c, ROWDEC_ESYNTAX, p, "control character 0x%02x in %s", b, what);
                if (b == 0x7f) c->cc = true;
                *o++ = b;
                p++;
                continue;
            }
            size_t l = utf8_seq(p, (size_t)(q - p), &c->cc);
            if (!l) return fail(c, ROWDEC_EUTF8, p, "invalid UTF-8 in %s (string byte %zu)", what, (size_t)(p - s));
            memcpy(o, p, l);
            o += l;
            p += l;
            continue;
        }
        const unsigned char *esc = p;
        unsigned char e = p[1];     /* jstring's scan guarantees a byte after a backslash */
        p += 2;
        switch (e) {
        case '"': *o++ = '"'; continue;
        case '\\': *o++ = '\\'; continue;
        case '/': *o++ = '/'; continue;
        case 'b': *o++ = '\b'; c->cc = true; continue;
        case 'f': *o++ = '\f'; c->cc = true; continue;
        case 'n': *o++ = '\n'; c->cc = true; continue;
        case 'r': *o++ = '\r'; c->cc = true; continue;
        case 't': *o++ = '\t'; c->cc = true; continue;
        case 'u': break;
        default: return fail(c, ROWDEC_ESYNTAX, esc, "invalid escape '\\%c' in %s", e >= 0x20 && e < 0x7f ? e : '?', what);
        }
        uint32_t cp;
        if (q - p < 4 || hex4(p, &cp)) return fail(c, ROWDEC_ESYNTAX, esc, "invalid \\u escape in %s", what);
        p += 4;
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return fail(c, ROWDEC_ESYNTAX, esc, "invalid Unicode escape '\\u%04X' (lone low surrogate) in %s", cp, what);
        if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t lo;
            if (q - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
                return fail(c, ROWDEC_ESYNTAX, esc, "invalid Unicode escape '\\u%04X' (unpaired high surrogate) in %s",
                            cp, what);
            p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        if (cp == 0 && key) return fail(c, ROWDEC_ESYNTAX, esc, "NUL byte in an object key");
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) c->cc = true;
        o += put_utf8(o, cp);
    }
    *out = (const char *)buf;
    *outlen = (size_t)(o - buf);
    return 0;
}

/* A JSON string at c->p (the opening quote). *out points into the input when the string
 * has no escape, else into the arena. Control characters go to c->cc. */
static int jstring(rd_ctx *c, bool key, const char **out, size_t *outlen) {
    const char *what = key ? "a key" : "a string";
    const unsigned char *s = c->p + 1, *p = s, *end = c->end;
    for (;;) {
        while (end - p >= 8) {
            uint64_t m = json_special(load64(p));
            if (m) {
                p += first_flagged(m);
                break;
            }
            p += 8;
        }
        if (p >= end) return fail(c, ROWDEC_ESYNTAX, c->p, "unterminated string");
        unsigned char b = *p;
        if (b == '"') break;
        if (b == '\\') goto escaped;
        if (b < 0x80) {
            if (b < 0x20) return fail(c, ROWDEC_ESYNTAX, p, "control character 0x%02x in %s", b, what);
            if (b == 0x7f) c->cc = true;
            p++;
            continue;
        }
        size_t l = utf8_seq(p, (size_t)(end - p), &c->cc);
        if (!l) return fail(c, ROWDEC_EUTF8, p, "invalid UTF-8 in %s (string byte %zu)", what, (size_t)(p - s));
        p += l;
    }
    size_t n = (size_t)(p - s);
    if (n > (key ? c->d->limits.max_key : c->d->limits.max_string))
        return fail(c, ROWDEC_ESIZE, c->p, "%s of %zu bytes is over the limit of %zu", key ? "key" : "string", n,
                    key ? c->d->limits.max_key : c->d->limits.max_string);
    *out = (const char *)s;
    *outlen = n;
    c->p = p + 1;
    return 0;
escaped:;
    const unsigned char *q = p;
    while (q < end && *q != '"') {
        if (*q == '\\' && end - q < 2) break;
        q += *q == '\\' ? 2 : 1;
    }
    if (q >= end || *q != '"') return fail(c, ROWDEC_ESYNTAX, c->p, "unterminated string");
    size_t raw = (size_t)(q - s);
    if (raw > (key ? c->d->limits.max_key : c->d->limits.max_string))
        return fail(c, ROWDEC_ESIZE, c->p, "%s of %zu bytes is over the limit of %zu", key ? "key" : "string", raw,
                    key ? c->d->limits.max_key : c->d->limits.max_string);
    int rc = junescape(c, s, q, key, what, out, outlen);
    if (rc) return rc;
    c->p = q + 1;
    return 0;
}

#if FLT_EVAL_METHOD == 0
static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
#endif

static inline bool is_digit(unsigned char b) { return (unsigned)(b - '0') < 10; }

/* A JSON number at c->p, grammar and ranges as jansson reads them: integers are int64 or
 * an error, reals are correctly rounded (overflow is an error, underflow is not). */
static int jnumber(rd_ctx *c, bv_value *v) {
    const unsigned char *s = c->p, *p = s, *end = c->end;
    bool neg = false, exact = true;
    uint64_t m = 0;
    int frac = 0;
    if (*p == '-') { neg = true; p++; }
    if (p >= end || !is_digit(*p)) return fail(c, ROWDEC_ESYNTAX, s, "invalid number");
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) return fail(c, ROWDEC_ESYNTAX, s, "invalid number (leading zero)");
    } else {
        for (; p < end && is_digit(*p); p++) {
            uint64_t t;
            if (__builtin_mul_overflow(m, 10, &t) || __builtin_add_overflow(t, (uint64_t)(*p - '0'), &m)) {
                exact = false;
                for (; p < end && is_digit(*p); p++) {}
                break;
            }
        }
    }
    if (p >= end || (*p != '.' && *p != 'e' && *p != 'E')) {
        if (!exact || m > (uint64_t)INT64_MAX + neg)
            return fail(c, ROWDEC_ESYNTAX, s, neg ? "too big negative integer" : "too big integer");
        *v = bv_i64(!neg ? (int64_t)m : m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m);
        c->p = p;
        return 0;
    }
    if (*p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) return fail(c, ROWDEC_ESYNTAX, s, "invalid number (no digit after '.')");
        for (; p < end && is_digit(*p); p++) {
            uint64_t t;
            if (!exact) continue;
            if (__builtin_mul_overflow(m, 10, &t) || __builtin_add_overflow(t, (uint64_t)(*p - '0'), &m)) exact = false;
            else frac++;
        }
    }
    long ex = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        bool eneg = false;
        if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p >= end || !is_digit(*p)) return fail(c, ROWDEC_ESYNTAX, s, "invalid number (no digit in exponent)");
        for (; p < end && is_digit(*p); p++)
            if (ex < 100000) ex = ex * 10 + (*p - '0');
        if (eneg) ex = -ex;
    }
    c->p = p;
#if FLT_EVAL_METHOD == 0
    long e10 = ex - frac;
    if (exact && m <= (1ull << 53) && e10 >= -22 && e10 <= 22) {
        double f = (double)m;
        f = e10 >= 0 ? f * pow10_exact[e10] : f / pow10_exact[-e10];
        *v = bv_f64(neg ? -f : f);
        return 0;
    }
#endif
    size_t len = (size_t)(p - s);
    char stack[RD_NUM_STACK], *buf = stack;
    if (len >= sizeof stack) {
        grow((void **)&c->d->numbuf, &c->d->capnumbuf, len + 1, 1);
        buf = c->d->numbuf;
    }
    memcpy(buf, s, len);
    buf[len] = 0;
    char *stop;
    errno = 0;
    double f = strtod(buf, &stop);
    int err = errno;
    bool whole = stop == buf + len;
    if (!whole) return fail(c, ROWDEC_ESYNTAX, s, "invalid number");
    if (err == ERANGE && (f == HUGE_VAL || f == -HUGE_VAL)) return fail(c, ROWDEC_ESYNTAX, s, "real number overflow");
    *v = bv_f64(f);
    return 0;
}

/* true / false / null at c->p. */
static int jliteral(rd_ctx *c, bv_value *v) {
    const unsigned char *p = c->p;
    size_t left = (size_t)(c->end - p);
    if (left >= 4 && memcmp(p, "true", 4) == 0) { *v = bv_bool(true); c->p += 4; return 0; }
    if (left >= 5 && memcmp(p, "false", 5) == 0) { *v = bv_bool(false); c->p += 5; return 0; }
    if (left >= 4 && memcmp(p, "null", 4) == 0) { *v = bv_null(); c->p += 4; return 0; }
    return fail(c, ROWDEC_ESYNTAX, p, "invalid token");
}

static const char *bv_kind_text(const bv_value *v) {
    switch (v->kind) {
    case BV_NULL: return "null";
    case BV_BOOL: return "boolean";
    case BV_I64: return "integer";
    case BV_F64: return "number";
    case BV_STR: return "string";
    case BV_JSON: return "array";
    }
    return "?";
}

static json_t *scalar_json(const bv_value *v) {
    switch (v->kind) {
    case BV_NULL: return json_null();
    case BV_BOOL: return json_boolean(v->u.b);
    case BV_I64: return json_integer((json_int_t)v->u.i);
    case BV_F64: return json_real(v->u.f);
    case BV_STR: return json_stringn_nocheck(v->u.s.ptr, v->u.s.len);
    case BV_JSON: break;
    }
    return NULL;
}

static int jvalue(rd_ctx *c, json_t **out, const char **kind);

/* After a member or element: ',' (more follows) or the closing byte. *more tells which. */
static int jnext(rd_ctx *c, char close, bool *more) {
    ws(c);
    if (c->p >= c->end) return fail(c, ROWDEC_ESYNTAX, c->p, "unexpected end of input, expected ',' or '%c'", close);
    if (*c->p == ',') {
        c->p++;
        ws(c);
        *more = true;
        return expect_more(c, "a value after ','");
    }
    if (*c->p == (unsigned char)close) {
        c->p++;
        *more = false;
        return 0;
    }
    return fail(c, ROWDEC_ESYNTAX, c->p, "expected ',' or '%c'", close);
}

/* An object key and its colon; c->p at the opening quote (checked), ends at the value. */
static int jkey(rd_ctx *c, const char **k, size_t *kl) {
    if (c->p >= c->end || *c->p != '"') return fail(c, ROWDEC_ESYNTAX, c->p, "expected a string key");
    int rc = jstring(c, true, k, kl);
    if (rc) return rc;
    ws(c);
    if (c->p >= c->end || *c->p != ':') return fail(c, ROWDEC_ESYNTAX, c->p, "expected ':' after a key");
    c->p++;
    ws(c);
    return expect_more(c, "a value");
}

static int jcontainer(rd_ctx *c, json_t **out) {
    const unsigned char *at = c->p;
    bool obj = *at == '{';
    int rc = enter(c, at);
    if (rc) return rc;
    json_t *j = out ? (obj ? json_object() : json_array()) : NULL;
    c->p++;
    ws(c);
    if ((rc = expect_more(c, obj ? "a key or '}'" : "a value or ']'"))) goto err;
    bool more = *c->p != (obj ? '}' : ']');
    if (!more) c->p++;
    for (size_t i = 0; more; i++) {
        const char *k = NULL;
        size_t kl = 0;
        if (obj) {
            if ((rc = jkey(c, &k, &kl))) goto err;
            set_key(c, k, kl);
        } else {
            set_index(c, i);
            if ((rc = expect_more(c, "a value"))) goto err;
        }
        json_t *child = NULL;
        if ((rc = jvalue(c, out ? &child : NULL, NULL))) goto err;
        if (j) {
            if (obj) json_object_setn_new_nocheck(j, k, kl, child);
            else json_array_append_new(j, child);
        }
        if ((rc = jnext(c, obj ? '}' : ']', &more))) goto err;
    }
    leave(c);
    if (out) *out = j;
    return 0;
err:
    json_decref(j);
    return rc;
}

/* Any JSON value at c->p (not whitespace, not the end). out == NULL: validate only. */
static int jvalue(rd_ctx *c, json_t **out, const char **kind) {
    unsigned char b = *c->p;
    if (b == '{' || b == '[') {
        if (kind) *kind = b == '{' ? "object" : "array";
        return jcontainer(c, out);
    }
    bv_value v;
    int rc;
    if (b == '"') {
        const char *s;
        size_t n;
        rc = jstring(c, false, &s, &n);
        v = rc ? bv_null() : bv_str(s, n);
    } else if (b == '-' || is_digit(b)) {
        rc = jnumber(c, &v);
    } else {
        rc = jliteral(c, &v);
    }
    if (rc) return rc;
    if (kind) *kind = bv_kind_text(&v);
    if (out) *out = scalar_json(&v);
    return 0;
}

/* A field value: scalars straight to bv_value, arrays and objects as jansson trees. */
static int jfield(rd_ctx *c, bv_value *v) {
    unsigned char b = *c->p;
    if (b == '"') {
        const char *s;
        size_t n;
        int rc = jstring(c, false, &s, &n);
        if (rc) return rc;
        *v = bv_str(s, n);
        return 0;
    }
    if (b == '-' || is_digit(b)) return jnumber(c, v);
    if (b == '{' || b == '[') {
        json_t *j = NULL;
        bool cc = c->cc;
        int rc = jcontainer(c, &j);
        if (rc) return rc;
        keep_tree(c->d, j);
        c->cc = cc || bv_json_has_control_char(j);   /* the tree keeps the last of a repeated key */
        v->kind = BV_JSON;
        v->u.j = j;
        return 0;
    }
    return jliteral(c, v);
}

/* The data object at c->p ('{') into a row. */
static int jrow(rd_ctx *c, bv_row *row) {
    int rc = enter(c, c->p);
    if (rc) return rc;
    row_begin(c->d);
    c->repeated = false;
    c->p++;
    ws(c);
    if ((rc = expect_more(c, "a key or '}'"))) return rc;
    bool more = *c->p != '}';
    if (!more) c->p++;
    while (more) {
        const char *k;
        size_t kl;
        const unsigned char *at = c->p;
        if ((rc = jkey(c, &k, &kl))) return rc;
        set_key(c, k, kl);
        bv_value v;
        if ((rc = jfield(c, &v))) return rc;
        if ((rc = row_put(c, at, k, kl, v))) return rc;
        if ((rc = jnext(c, '}', &more))) return rc;
    }
    leave(c);
    row_finish(c->d, row);
    if (c->repeated) c->cc = row_has_cc(row);
    return 0;
}

/* The data member's value: an object into out->row, anything else validated and named. */
static int jdata(rd_ctx *c, rowdec_push *out) {
    c->cc = false;
    int rc;
    if (*c->p == '{') {
        rc = jrow(c, &out->row);
        out->data_is_object = true;
        out->data_kind = "object";
    } else {
        out->row.n = 0;
        out->row.fields = NULL;
        out->data_is_object = false;
        rc = jvalue(c, NULL, &out->data_kind);
    }
    return rc;
}

/* {"event":E, <dkey>:D, ...}. Returns a hard error, or 0 with out->event == NULL and *why
 * set when the envelope is unusable. data_default: a missing data member means {}. */
static int jenvelope(rd_ctx *c, const char *dkey, bool data_default, rowdec_push *out, const char **why) {
    push_clear(out);
    *why = NULL;
    if (*c->p != '{') {
        int rc = jvalue(c, NULL, NULL);
        *why = "the body is not a JSON object with a string member \"event\"";
        return rc;
    }
    int rc = enter(c, c->p);
    if (rc) return rc;
    bool have_data = false, ev_cc = false, data_cc = false;
    size_t dkl = strlen(dkey);
    c->p++;
    ws(c);
    if ((rc = expect_more(c, "a key or '}'"))) return rc;
    bool more = *c->p != '}';
    if (!more) c->p++;
    while (more) {
        const char *k;
        size_t kl;
        if ((rc = jkey(c, &k, &kl))) return rc;
        set_key(c, k, kl);
        if (key_is(k, kl, "event", 5)) {
            out->event = NULL;
            if (*c->p == '"') {
                c->cc = false;
                if ((rc = jstring(c, false, &out->event, &out->event_len))) return rc;
                ev_cc = c->cc;
            } else if ((rc = jvalue(c, NULL, NULL))) {
                return rc;
            }
        } else if (key_is(k, kl, dkey, dkl)) {
            if ((rc = jdata(c, out))) return rc;
            data_cc = c->cc;
            have_data = true;
        } else if ((rc = jvalue(c, NULL, NULL))) {
            return rc;
        }
        if ((rc = jnext(c, '}', &more))) return rc;
    }
    leave(c);
    if (!have_data && data_default) {
        out->data_is_object = true;
        out->data_kind = "object";
        have_data = true;
    }
    out->has_control_char = ev_cc || data_cc;
    if (!out->event) *why = "the body needs a string member \"event\"";
    else if (!have_data) *why = dkl == 4 && dkey[0] == 'b' ? "the body needs a member \"body\"" : "no data member";
    if (*why) out->event = NULL;
    return 0;
}

/* Whitespace, then the end of the input. */
static int jend(rd_ctx *c) {
    ws(c);
    if (c->p != c->end) return fail(c, ROWDEC_ESYNTAX, c->p, "trailing bytes after the JSON value");
    return 0;
}

static int jstart(rd_ctx *c) {
    ws(c);
    return expect_more(c, "a JSON value");
}

static int envelope_result(rd_ctx *c, int rc, const char *why) {
    if (rc) return rc;
    if (why) {
        c->npath = 0;
        return fail(c, ROWDEC_EENVELOPE, c->base, "%s", why);
    }
    return 0;
}

static int json_push(rowdec *d, const char *p, size_t n, const char *dkey, bool data_default, rowdec_push *out,
                     char *err, size_t errlen) {
    rd_ctx c;
    const char *why = NULL;
    ctx_init(&c, d, p, n, err, errlen);
    push_clear(out);
    int rc = jstart(&c);
    if (!rc) rc = jenvelope(&c, dkey, data_default, out, &why);
    if (!rc) rc = jend(&c);
    if (rc) push_clear(out);
    return envelope_result(&c, rc, why);
}

int rowdec_json_push_tcp(rowdec *d, const char *p, size_t n, rowdec_push *out, char *err, size_t errlen) {
    return json_push(d, p, n, "body", false, out, err, errlen);
}

int rowdec_json_push_http(rowdec *d, const char *p, size_t n, rowdec_push *out, char *err, size_t errlen) {
    return json_push(d, p, n, "data", true, out, err, errlen);
}

int rowdec_json_data(rowdec *d, const char *p, size_t n, rowdec_push *out, char *err, size_t errlen) {
    rd_ctx c;
    ctx_init(&c, d, p, n, err, errlen);
    push_clear(out);
    int rc = jstart(&c);
    if (!rc) rc = jdata(&c, out);
    if (!rc) rc = jend(&c);
    out->has_control_char = c.cc;
    if (rc) push_clear(out);
    return rc;
}

/* Append one batch entry to the reused items array. */
static rowdec_push *item_add(rowdec *d) {
    grow((void **)&d->items, &d->capitems, d->nitems + 1, sizeof *d->items);
    return &d->items[d->nitems++];
}

static void items_finish(rowdec *d, rowdec_batch *out) {
    out->n = d->nitems;
    out->items = rd_alloc(d, d->nitems * sizeof *out->items);
    if (d->nitems) memcpy(out->items, d->items, d->nitems * sizeof *out->items);
    d->nitems = 0;
}

/* The "events" array: entries into d->items, past max_events validated only. */
static int jevents(rd_ctx *c, size_t max_events, bool *too_many) {
    int rc = enter(c, c->p);
    if (rc) return rc;
    c->d->nitems = 0;
    *too_many = false;
    c->p++;
    ws(c);
    if ((rc = expect_more(c, "a value or ']'"))) return rc;
    bool more = *c->p != ']';
    if (!more) c->p++;
    for (size_t i = 0; more; i++) {
        set_index(c, i);
        if (i >= max_events) *too_many = true;
        if (*too_many) {
            if ((rc = jvalue(c, NULL, NULL))) return rc;
        } else {
            const char *why;
            rowdec_push e;
            if ((rc = jenvelope(c, "body", false, &e, &why))) return rc;
            *item_add(c->d) = e;
        }
        if ((rc = jnext(c, ']', &more))) return rc;
    }
    leave(c);
    return 0;
}

int rowdec_json_push_many(rowdec *d, const char *p, size_t n, size_t max_events, rowdec_batch *out, char *err,
                          size_t errlen) {
    rd_ctx c;
    ctx_init(&c, d, p, n, err, errlen);
    out->items = NULL;
    out->n = 0;
    bool have = false, too_many = false;
    int rc = jstart(&c);
    if (rc) return rc;
    if (*c.p != '{') {
        if ((rc = jvalue(&c, NULL, NULL)) || (rc = jend(&c))) return rc;
        return fail(&c, ROWDEC_EENVELOPE, c.base, "the body is not a JSON object");
    }
    if ((rc = enter(&c, c.p))) return rc;
    c.p++;
    ws(&c);
    if ((rc = expect_more(&c, "a key or '}'"))) return rc;
    bool more = *c.p != '}';
    if (!more) c.p++;
    while (more) {
        const char *k;
        size_t kl;
        if ((rc = jkey(&c, &k, &kl))) return rc;
        set_key(&c, k, kl);
        if (key_is(k, kl, "events", 6) && *c.p == '[') {
            if ((rc = jevents(&c, max_events, &too_many))) return rc;
            have = true;
        } else {
            if ((rc = jvalue(&c, NULL, NULL))) return rc;
            if (key_is(k, kl, "events", 6)) have = false;
        }
        if ((rc = jnext(&c, '}', &more))) return rc;
    }
    leave(&c);
    if ((rc = jend(&c))) return rc;
    if (!have) return fail(&c, ROWDEC_EENVELOPE, c.base, "the body needs an array member \"events\"");
    if (too_many)
        return fail(&c, ROWDEC_ETOOMANY, c.base, "more than %zu events in one batch", max_events);
    items_finish(d, out);
    return 0;
}

/* ==== MessagePack ======================================================================= */

typedef enum mp_kind { MK_NIL, MK_BOOL, MK_INT, MK_UINT, MK_FLOAT, MK_STR, MK_ARRAY, MK_MAP } mp_kind;

typedef struct mp_item {
    mp_kind kind;
    const unsigned char *at;    /* the type byte */
    union { bool b; int64_t i; uint64_t u; double f; } v;
    const unsigned char *s;     /* string body */
    size_t n;                   /* string length or element count (pairs for maps) */
} mp_item;

static inline uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

static int mp_truncated(rd_ctx *c, const unsigned char *at) {
    return fail(c, ROWDEC_ESYNTAX, at, "truncated msgpack");
}

/* Read the header of the next value; c->p moves past it (past the body for strings). */
static int mp_next(rd_ctx *c, mp_item *it) {
    const unsigned char *p = c->p, *end = c->end;
    it->at = p;
    if (p >= end) return mp_truncated(c, p);
    unsigned char t = *p++;
    size_t hn = 0;
    if (t <= 0x7f) {
        it->kind = MK_INT;
        it->v.i = t;
        c->p = p;
        return 0;
    }
    if (t >= 0xe0) {
        it->kind = MK_INT;
        it->v.i = (int8_t)t;
        c->p = p;
        return 0;
    }
    if (t >= 0xa0 && t <= 0xbf) {
        it->n = t & 31;
        goto str;
    }
    if (t >= 0x90 && t <= 0x9f) {
        it->kind = MK_ARRAY;
        it->n = t & 15;
        goto container;
    }
    if (t >= 0x80 && t <= 0x8f) {
        it->kind = MK_MAP;
        it->n = t & 15;
        goto container;
    }
    switch (t) {
    case 0xc0: it->kind = MK_NIL; c->p = p; return 0;
    case 0xc2:
    case 0xc3: it->kind = MK_BOOL; it->v.b = t == 0xc3; c->p = p; return 0;
    case 0xcc: hn = 1; goto uint;
    case 0xcd: hn = 2; goto uint;
    case 0xce: hn = 4; goto uint;
    case 0xcf: hn = 8; goto uint;
    case 0xd0: hn = 1; goto sint;
    case 0xd1: hn = 2; goto sint;
    case 0xd2: hn = 4; goto sint;
    case 0xd3: hn = 8; goto sint;
    case 0xca:
    case 0xcb: {
        hn = t == 0xca ? 4 : 8;
        if ((size_t)(end - p) < hn) return mp_truncated(c, it->at);
        uint64_t bits = be(p, (int)hn);
        if (hn == 4) {
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, 4);
            it->v.f = f;
        } else {
            memcpy(&it->v.f, &bits, 8);
        }
        if (!isfinite(it->v.f))
            return fail(c, ROWDEC_ESYNTAX, it->at, "msgpack float is NaN or infinite (JSON cannot carry it)");
        it->kind = MK_FLOAT;
        c->p = p + hn;
        return 0;
    }
    case 0xd9: hn = 1; goto strn;
    case 0xda: hn = 2; goto strn;
    case 0xdb: hn = 4; goto strn;
    case 0xdc: it->kind = MK_ARRAY; hn = 2; goto contn;
    case 0xdd: it->kind = MK_ARRAY; hn = 4; goto contn;
    case 0xde: it->kind = MK_MAP; hn = 2; goto contn;
    case 0xdf: it->kind = MK_MAP; hn = 4; goto contn;
    case 0xc4: case 0xc5: case 0xc6: case 0xc7: case 0xc8: case 0xc9:
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        return fail(c, ROWDEC_ESYNTAX, it->at, "msgpack bin/ext values are not supported");
    default:
        return fail(c, ROWDEC_ESYNTAX, it->at, "invalid msgpack type byte 0x%02x", t);
    }
uint:
    if ((size_t)(end - p) < hn) return mp_truncated(c, it->at);
    it->v.u = be(p, (int)hn);
    it->kind = MK_UINT;
    if (it->v.u <= (uint64_t)INT64_MAX) {
        it->kind = MK_INT;
        it->v.i = (int64_t)it->v.u;
    }
    c->p = p + hn;
    return 0;
sint:
    if ((size_t)(end - p) < hn) return mp_truncated(c, it->at);
    {
        uint64_t u = be(p, (int)hn);
        int64_t i;
        if (hn == 1) i = (int8_t)(uint8_t)u;
        else if (hn == 2) i = (int16_t)(uint16_t)u;
        else if (hn == 4) i = (int32_t)(uint32_t)u;
        else i = (int64_t)u;     /* two's complement (the implementations we build with) */
        it->kind = MK_INT;
        it->v.i = i;
    }
    c->p = p + hn;
    return 0;
strn:
    if ((size_t)(end - p) < hn) return mp_truncated(c, it->at);
    it->n = (size_t)be(p, (int)hn);
    p += hn;
str:
    it->kind = MK_STR;
    if ((size_t)(end - p) < it->n) return mp_truncated(c, it->at);
    it->s = p;
    c->p = p + it->n;
    return 0;
contn:
    if ((size_t)(end - p) < hn) return mp_truncated(c, it->at);
    it->n = (size_t)be(p, (int)hn);
    p += hn;
container:
    c->p = p;
    if (it->n > (size_t)(end - p) / (it->kind == MK_MAP ? 2 : 1))
        return fail(c, ROWDEC_ESYNTAX, it->at, "msgpack %s declares %zu %s but only %zu bytes follow",
                    it->kind == MK_MAP ? "map" : "array", it->n, it->kind == MK_MAP ? "pairs" : "elements",
                    (size_t)(end - p));
    return 0;
}

static int mp_string(rd_ctx *c, const mp_item *it) {
    if (it->n > c->d->limits.max_string)
        return fail(c, ROWDEC_ESIZE, it->at, "string of %zu bytes is over the limit of %zu", it->n,
                    c->d->limits.max_string);
    return utf8_check(c, it->s, it->n, false, "a string");
}

/* A map key: a string, valid UTF-8, no NUL, within the key limit. A fixstr (every field
 * name up to 31 bytes) is read here; anything else, or a fixstr that is cut short or over
 * the limit, goes through mp_next (which reports it). */
static int mp_key(rd_ctx *c, const char **k, size_t *kl) {
    const unsigned char *p = c->p;
    if (p < c->end && (*p & 0xe0u) == 0xa0u) {
        size_t n = *p & 31u;
        if ((size_t)(c->end - p) - 1 >= n && n <= c->d->limits.max_key) {
            int rc = utf8_check(c, p + 1, n, true, "a key");
            if (rc) return rc;
            *k = (const char *)(p + 1);
            *kl = n;
            c->p = p + 1 + n;
            return 0;
        }
    }
    mp_item it;
    int rc = mp_next(c, &it);
    if (rc) return rc;
    if (it.kind != MK_STR) return fail(c, ROWDEC_ESYNTAX, it.at, "msgpack map key is not a string");
    if (it.n > c->d->limits.max_key)
        return fail(c, ROWDEC_ESIZE, it.at, "key of %zu bytes is over the limit of %zu", it.n, c->d->limits.max_key);
    if ((rc = utf8_check(c, it.s, it.n, true, "a key"))) return rc;
    *k = (const char *)it.s;
    *kl = it.n;
    return 0;
}

static const char *mp_kind_text(const mp_item *it) {
    switch (it->kind) {
    case MK_NIL: return "null";
    case MK_BOOL: return "boolean";
    case MK_INT: return "integer";
    case MK_UINT:
    case MK_FLOAT: return "number";
    case MK_STR: return "string";
    case MK_ARRAY: return "array";
    case MK_MAP: return "object";
    }
    return "?";
}

/* The rest of a value whose header is `it`: validate, and build a jansson tree if out. */
static int mp_value(rd_ctx *c, const mp_item *it, json_t **out) {
    int rc;
    switch (it->kind) {
    case MK_NIL: if (out) *out = json_null(); return 0;
    case MK_BOOL: if (out) *out = json_boolean(it->v.b); return 0;
    case MK_INT: if (out) *out = json_integer((json_int_t)it->v.i); return 0;
    case MK_UINT: if (out) *out = json_real((double)it->v.u); return 0;
    case MK_FLOAT: if (out) *out = json_real(it->v.f); return 0;
    case MK_STR:
        if ((rc = mp_string(c, it))) return rc;
        if (out) *out = json_stringn_nocheck((const char *)it->s, it->n);
        return 0;
    case MK_ARRAY:
    case MK_MAP: break;
    }
    bool map = it->kind == MK_MAP;
    if ((rc = enter(c, it->at))) return rc;
    json_t *j = out ? (map ? json_object() : json_array()) : NULL;
    for (size_t i = 0; i < it->n; i++) {
        const char *k = NULL;
        size_t kl = 0;
        if (map) {
            if ((rc = mp_key(c, &k, &kl))) goto err;
            set_key(c, k, kl);
        } else {
            set_index(c, i);
        }
        mp_item e;
        json_t *child = NULL;
        if ((rc = mp_next(c, &e)) || (rc = mp_value(c, &e, j ? &child : NULL))) goto err;
        if (j) {
            if (map) json_object_setn_new_nocheck(j, k, kl, child);
            else json_array_append_new(j, child);
        }
    }
    leave(c);
    if (out) *out = j;
    return 0;
err:
    json_decref(j);
    return rc;
}

/* One field value: scalars straight to bv_value, arrays and maps as jansson trees. The
 * common scalars (a fixstr within the limits, a positive fixint, a finite float 64) are
 * read here; the rest, and any that is cut short, through mp_next. */
static int mp_field(rd_ctx *c, bv_value *v) {
    const unsigned char *p = c->p;
    size_t avail = (size_t)(c->end - p);
    if (avail) {
        unsigned char t = *p;
        if ((t & 0xe0u) == 0xa0u) {
            size_t n = t & 31u;
            if (avail - 1 >= n && n <= c->d->limits.max_string) {
                int rc = utf8_check(c, p + 1, n, false, "a string");
                if (rc) return rc;
                *v = bv_str((const char *)(p + 1), n);
                c->p = p + 1 + n;
                return 0;
            }
        } else if (t <= 0x7fu) {
            *v = bv_i64(t);
            c->p = p + 1;
            return 0;
        } else if (t == 0xcbu && avail >= 9) {
            uint64_t bits = be(p + 1, 8);
            double f;
            memcpy(&f, &bits, sizeof f);
            if (isfinite(f)) {
                *v = bv_f64(f);
                c->p = p + 9;
                return 0;
            }
        }
    }
    mp_item it;
    int rc = mp_next(c, &it);
    if (rc) return rc;
    switch (it.kind) {
    case MK_INT: *v = bv_i64(it.v.i); return 0;
    case MK_STR:
        if ((rc = mp_string(c, &it))) return rc;
        *v = bv_str((const char *)it.s, it.n);
        return 0;
    case MK_FLOAT: *v = bv_f64(it.v.f); return 0;
    case MK_UINT: *v = bv_f64((double)it.v.u); return 0;
    case MK_NIL: *v = bv_null(); return 0;
    case MK_BOOL: *v = bv_bool(it.v.b); return 0;
    case MK_ARRAY:
    case MK_MAP: break;
    }
    json_t *j = NULL;
    bool cc = c->cc;
    if ((rc = mp_value(c, &it, &j))) return rc;
    keep_tree(c->d, j);
    c->cc = cc || bv_json_has_control_char(j);   /* the tree keeps the last of a repeated key */
    v->kind = BV_JSON;
    v->u.j = j;
    return 0;
}

/* The data map (header already read) into a row. */
static int mp_row(rd_ctx *c, const mp_item *it, bv_row *row) {
    int rc = enter(c, it->at);
    if (rc) return rc;
    row_begin(c->d);
    c->repeated = false;
    for (size_t i = 0; i < it->n; i++) {
        const char *k;
        size_t kl;
        const unsigned char *at = c->p;
        bv_value v;
        if ((rc = mp_key(c, &k, &kl))) return rc;
        set_key(c, k, kl);
        if ((rc = mp_field(c, &v)) || (rc = row_put(c, at, k, kl, v))) return rc;
    }
    leave(c);
    row_finish(c->d, row);
    if (c->repeated) c->cc = row_has_cc(row);
    return 0;
}

static int mp_data(rd_ctx *c, rowdec_push *out) {
    mp_item it;
    int rc = mp_next(c, &it);
    if (rc) return rc;
    c->cc = false;
    out->data_kind = mp_kind_text(&it);
    out->data_is_object = it.kind == MK_MAP;
    out->row.n = 0;
    out->row.fields = NULL;
    if (it.kind == MK_MAP) return mp_row(c, &it, &out->row);
    return mp_value(c, &it, NULL);
}

/* A push envelope map. strict: exactly the keys "event" and "body" (a single OP_PUSH);
 * else other keys are ignored (OP_PUSH_MANY entries, as over JSON). Hard errors are
 * returned; an unusable envelope leaves out->event NULL with *why set. */
static int mp_envelope(rd_ctx *c, bool strict, rowdec_push *out, const char **why) {
    mp_item it;
    push_clear(out);
    *why = NULL;
    int rc = mp_next(c, &it);
    if (rc) return rc;
    if (it.kind != MK_MAP) {
        *why = "the push body is not a msgpack map";
        return mp_value(c, &it, NULL);
    }
    if ((rc = enter(c, it.at))) return rc;
    bool have_event = false, have_body = false, other = false, ev_cc = false, data_cc = false;
    for (size_t i = 0; i < it.n; i++) {
        const char *k;
        size_t kl;
        if ((rc = mp_key(c, &k, &kl))) return rc;
        set_key(c, k, kl);
        if (key_is(k, kl, "event", 5)) {
            mp_item e;
            if ((rc = mp_next(c, &e))) return rc;
            have_event = true;
            out->event = NULL;
            c->cc = false;
            if ((rc = mp_value(c, &e, NULL))) return rc;
            if (e.kind == MK_STR) {
                out->event = (const char *)e.s;
                out->event_len = e.n;
                ev_cc = c->cc;
            }
        } else if (key_is(k, kl, "body", 4)) {
            if ((rc = mp_data(c, out))) return rc;
            data_cc = c->cc;
            have_body = true;
        } else {
            mp_item e;
            other = true;
            if ((rc = mp_next(c, &e)) || (rc = mp_value(c, &e, NULL))) return rc;
        }
    }
    leave(c);
    out->has_control_char = ev_cc || data_cc;
    if (!have_event || !out->event) *why = "the push body needs a string member \"event\"";
    else if (!have_body) *why = "the push body needs a member \"body\"";
    else if (strict && other) *why = "the push body must be a map of exactly the keys \"event\" and \"body\"";
    if (*why) out->event = NULL;
    return 0;
}

static int mp_end(rd_ctx *c) {
    if (c->p != c->end)
        return fail(c, ROWDEC_ESYNTAX, c->p, "trailing bytes after the msgpack value (%zu of %zu used)",
                    (size_t)(c->p - c->base), (size_t)(c->end - c->base));
    return 0;
}

int rowdec_msgpack_push(rowdec *d, const char *p, size_t n, rowdec_push *out, char *err, size_t errlen) {
    rd_ctx c;
    const char *why = NULL;
    ctx_init(&c, d, p, n, err, errlen);
    int rc = mp_envelope(&c, true, out, &why);
    if (!rc) rc = mp_end(&c);
    if (rc) push_clear(out);
    return envelope_result(&c, rc, why);
}

int rowdec_msgpack_push_many(rowdec *d, const char *p, size_t n, size_t max_events, rowdec_batch *out, char *err,
                             size_t errlen) {
    rd_ctx c;
    ctx_init(&c, d, p, n, err, errlen);
    out->items = NULL;
    out->n = 0;
    mp_item root;
    bool have = false, too_many = false;
    int rc = mp_next(&c, &root);
    if (rc) return rc;
    if (root.kind != MK_MAP) {
        if ((rc = mp_value(&c, &root, NULL)) || (rc = mp_end(&c))) return rc;
        return fail(&c, ROWDEC_EENVELOPE, c.base, "the body is not a msgpack map");
    }
    if ((rc = enter(&c, root.at))) return rc;
    for (size_t i = 0; i < root.n; i++) {
        const char *k;
        size_t kl;
        mp_item e;
        if ((rc = mp_key(&c, &k, &kl))) return rc;
        set_key(&c, k, kl);
        if ((rc = mp_next(&c, &e))) return rc;
        bool events = key_is(k, kl, "events", 6);
        if (!events || e.kind != MK_ARRAY) {
            if ((rc = mp_value(&c, &e, NULL))) return rc;
            if (events) have = false;
            continue;
        }
        if ((rc = enter(&c, e.at))) return rc;
        d->nitems = 0;
        too_many = e.n > max_events;
        for (size_t j = 0; j < e.n; j++) {
            set_index(&c, j);
            if (too_many) {
                mp_item x;
                if ((rc = mp_next(&c, &x)) || (rc = mp_value(&c, &x, NULL))) return rc;
            } else {
                const char *why;
                rowdec_push entry;
                if ((rc = mp_envelope(&c, false, &entry, &why))) return rc;
                *item_add(d) = entry;
            }
        }
        leave(&c);
        have = true;
    }
    leave(&c);
    if ((rc = mp_end(&c))) return rc;
    if (!have) return fail(&c, ROWDEC_EENVELOPE, c.base, "the body needs an array member \"events\"");
    if (too_many) return fail(&c, ROWDEC_ETOOMANY, c.base, "more than %zu events in one batch", max_events);
    items_finish(d, out);
    return 0;
}
