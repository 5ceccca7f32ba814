/*
 * fuzz_evrec.c - libFuzzer target for the WAL event record decoder (engine/evrec.c).
 *
 * Arbitrary bytes (an exact-size copy, so a read past the end is an ASan report) are
 * decoded against a fixed registry: event "Txn" with a five-field schema (a record
 * written for its first k fields decodes too, as after widening), every other event
 * name unknown. Invariants (abort() otherwise):
 * - a failure leaves nothing to release and says why (a non-empty reason);
 * - a decoded record's fields by position carry the schema's names;
 * - a decoded record encodes again, by name and by position (each field at its name's
 *   schema position, the rest by name), and both decode to the same event, arrival time
 *   and row (names, kinds, values; lists/maps by json_equal);
 * - a decode against a schema whose every prefix has another fingerprint fails for
 *   every record by position.
 * UBSan reports are fatal (-fno-sanitize-recover=all), leaks are reported by ASan.
 *
 * Run longer by hand: build-test/tests/fuzz/fuzz_evrec -max_total_time=600 tests/fuzz/corpus/fuzz_evrec
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "evrec.h"

#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "fuzz_evrec: check failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                              \
        }                                                                         \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *const NAMES[] = { "event_time", "user_id", "amount", "tags", "ok" };
#define NNAMES (sizeof NAMES / sizeof NAMES[0])

typedef struct fz_reg {
    uint32_t prefix_fp[NNAMES + 1];   /* of the first k names, k = 0 .. NNAMES */
} fz_reg;

static bool fz_schema(void *ctx, const char *event, size_t len, evrec_schema *out) {
    const fz_reg *r = ctx;
    if (len != 3 || memcmp(event, "Txn", 3) != 0) return false;
    *out = (evrec_schema){ NAMES, NULL, NNAMES, r->prefix_fp };
    return true;
}

static bool same_value(const bv_value *a, const bv_value *b) {
    if (a->kind != b->kind) return false;
    switch (a->kind) {
    case BV_NULL: return true;
    case BV_BOOL: return a->u.b == b->u.b;
    case BV_I64: return a->u.i == b->u.i;
    case BV_F64: return codec_f64_bits(a->u.f) == codec_f64_bits(b->u.f);
    case BV_STR: return a->u.s.len == b->u.s.len && (a->u.s.len == 0 || memcmp(a->u.s.ptr, b->u.s.ptr, a->u.s.len) == 0);
    case BV_JSON: return json_equal(a->u.j, b->u.j);
    }
    return false;
}

static void check_same(const evrec *a, const evrec *b) {
    CHECK(a->now == b->now);
    CHECK(a->event_len == b->event_len && (a->event_len == 0 || memcmp(a->event, b->event, a->event_len) == 0));
    CHECK(a->row.n == b->row.n);
    for (size_t i = 0; i < a->row.n; i++) {
        const bv_field *x = &a->row.fields[i], *y = &b->row.fields[i];
        /* a name longer than the record form holds is cut on encode (never in a valid row) */
        CHECK(x->name_len == y->name_len && (x->name_len == 0 || memcmp(x->name, y->name, x->name_len) == 0));
        CHECK(same_value(&x->value, &y->value));
    }
}

static void round_trip(const evrec *r, const evrec_pos *pos, fz_reg *reg) {
    bv_buf b;
    bv_buf_init(&b);
    evrec_encode(r->now, r->event, r->event_len, &r->row, pos, &b);
    arena a;
    arena_init(&a);
    evrec back;
    char why[256];
    int rc = evrec_decode(b.data, b.len, &a, fz_schema, reg, &back, why, sizeof why);
    /* by position: only event "Txn" resolves; by name any event decodes */
    if (pos && !(r->event_len == 3 && memcmp(r->event, "Txn", 3) == 0)) {
        CHECK(rc == -1 && why[0]);
    } else {
        CHECK(rc == 0);
        check_same(r, &back);
        evrec_release(&back);
    }
    arena_free(&a);
    bv_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    static const bv_wtype TYPES[NNAMES] = { WT_I64, WT_STR, WT_F64, WT_JSON, WT_BOOL };
    fz_reg reg = { { 0 } };
    for (size_t i = 0; i < NNAMES; i++)
        reg.prefix_fp[i + 1] = bv_schema_fingerprint_extend(reg.prefix_fp[i], NAMES[i], TYPES[i]);

    arena a;
    arena_init(&a);
    evrec r;
    char why[256];
    why[0] = 0;
    int rc = evrec_decode(buf, size, &a, fz_schema, &reg, &r, why, sizeof why);
    if (rc != 0) {
        CHECK(why[0] != 0);
        CHECK(r.njson == 0);
    } else {
        bool by_pos = size >= 12 && (codec_get32(buf + 8) & EVREC_BY_POSITION);
        for (size_t i = 0; i < r.row.n && by_pos; i++) {
            bool from_schema = false;
            for (size_t j = 0; j < NNAMES; j++) from_schema |= r.row.fields[i].name == NAMES[j];
            if (from_schema) CHECK(strlen(r.row.fields[i].name) == r.row.fields[i].name_len);
        }
        round_trip(&r, NULL, &reg);
        int32_t *fpos = arena_alloc(&a, (r.row.n ? r.row.n : 1) * sizeof *fpos);
        for (size_t i = 0; i < r.row.n; i++) {
            fpos[i] = -1;
            for (size_t j = 0; j < NNAMES; j++)
                if (r.row.fields[i].name_len == strlen(NAMES[j]) &&
                    memcmp(r.row.fields[i].name, NAMES[j], r.row.fields[i].name_len) == 0)
                    fpos[i] = (int32_t)j;
        }
        evrec_pos pos = { reg.prefix_fp[NNAMES], NNAMES, fpos };
        round_trip(&r, &pos, &reg);
        /* another schema of the event: every record by position is refused */
        bv_buf b;
        bv_buf_init(&b);
        evrec_encode(r.now, r.event, r.event_len, &r.row, &pos, &b);
        fz_reg other = reg;
        for (size_t i = 0; i <= NNAMES; i++) other.prefix_fp[i] ^= 1u;
        evrec again;
        CHECK(evrec_decode(b.data, b.len, &a, fz_schema, &other, &again, why, sizeof why) == -1);
        bv_buf_free(&b);
        evrec_release(&r);
    }
    arena_free(&a);
    free(buf);
    return 0;
}
