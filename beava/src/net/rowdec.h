/*
 * rowdec.h - push bodies decoded straight into rows: JSON and MessagePack to bv_row with
 * no intermediate tree. This is the push hot path; jansson and msgpack-c stay off it.
 *
 * What it reads
 *   rowdec_msgpack_push       TCP OP_PUSH / OP_PUSH_SYNC, content type msgpack: a map of
 *                             exactly the two keys "event" (str) and "body" (any value).
 *   rowdec_json_push_tcp      TCP OP_PUSH, content type JSON: {"event":E,"body":B}, other
 *                             keys ignored.
 *   rowdec_json_push_http     HTTP POST /push: {"event":E,"data":D}, D absent = {}, other
 *                             keys ignored.
 *   rowdec_json_data          HTTP POST /push/<event>: the bare data value.
 *   rowdec_json_push_many,
 *   rowdec_msgpack_push_many  OP_PUSH_MANY: {"events":[{"event":E,"body":B}, ...]}, other
 *                             keys ignored at both levels (in msgpack too).
 *
 * Values. Fields of the data object become a bv_row in the order sent; a repeated key keeps
 * the last value at the position of its first appearance (what jansson does). JSON integers
 * (no fraction, no exponent) are BV_I64, beyond int64 a syntax error ("too big integer");
 * other numbers are BV_F64, correctly rounded (identical to strtod); strings are BV_STR with
 * escapes decoded; true/false BV_BOOL; null BV_NULL. msgpack ints are BV_I64 (a uint64 above
 * INT64_MAX is BV_F64), floats BV_F64 (NaN and infinities are refused: JSON cannot carry
 * them), str BV_STR, nil, bool; bin and ext are refused. An array or map as a field value is
 * BV_JSON holding a jansson tree built for that value alone (the cold path).
 *
 * Checks, the same on both formats: every string, map key and event name is valid UTF-8
 * (no overlongs, no surrogates, nothing above U+10FFFF); map keys are strings without NUL;
 * nesting is at most ROWDEC_MAX_DEPTH containers counting the envelope; strings, keys and
 * rows are capped by d->limits; a declared msgpack count never exceeds the bytes left
 * (each element needs one); nothing may follow the top-level value but JSON whitespace.
 * JSON follows RFC 8259 the way jansson reads it (no leading zeros, "1." and ".5" refused,
 * \u0000 allowed in values but not keys, lone surrogate escapes refused).
 *
 * Control characters are not errors here: has_control_char reports a Unicode Cc (U+0000-
 * 001F, U+007F, U+0080-009F) in the event name or anywhere in the data (keys and strings at
 * any depth), for the engine to refuse. Ignored envelope members are validated but not
 * inspected for control characters.
 *
 * Memory. A rowdec owns an arena (base/arena.h) holding every field array, decoded
 * (unescaped) string and batch array it hands out, and the jansson trees of nested values,
 * until rowdec_reset() or rowdec_free(). Blocks never move, so pointers stay valid until
 * then. Strings without escapes (all msgpack
 * strings, most JSON ones) and names point straight into the input buffer: the caller keeps
 * the input alive and unchanged as long as it uses the rows. Names and strings are NOT
 * NUL-terminated: use the lengths. A reset keeps the arena's first block (64 KiB), so
 * steady-state decoding of small batches does not call malloc; the scratch arrays (row
 * being built, batch entries, hash index) are reused too. On an error return the
 * arena may hold partial results; they are released by the next reset. Allocation failure
 * aborts, like the rest of the server.
 *
 * Threads: one rowdec per thread; nothing is shared, nothing is global.
 *
 * Return values: ROWDEC_OK or one of the negative codes below; err (may be NULL) then says
 * what and where: a path such as "data.user_id" or "events[3].body.tags[2]" and the input
 * byte offset. Error text is valid UTF-8 (names are cut on character boundaries).
 *
 * What today's transports answer for each (http.c, tcp.c before this decoder):
 *   POST /push         ESYNTAX/EUTF8/EDEPTH/ESIZE -> 400 invalid_json_body (reason = err);
 *                      EENVELOPE -> 400 missing_event_name_in_body
 *   POST /push/<ev>    any error -> 400 invalid_event "event data must be a JSON object: err"
 *   TCP OP_PUSH(_SYNC) any error -> the {"code":"unsupported"} error frame
 *   TCP OP_PUSH_MANY   ETOOMANY -> batch_too_large; any other error -> unsupported; an
 *                      entry with event == NULL -> {"code":"unsupported"} in its ack slot
 *   data_is_object false -> the engine's 400 invalid_event "... got <data_kind>";
 *   has_control_char -> the engine's 400 control_character_in_string.
 */
#ifndef BEAVA_ROWDEC_H
#define BEAVA_ROWDEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "value.h"

