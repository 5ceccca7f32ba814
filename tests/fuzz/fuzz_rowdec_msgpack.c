/*
 * fuzz_rowdec_msgpack.c - libFuzzer target for the msgpack push decoders (rowdec.c).
 *
 * Arbitrary bytes go through rowdec_msgpack_push and rowdec_msgpack_push_many on an
 * exact-size copy. The reference is today's path, mpjson_decode (msgpack-c to jansson):
 * - when both accept, the envelope rules (a single push: exactly "event" and "body") and
 *   the decoded event, row, data kind and control flag match the reference tree;
 * - when the reference accepts and rowdec refuses, the reason is one msgpack-c does not
 *   check: invalid UTF-8 (or a cap);
 * - every error text is valid UTF-8.
 * The reference gives up past msgpack-c's own nesting limit (about 32 containers), so a
 * rowdec success without a reference is not a finding. UBSan reports are fatal.
 *
 * Run longer by hand: build-test/tests/fuzz/fuzz_rowdec_msgpack -max_total_time=600
 *                     tests/fuzz/corpus/fuzz_rowdec_msgpack
 */
#include <stdint.h>
#include <stdlib.h>

#include "rowdec_check.h"
#include "server/mpjson.h"

#define FZ_BATCH_CAP 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    char rerr[256], err[256];
    json_t *ref = mpjson_decode(buf, size, rerr, sizeof rerr);
    rowdec d;
    rowdec_init(&d);
    rowdec_push p;

    int rc = rowdec_msgpack_push(&d, buf, size, &p, err, sizeof err);
    if (rc) fz_check_err(err);
    if (ref && rc != ROWDEC_OK && rc != ROWDEC_EENVELOPE)
        CHECK(rc == ROWDEC_EUTF8 || rc == ROWDEC_ESIZE || rc == ROWDEC_EDEPTH);
    if (ref && (rc == ROWDEC_OK || rc == ROWDEC_EENVELOPE)) {
        const json_t *ev = json_is_object(ref) ? json_object_get(ref, "event") : NULL;
        const json_t *body = json_is_object(ref) ? json_object_get(ref, "body") : NULL;
        bool usable = json_is_string(ev) && body && json_object_size(ref) == 2;
        CHECK(usable == (rc == ROWDEC_OK));
        if (usable) fz_check_push(&p, ev, body);
        else CHECK(p.event == NULL);
    }

    rowdec_batch b;
    rc = rowdec_msgpack_push_many(&d, buf, size, FZ_BATCH_CAP, &b, err, sizeof err);
    if (rc) fz_check_err(err);
    if (ref && rc != ROWDEC_EUTF8 && rc != ROWDEC_ESIZE && rc != ROWDEC_EDEPTH) {
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
