/*
 * fuzz_rowdec_json.c - libFuzzer target for the JSON push decoders (rowdec.c).
 *
 * Arbitrary bytes go through every JSON entry point (HTTP envelope, TCP envelope, bare data,
 * OP_PUSH_MANY) on an exact-size copy, so a read past the end is an ASan report. The same
 * bytes are parsed by jansson (the reference, JSON_DECODE_ANY | JSON_ALLOW_NUL) and:
 * - when rowdec accepts, jansson accepts, and the event, row, data kind and control flag
 *   equal what the jansson tree says (rowdec_check.h);
 * - when jansson accepts, rowdec fails only on its own caps (depth, size);
 * - when rowdec reports a syntax or UTF-8 error, jansson refuses too;
 * - every error text is valid UTF-8.
 * Inputs with a raw NUL byte must be refused (jansson lets one through after a number).
 * UBSan reports are fatal (-fno-sanitize-recover=all), leaks are reported by ASan.
 *
 * Run longer by hand: build-test/tests/fuzz/fuzz_rowdec_json -max_total_time=600
 *                     tests/fuzz/corpus/fuzz_rowdec_json
 */
#include <stdint.h>
#include <stdlib.h>

#include "rowdec_check.h"

#define FZ_BATCH_CAP 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rc_vs_ref(int rc, const json_t *ref, const char *err) {
    if (rc == ROWDEC_ESYNTAX || rc == ROWDEC_EUTF8) CHECK(ref == NULL);
    if (ref) CHECK(rc == ROWDEC_OK || rc == ROWDEC_EENVELOPE || rc == ROWDEC_EDEPTH || rc == ROWDEC_ESIZE ||
                   rc == ROWDEC_ETOOMANY);
    if (!ref) CHECK(rc != ROWDEC_OK && rc != ROWDEC_EENVELOPE && rc != ROWDEC_ETOOMANY);
    if (rc) fz_check_err(err);
}

/* The envelope as today's transports read a jansson tree. */
static void check_envelope(int rc, const rowdec_push *p, const json_t *ref, const char *dkey, bool data_default) {
    if (!ref || rc == ROWDEC_EDEPTH || rc == ROWDEC_ESIZE) return;
    const json_t *ev = json_is_object(ref) ? json_object_get(ref, "event") : NULL;
    const json_t *d = json_is_object(ref) ? json_object_get(ref, dkey) : NULL;
    json_t *empty = NULL;
    if (!d && data_default && json_is_string(ev)) d = empty = json_object();
    if (!json_is_string(ev) || !d) {
        CHECK(rc == ROWDEC_EENVELOPE && p->event == NULL);
        return;
    }
    CHECK(rc == ROWDEC_OK);
    fz_check_push(p, ev, d);
    json_decref(empty);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    json_t *ref = json_loadb(buf, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    /* jansson skips a raw NUL byte right after a number ("[1\0]" parses); a raw NUL is
     * never JSON, and rowdec refuses it: such inputs have no reference. */
    if (ref && memchr(buf, 0, size)) {
        json_decref(ref);
        ref = NULL;
    }
    rowdec d;
    rowdec_init(&d);
    rowdec_push p;
    char err[256];
    int rc;

    rc = rowdec_json_push_http(&d, buf, size, &p, err, sizeof err);
    check_rc_vs_ref(rc, ref, err);
    check_envelope(rc, &p, ref, "data", true);

    rowdec_reset(&d);
    rc = rowdec_json_push_tcp(&d, buf, size, &p, err, sizeof err);
    check_rc_vs_ref(rc, ref, err);
    check_envelope(rc, &p, ref, "body", false);

    /* no reset: results of several decodes live side by side in one arena */
    rc = rowdec_json_data(&d, buf, size, &p, err, sizeof err);
    check_rc_vs_ref(rc, ref, err);
    if (rc == ROWDEC_OK) {
        CHECK(p.event == NULL);
        fz_check_push(&p, NULL, ref);
    }

    rowdec_batch b;
    rc = rowdec_json_push_many(&d, buf, size, FZ_BATCH_CAP, &b, err, sizeof err);
    check_rc_vs_ref(rc, ref, err);
    if (ref && rc != ROWDEC_EDEPTH && rc != ROWDEC_ESIZE) {
        const json_t *evs = json_is_object(ref) ? json_object_get(ref, "events") : NULL;
        if (!json_is_array(evs)) CHECK(rc == ROWDEC_EENVELOPE);
        else if (json_array_size(evs) > FZ_BATCH_CAP) CHECK(rc == ROWDEC_ETOOMANY);
        else {
            CHECK(rc == ROWDEC_OK && b.n == json_array_size(evs));
            for (size_t i = 0; i < b.n; i++) {
                const json_t *e = json_array_get(evs, i);
                const json_t *ev = json_is_object(e) ? json_object_get(e, "event") : NULL;
                const json_t *body = json_is_object(e) ? json_object_get(e, "body") : NULL;
                if (!json_is_string(ev) || !body) CHECK(b.items[i].event == NULL);
                else fz_check_push(&b.items[i], ev, body);
            }
        }
    }
    rowdec_free(&d);
    json_decref(ref);
    free(buf);
    return 0;
}
