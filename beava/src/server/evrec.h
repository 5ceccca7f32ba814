/*
 * evrec.h - the WAL payload of one event: a compact binary row, so the push path never
 * formats numbers as text (json_dumps of every event cost a quarter of the push time).
 *
 * Layout (little-endian): u64 arrival ms, u32 event-name length, name, u32 field count,
 * then per field: u16 name length, name, u8 tag, value. Tags: 0 null, 1 false, 2 true,
 * 3 i64 (8 bytes), 4 f64 (8 bytes, IEEE bits), 5 string (u32 length + bytes),
 * 6 list/map (u32 length + compact JSON text). Field order is the pushed order.
 */
#ifndef BEAVA_EVREC_H
#define BEAVA_EVREC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "jsonw.h"

/* Append the record of (now, event, data object) to out. */
void evrec_encode(int64_t now, const char *event, size_t event_len, const json_t *data, bv_buf *out);

/* Decode: sets now, the event name (pointing into p) and a new JSON object (caller
 * decrefs). Returns 0, or -1 with a reason when the bytes are malformed (bounds are
 * checked everywhere; nothing is read past len). */
int evrec_decode(const void *p, size_t len, int64_t *now, const char **event, size_t *event_len, json_t **data,
                 char *reason, size_t rlen);

#endif