#define ROWDEC_MAX_DEPTH 64                     /* nested containers, envelope included */
#define ROWDEC_MAX_STRING_BYTES (4u << 20)      /* default limits.max_string (the frame cap) */
#define ROWDEC_MAX_KEY_BYTES 1024               /* default limits.max_key */
#define ROWDEC_MAX_FIELDS 65536                 /* default limits.max_fields (distinct, per row) */

enum {
    ROWDEC_OK = 0,
    ROWDEC_ESYNTAX = -1,    /* malformed or truncated input, a number out of range, bin/ext */
    ROWDEC_EUTF8 = -2,      /* invalid UTF-8 in a string, key or event name */
    ROWDEC_EDEPTH = -3,     /* more than ROWDEC_MAX_DEPTH nested containers */
    ROWDEC_ESIZE = -4,      /* a string, key or row over d->limits */
    ROWDEC_EENVELOPE = -5,  /* well-formed, but no usable event name / body / events array */
    ROWDEC_ETOOMANY = -6,   /* push_many: more events than max_events (input is well-formed) */
};

typedef struct rowdec_limits {
    size_t max_string;      /* bytes of one string value as sent (escapes undecoded) */
    size_t max_key;         /* bytes of one map key / field name */
    size_t max_fields;      /* distinct fields of one data object */
} rowdec_limits;

/* The decoder. Fields other than `limits` are private. */
typedef struct rowdec {
    rowdec_limits limits;               /* set by rowdec_init; the caller may change them */
    arena mem;                          /* rows, unescaped strings, batch arrays */
    json_t **trees;                     /* jansson trees handed out, decref'd on reset */
    size_t ntrees, captrees;
    bv_field *scratch;                  /* the row being built (reused) */
    size_t nscratch, capscratch;
    uint64_t name_mask;                 /* bits of the scratch row's field names (rowdec.c name_bit) */
    uint32_t *hidx;                     /* field-name hash index for wide rows (reused) */
    uint64_t hkey[2];                   /* its random SipHash key */
    size_t caphidx;
    struct rowdec_push *items;          /* the push_many entries being built (reused) */
    size_t nitems, capitems;
    char *numbuf;                       /* a long number copied for strtod (reused) */
    size_t capnumbuf;
} rowdec;

typedef struct rowdec_push {
    const char *event;      /* NULL when the envelope has no usable event name */
    size_t event_len;
    bv_row row;             /* the data's fields (cap == 0: the array belongs to the arena) */
    bool data_is_object;    /* false: data was not an object; data_kind names what it was */
    const char *data_kind;  /* "object","array","string","integer","number","boolean","null" */
    bool has_control_char;  /* a Unicode Cc in the event name or anywhere in the data */
} rowdec_push;

typedef struct rowdec_batch {
    rowdec_push *items;     /* owned by the arena; an unusable entry has event == NULL */
    size_t n;
} rowdec_batch;

void rowdec_init(rowdec *d);
/* Release everything handed out since the last reset; keeps one arena block for reuse. */
void rowdec_reset(rowdec *d);
void rowdec_free(rowdec *d);
/* Bytes of arena blocks held now, for metrics and tests. */
size_t rowdec_retained_bytes(const rowdec *d);

/* Single pushes. On ROWDEC_OK *out is filled (out->event is never NULL then); on
 * ROWDEC_EENVELOPE out->event is NULL and err says what is missing. data_is_object is
 * false when the body/data is valid but not an object (the engine answers invalid_event). */
int rowdec_msgpack_push(rowdec *d, const char *p, size_t n, rowdec_push *out, char *err, size_t errlen);
int rowdec_json_push_tcp(rowdec *d, const char *p, size_t n, rowdec_push *out, char *err, size_t errlen);
int rowdec_json_push_http(rowdec *d, const char *p, size_t n, rowdec_push *out, char *err, size_t errlen);
/* The bare data value; out->event stays NULL (the route names the event). */
int rowdec_json_data(rowdec *d, const char *p, size_t n, rowdec_push *out, char *err, size_t errlen);

/* OP_PUSH_MANY. ROWDEC_EENVELOPE when the root is not an object/map with an "events"
 * array; ROWDEC_ETOOMANY when the (well-formed) array holds more than max_events entries;
 * else ROWDEC_OK with one item per entry, in order. Entries that are not an object with a
 * string "event" and a "body" have event == NULL. */
int rowdec_json_push_many(rowdec *d, const char *p, size_t n, size_t max_events, rowdec_batch *out,
                          char *err, size_t errlen);
int rowdec_msgpack_push_many(rowdec *d, const char *p, size_t n, size_t max_events, rowdec_batch *out,
                             char *err, size_t errlen);

#endif
