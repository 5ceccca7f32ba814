/*
 * evrec.h - the WAL payload of one event: a compact binary row, encoded from the
 * validated row on the push path and decoded back into a row by replay (no JSON either
 * way).
 *
 * Layout (little-endian, base/codec.h): u64 arrival ms, u32 event-name length, name,
 * u32 field count, then per field: u16 name length, name, u8 tag, value. Tags: 0 null,
 * 1 false, 2 true, 3 i64 (8 bytes), 4 f64 (8 bytes, IEEE bits), 5 string (u32 length +
 * bytes), 6 list/map (u32 length + compact JSON text). Field order is the pushed order.
 */
#ifndef BEAVA_EVREC_H
#define BEAVA_EVREC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "arena.h"
#include "jsonw.h"
#include "value.h"

/* Append the record of (now, event, row) to out. */
void evrec_encode(int64_t now, const char *event, size_t event_len, const bv_row *row, bv_buf *out);

/* A decoded record. Names and strings point into the payload; the field array comes
 * from the arena; list/map values are jansson values the record owns (evrec_release). */
typedef struct evrec {
    int64_t now;
    const char *event;
    size_t event_len;
    bv_row row;
    json_t **json;
    size_t njson;
} evrec;

/* Decode. Returns 0, or -1 with a reason when the bytes are malformed (bounds are
 * checked everywhere; nothing is read past len; nothing is left to release). */
int evrec_decode(const void *p, size_t len, arena *a, evrec *out, char *reason, size_t rlen);
void evrec_release(evrec *r);

#endif
