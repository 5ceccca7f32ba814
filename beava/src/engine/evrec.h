/*
 * evrec.h - the WAL payload of one event: a compact binary row, encoded from the
 * validated row on the push path and decoded back into a row by replay and by cluster
 * apply (no JSON either way).
 *
 * Layout (little-endian, base/codec.h): u64 arrival ms, u32 event word, the event name,
 * then one of two forms, told apart by bit 31 of the event word (its low 31 bits are the
 * name's length):
 *  - by name (bit clear): u32 field count, then per field: u16 name length, name, value.
 *  - by position (bit set): u32 fingerprint and u32 field count k of the event's schema
 *    when the record was written (bv_schema_fingerprint), u32 field count, then per
 *    field: u8 ref, value. A ref below EVREC_REF_NAME is the field's position in that
 *    schema (the registry version the push was validated on). Replay rebuilds the exact
 *    registry history, so it decodes against that very schema; cluster apply may decode
 *    against a later version, whose schema widened in place keeps the first k fields
 *    where they were (registry widen_event appends). A record decodes when the first k
 *    fields of the decoder's schema have its fingerprint; against any other schema it is
 *    an error, never a row with misplaced values. EVREC_REF_NAME: a u16 name length and
 *    the name follow (an optional field outside the schema's list, or a position past
 *    EVREC_REF_NAME).
 *    Field names are most of an event's bytes (39 % of a fraud-team record), and they
 *    are copied into the log on every push.
 * value: u8 tag, then 0 null, 1 false, 2 true, 3 i64 (8 bytes), 4 f64 (8 bytes, IEEE
 * bits), 5 string (u32 length + bytes), 6 list/map (u32 length + compact JSON text),
 * 7 short string (u8 length + bytes). Field order is the pushed order.
 *
 * Records by name are what builds before WAL format version 2 wrote (storage/wal.h); they
 * are still read.
 */
#ifndef BEAVA_EVREC_H
#define BEAVA_EVREC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "arena.h"
#include "jsonw.h"
#include "value.h"

#define EVREC_REF_NAME 0xffu        /* a ref naming its field (see above) */
#define EVREC_BY_POSITION 0x80000000u

/* How a record names its fields: by schema position where field[i] >= 0 (field i of
 * the row is schema field field[i] of the event, whose schema has nschema fields and
 * this fingerprint), by name where it is negative. */
typedef struct evrec_pos {
    uint32_t fingerprint;
    uint32_t nschema;
    const int32_t *field;
} evrec_pos;

/* Append the record of (now, event, row) to out. pos NULL: every field by name. */
void evrec_encode(int64_t now, const char *event, size_t event_len, const bv_row *row, const evrec_pos *pos,
                  bv_buf *out);

/* The schema a record by position is decoded against: its n field names (NUL-
 * terminated) in position order, their lengths (NULL: strlen), and prefix_fp[k], the
 * fingerprint of its first k fields for k = 0 .. n. */
typedef struct evrec_schema {
    char *const *names;
    const uint32_t *lens;
    size_t n;
    const uint32_t *prefix_fp;
} evrec_schema;

/* Find event (name, len) for the decoder: false when there is none. */
typedef bool (*evrec_schema_fn)(void *ctx, const char *event, size_t len, evrec_schema *out);

/* A decoded record. Names and strings point into the payload (names of fields by
 * position: into the schema, which must outlive the record's use); the field array
 * comes from the arena; list/map values are jansson values the record owns
 * (evrec_release). */
typedef struct evrec {
    int64_t now;
    const char *event;
    size_t event_len;
    bv_row row;
    json_t **json;
    size_t njson;
} evrec;

/* Decode. schema (NULL: records by position are refused) is asked once per record by
 * position. Returns 0, or -1 with a reason when the bytes are malformed or do not fit
 * the schema (bounds are checked everywhere; nothing is read past len; nothing is left
 * to release). */
int evrec_decode(const void *p, size_t len, arena *a, evrec_schema_fn schema, void *ctx, evrec *out,
                 char *reason, size_t rlen);
void evrec_release(evrec *r);

#endif
