/*
 * wire.h - request encoding and reply parsing for the four wires beava-bench speaks:
 * HTTP/1.1 keep-alive (POST /push {"event","data"}, POST /get), beava's framed TCP
 * with a JSON or msgpack payload (OP_PUSH 0x0010, OP_PUSH_MANY 0x0012 for batches,
 * OP_GET 0x0020), and RESP to Redis (the plan of redisplan.h, replies parsed by
 * hiredis' redisReader).
 *
 * The encoders append to the connection's write buffer; the parser consumes one reply
 * at a time from the connection's read buffer. Replies are only classified (ok or not,
 * and for PUSH_MANY how many acks), never fully decoded: the client must stay cheap.
 */
#ifndef BENCH_WIRE_H
#define BENCH_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "gen.h"
#include "pipeline.h"
#include "redisplan.h"

typedef enum { WIRE_HTTP, WIRE_TCP_JSON, WIRE_TCP_MSGPACK, WIRE_REDIS } wire_kind;

#define TCP_OP_PUSH 0x0010
#define TCP_OP_PUSH_MANY 0x0012
#define TCP_OP_GET 0x0020
#define TCP_OP_GET_RESPONSE 0x0023
#define TCP_OP_BATCH_GET 0x0024
#define TCP_OP_ERROR 0xFFFF
#define TCP_CT_JSON 0x01
#define TCP_CT_MSGPACK 0x02
#define TCP_PUSH_MANY_MAX 10000

typedef struct wire_ctx {
    wire_kind kind;
    const pipeline *pl;
    const char *get_table;     /* table for gets (keyed by key_field) */
    const redis_plan *plan;    /* WIRE_REDIS */
} wire_ctx;

/* Per-connection parser state (the redisReader for RESP). */
typedef struct wire_conn {
    void *reader;
} wire_conn;

typedef struct wire_reply {
    bool ok;
    uint32_t acked;   /* events acknowledged by this reply (PUSH_MANY: number of acks) */
} wire_reply;

const char *wire_name(wire_kind k);
/* "http", "tcp-json", "tcp-msgpack", "redis"; returns -1 when unknown. */
int wire_kind_parse(const char *s, wire_kind *out);

void wire_conn_init(const wire_ctx *w, wire_conn *c);
void wire_conn_free(wire_conn *c);

/* Appends a push of n events drawn from g (n > 1: one PUSH_MANY frame on TCP, n
 * events' commands on Redis; HTTP takes n == 1 only). Returns the number of replies
 * the server will send for it. scratch is a caller-owned work buffer. */
unsigned wire_push(const wire_ctx *w, evgen *g, unsigned n, int64_t now_ms, bbuf *out, bbuf *scratch);
/* Appends a get of the key-table row for key id. Returns the replies to expect (1). */
unsigned wire_get(const wire_ctx *w, uint64_t key, bbuf *out, bbuf *scratch);
/* Parses one reply from p[0..n): 1 = a reply (in *rep, *used bytes consumed),
 * 0 = need more bytes (*used may be > 0 for RESP, whose reader buffers internally:
 * call again with the rest, possibly n == 0, until it returns 0), -1 = protocol error. */
int wire_parse(const wire_ctx *w, wire_conn *c, const char *p, size_t n, size_t *used, wire_reply *rep);

/* Frame helpers for control traffic (smoke checks). */
void wire_tcp_frame(bbuf *out, uint16_t op, uint8_t ct, const void *payload, size_t len);

#endif
