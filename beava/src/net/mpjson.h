/*
 * mpjson.h - conversions between MessagePack (msgpack-c) and jansson values, for the TCP
 * listener's content type 0x02. msgpack-c stays inside mpjson.c.
 *
 * Decoding maps: keys must be strings (else an error); integers become JSON integers
 * (unsigned beyond INT64_MAX become reals, as the reference does for JSON); floats
 * become reals; bin/ext are refused. Nesting is capped at MPJSON_MAX_DEPTH.
 */
#ifndef BEAVA_MPJSON_H
#define BEAVA_MPJSON_H

#include <jansson.h>
#include <stddef.h>
#include "jsonw.h"

#define MPJSON_MAX_DEPTH 64

/* Decode exactly one MessagePack value occupying all of buf. Returns a new reference,
 * or NULL with a message in err. */
json_t *mpjson_decode(const char *buf, size_t len, char *err, size_t errlen);

/* Encode a JSON value as MessagePack (string-keyed maps, keys in the object's order),
 * appending to out. */
void mpjson_encode(const json_t *j, bv_buf *out);

#endif
